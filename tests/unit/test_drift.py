"""Feature drift (keel_core.drift): Evidently's per-feature scores turned into a verdict."""

import numpy as np
import pandas as pd
import pytest

from keel_core import drift
from platform_assets.defs.fraud.transaction_features import FEATURE_NAMES
from tests import fraud

DRIFT_COLUMNS = fraud.plan().drift_columns  # what the fraud use case declares drift compares

POLICY = drift.DriftPolicy(warn_share=0.1, fail_share=0.3, max_rows=3_000, fail_features=())


def payments(n: int, seed: int, amount_scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.gamma(2.0, 10.0, n) for name in FEATURE_NAMES})
    frame["is_night"] = (rng.random(n) < 0.2).astype("int8")
    frame["is_weekend"] = (rng.random(n) < 0.3).astype("int8")
    frame["amount"] *= amount_scale
    frame.insert(0, "transaction_id", np.arange(n) + seed * 1_000_000)
    return frame


@pytest.fixture(scope="module")
def unchanged():
    return drift.measure(payments(2_000, 1), payments(4_000, 2), POLICY, DRIFT_COLUMNS)


@pytest.fixture(scope="module")
def scaled():
    return drift.measure(payments(2_000, 1, amount_scale=3.0), payments(4_000, 2), POLICY, DRIFT_COLUMNS)


def test_the_same_world_does_not_drift(unchanged):
    assert unchanged.drifted == [] and unchanged.level(POLICY) == "ok"


def test_scaled_amounts_drift_and_only_them(scaled):
    assert scaled.drifted == ["amount"]
    (amount,) = [f for f in scaled.features if f.feature == "amount"]
    assert amount.method == "Wasserstein distance (normed)" and amount.score > amount.threshold


def test_every_compared_feature_has_a_score_and_the_weekend_flag_is_not_compared(scaled):
    assert sorted(f.feature for f in scaled.features) == sorted(DRIFT_COLUMNS.names)
    assert "is_weekend" not in DRIFT_COLUMNS.names
    assert scaled.share == pytest.approx(1 / len(DRIFT_COLUMNS.names))


def test_the_report_is_a_self_contained_html_page(scaled):
    assert scaled.html.lstrip().startswith("<!DOCTYPE html>") and "<script" in scaled.html
    assert len(scaled.html) > 1_000_000  # its scripts are inline: it opens offline


def test_a_side_above_the_limit_is_sampled_and_says_so(scaled):
    assert (scaled.reference_rows, scaled.reference_total) == (3_000, 4_000)
    assert (scaled.current_rows, scaled.current_total) == (2_000, 2_000)
    assert scaled.sampled


def test_sampling_picks_the_same_rows_whatever_the_row_order():
    frame = payments(1_000, 3)
    once = drift.sample(frame, 100, seed=0, order_by=("transaction_id",))
    again = drift.sample(frame.sample(frac=1.0, random_state=9), 100, seed=0, order_by=("transaction_id",))
    assert sorted(once["transaction_id"]) == sorted(again["transaction_id"])
    assert drift.sample(frame, 5_000, seed=0) is frame


@pytest.mark.parametrize("share, level", [(0.0, "ok"), (0.1, "warn"), (0.29, "warn"), (0.3, "fail")])
def test_the_level_follows_the_share_of_drifted_features(share, level):
    n = 100
    features = tuple(
        drift.FeatureDrift(f"f{i}", "test", 0.0, 0.1, drifted=i < round(share * n)) for i in range(n)
    )
    result = drift.DriftResult(features, 10, 10, 10, 10, html="")
    assert result.level(POLICY) == level


def test_a_drifting_payment_feature_fails_whatever_the_share(scaled):
    assert scaled.level(POLICY) == "ok"  # 1 of 14 features: under every share threshold
    assert scaled.level(drift.DriftPolicy(fail_features=("amount",))) == "fail"
    assert scaled.level(drift.DriftPolicy(fail_features=("is_night",))) == "ok"


def test_missing_features_and_empty_sides_are_refused_by_name():
    with pytest.raises(ValueError, match=r"current data lacks the features \['amount'\]"):
        drift.measure(payments(10, 1).drop(columns="amount"), payments(10, 2), POLICY, DRIFT_COLUMNS)
    with pytest.raises(ValueError, match="reference data has no rows"):
        drift.measure(payments(10, 1), payments(0, 2), POLICY, DRIFT_COLUMNS)


def test_columns_are_declared_once_each():
    with pytest.raises(ValueError, match="at least one column"):
        drift.DriftColumns(numerical=())
    with pytest.raises(ValueError, match=r"both numerical and categorical: \['x'\]"):
        drift.DriftColumns(numerical=("x",), categorical=("x",))


def test_the_fraud_policy_fails_on_a_drifting_payment_feature(scaled):
    policy = fraud.plan().drift_policy
    assert policy.fail_features == ("amount", "is_night")
    assert scaled.level(policy) == "fail"


def test_thresholds_out_of_order_are_refused():
    with pytest.raises(ValueError, match="warn_share"):
        drift.DriftPolicy(warn_share=0.6, fail_share=0.5)
