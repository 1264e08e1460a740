from model_records import (
    BASELINE_METRICS,
    GIT_COMMIT,
    LOCKFILE_SHA256,
    MODEL_METRICS,
    approval_details,
    training_record,
)

from keel_core.model_card import render
from platform_assets.defs.fraud import transaction_features as features
from resources.registry import PRODUCTION, Event

TAG = "fraud_detector:new2"
PREVIOUS = "fraud_detector:old1"
CHAMPION_METRICS = {"roc_auc": 0.9011, "average_precision": 0.6111, "card_precision_at_100": 0.2222}


def promotion(replaces: str | None) -> Event:
    return Event(
        tag=TAG,
        stage=PRODUCTION,
        at="2026-02-12T08:30:00+00:00",
        by="alice",
        reason="promotion gate approved: all rules passed",
        run_id="run-promote-1",
        details={"replaces": replaces},
    )


def first_card(**record) -> str:
    return render(TAG, training_record(**record), approval_details(), promotion(replaces=None))


def replacing_card() -> str:
    approval = approval_details(champion=CHAMPION_METRICS, champion_tag=PREVIOUS)
    return render(TAG, training_record(), approval, promotion(replaces=PREVIOUS))


def row(card: str, starts_with: str) -> str:
    rows = [line for line in card.splitlines() if line.startswith(starts_with)]
    assert len(rows) == 1, rows
    return rows[0]


def test_the_card_is_titled_with_the_tag_and_says_who_promoted_it_when_and_why():
    card = first_card()
    assert card.startswith(f"# Model card: `{TAG}`\n")
    assert "promoted to production on 2026-02-12T08:30:00+00:00 by alice" in card
    assert "Reason: promotion gate approved: all rules passed." in card


def test_the_card_of_the_first_production_model_says_it_replaced_nothing():
    card = first_card()
    assert "It replaced: `nothing (first production model)`." in card
    assert row(card, "| previous champion") == "| previous champion `–` | – | – | – |"


def test_the_card_of_a_replacement_names_the_version_it_replaced_and_its_metrics():
    card = replacing_card()
    assert f"It replaced: `{PREVIOUS}`." in card
    assert "first production model" not in card
    assert row(card, "| previous champion") == (
        f"| previous champion `{PREVIOUS}` | 0.9011 | 0.6111 | 0.2222 |"
    )


def test_the_card_shows_the_train_and_test_windows_with_their_sizes():
    card = first_card()
    assert row(card, "| train |") == "| train | 2026-01-08 .. 2026-01-21 | 14,000 | 112 | 0.800% |"
    assert row(card, "| test |") == "| test | 2026-01-29 .. 2026-02-04 | 7,000 | 61 | 0.871% |"
    assert "A gap of 7 days (the label delay)" in card
    assert "At the promotion gate (2026-01-29 .. 2026-02-04)" in card


def test_the_card_shows_the_metrics_of_the_model_and_of_its_baseline():
    card = first_card()
    model, gate = [line for line in card.splitlines() if line.startswith("| this model |")]
    expected = (
        f"| this model | {MODEL_METRICS['roc_auc']:.4f} | {MODEL_METRICS['average_precision']:.4f} "
        f"| {MODEL_METRICS['card_precision_at_100']:.4f} |"
    )
    assert model == gate == expected == "| this model | 0.9123 | 0.6234 | 0.2345 |"
    assert row(card, "| baseline |") == (
        f"| baseline | {BASELINE_METRICS['roc_auc']:.4f} | {BASELINE_METRICS['average_precision']:.4f} "
        f"| {BASELINE_METRICS['card_precision_at_100']:.4f} |"
    )


def test_the_card_states_the_gate_decision():
    card = first_card()
    assert f"Gate: {approval_details()['decision']}" in card
    assert "Gate: approved: roc auc 0.9123 vs floor 0.75" in card


def test_the_card_lists_the_feature_set_and_every_feature():
    card = first_card()
    features_line = row(card, "Feature set version")
    assert features_line.startswith(f"Feature set version {features.FEATURE_SET_VERSION}: ")
    for name in features.FEATURE_NAMES:
        assert f"`{name}`" in features_line


def test_the_card_gives_the_model_its_hyper_parameters_and_seed():
    card = first_card()
    assert "Model: HistGradientBoostingClassifier (scikit-learn) with hyper-parameters" in card
    assert "'max_iter': 300" in card
    assert "seed 42." in card


def test_the_card_records_the_lineage():
    card = first_card()
    assert f"- code: git commit `{GIT_COMMIT}`\n" in card
    assert "uncommitted changes" not in card
    assert f"`uv.lock` sha256 `{LOCKFILE_SHA256}`" in card
    assert "Dagster run `run-train-1`" in card
    assert "days 2026-01-08 .. 2026-02-04" in card


def test_the_card_warns_when_the_model_was_trained_from_uncommitted_code():
    card = first_card(git_dirty=True)
    assert f"- code: git commit `{GIT_COMMIT}` (with uncommitted changes)" in card
