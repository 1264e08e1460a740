"""keel_core.judging: metrics by name, estimators by import path, and the gate on named metrics."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel_core import judging
from keel_core.judging import BUILT_IN, Gate, judge


def scored(labels, predictions) -> pd.DataFrame:
    return pd.DataFrame({"label": labels, "prediction": predictions})


def test_regression_metrics_are_the_textbook_ones():
    frame = scored([10, 0, 4], [8, 1, 5])
    assert judging.metric("mae")(frame) == pytest.approx((2 + 1 + 1) / 3)
    assert judging.metric("rmse")(frame) == pytest.approx(np.sqrt((4 + 1 + 1) / 3))
    assert judging.metric("mape")(frame) == pytest.approx((2 / 10 + 1 / 4) / 2)  # the 0 label is left out
    assert judging.metric("wape")(frame) == pytest.approx(4 / 14)


def test_classification_metrics_need_both_classes_and_say_so():
    assert judging.metric("roc_auc")(scored([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        judging.metric("average_precision")(scored([0, 0], [0.1, 0.2]))


def test_a_use_case_s_own_metric_is_imported_by_path_and_must_say_which_way_is_better():
    own = judging.metric("keel_core.judging:_mae", higher_is_better=False)
    assert own.name == "_mae" and own(scored([1], [3])) == 2
    with pytest.raises(ValueError, match="higher_is_better"):
        judging.metric("keel_core.judging:_mae")
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        judging.metric("f1")
    with pytest.raises(ValueError, match="has no nothing_here"):
        judging.metric("keel_core.judging:nothing_here", higher_is_better=True)


def test_an_estimator_is_any_scikit_learn_class_by_path_with_its_parameters_checked():
    model = judging.estimator("sklearn.linear_model.Ridge", {"alpha": 2.0})
    assert type(model).__name__ == "Ridge" and model.alpha == 2.0
    with pytest.raises(ValueError, match="has no parameter alhpa"):
        judging.estimator("sklearn.linear_model.Ridge", {"alhpa": 2.0})
    with pytest.raises(ValueError, match="not a scikit-learn estimator"):
        judging.estimator("collections.OrderedDict")
    with pytest.raises(ValueError, match="cannot import"):
        judging.estimator("sklearn.nothing.Here")


def test_an_estimator_can_be_a_function_that_builds_one_such_as_a_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def scaled_logistic_regression(**params):
        return make_pipeline(StandardScaler(), LogisticRegression(**params))

    model = judging.estimator(scaled_logistic_regression, {"C": 0.5})
    assert model[-1].C == 0.5
    with pytest.raises(ValueError, match="refuses the parameters"):
        judging.estimator(lambda: LogisticRegression(), {"C": 0.5})
    with pytest.raises(ValueError, match="returned dict, not a scikit-learn estimator"):
        judging.estimator(lambda: {})


def test_the_gate_knows_a_ceiling_from_a_floor_and_beats_the_baseline_in_the_right_direction():
    gate = Gate(limits={"mae": 5.0}, beat_baseline=("mae",), tolerance={"mae": 0.1})
    good = judge({"mae": 2.0}, gate, BUILT_IN, baseline={"mae": 3.0}, champion={"mae": 2.05})
    assert good.promote, good.summary
    worse_than_naive = judge({"mae": 3.5}, gate, BUILT_IN, baseline={"mae": 3.0})
    assert not worse_than_naive.promote
    assert "mae 3.5000 vs baseline 3.0000" in worse_than_naive.summary
    regressed = judge({"mae": 2.5}, gate, BUILT_IN, baseline={"mae": 3.0}, champion={"mae": 2.0})
    assert [r.name for r in regressed.rules if not r.passed] == ["mae_vs_champion"]
    with pytest.raises(ValueError, match="not measured: wape"):
        judge({"mae": 1.0}, Gate(limits={"wape": 0.5}), {"mae": BUILT_IN["mae"]})


FRAUD_GATE = Gate(
    limits={"roc_auc": 0.75, "average_precision": 0.30},
    tolerance={"average_precision": 0.02, "card_precision_at_100": 0.02},
)
FRAUD_METRICS = {**BUILT_IN, "card_precision_at_100": judging.Metric("card_precision_at_100", len, True)}
score = st.floats(0, 1, allow_nan=False)


@given(ours=st.tuples(score, score, score), theirs=st.one_of(st.none(), st.tuples(score, score, score)))
def test_floors_and_tolerances_promote_exactly_what_they_say(ours, theirs):
    # The gate of the reference use case (before keel.UseCase, its own code decided this way).
    roc_auc, average_precision, card_precision = ours
    expected = roc_auc >= 0.75 and average_precision >= 0.30
    if theirs is not None:
        expected = expected and not (
            theirs[1] - average_precision > 0.02 or theirs[2] - card_precision > 0.02
        )
    names = ("roc_auc", "average_precision", "card_precision_at_100")
    decided = judge(
        dict(zip(names, ours, strict=True)),
        FRAUD_GATE,
        FRAUD_METRICS,
        champion=dict(zip(names, theirs, strict=True)) if theirs else None,
    )
    assert decided.promote == expected
    assert len(decided.rules) == 2 + 2 * (theirs is not None)
