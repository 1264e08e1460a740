"""What a use case's model assets record, built the same way by hand for the fraud use case: a
version's training record and the promotion gate's approval details (see
``platform_assets/components/training.py``)."""

from datetime import date
from typing import Any

from keel_core.judging import judge
from keel_core.model_record import CodeVersion, ModelRecord, Period
from keel_core.windows import TrainingWindow
from platform_assets.defs.fraud import transaction_features as features
from tests import fraud

WINDOW = TrainingWindow.ending(date(2026, 2, 4), train_days=14, gap_days=7, test_days=7)
HYPER_PARAMETERS = {
    "learning_rate": 0.05,
    "max_iter": 300,
    "max_depth": 3,
    "min_samples_leaf": 200,
    "l2_regularization": 0.0,
}
MODEL_METRICS = {"roc_auc": 0.9123, "average_precision": 0.6234, "card_precision_at_100": 0.2345}
BASELINE_METRICS = {"roc_auc": 0.8765, "average_precision": 0.4321, "card_precision_at_100": 0.1987}
GIT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
LOCKFILE_SHA256 = "f" * 64


def training_record(
    metrics: dict = MODEL_METRICS, git_dirty: bool = False, run_id: str = "run-train-1"
) -> ModelRecord:
    """The record ``fraud/model`` registers with a version."""
    return ModelRecord(
        description="Card-fraud detector",
        model="HistGradientBoostingClassifier (scikit-learn)",
        baseline="LogisticRegression (baseline)",
        training_window=WINDOW,
        label_delay_days=7,
        train=Period(rows=14_000, positives=112),
        test=Period(rows=7_000, positives=61),
        unlabelled_rows=3,
        metrics=metrics,
        baseline_metrics=BASELINE_METRICS,
        features=features.FEATURE_NAMES,
        feature_set_version=features.FEATURE_SET_VERSION,
        hyper_parameters=HYPER_PARAMETERS,
        seed=42,
        training_seconds=1.234,
        code_version=CodeVersion(git_commit=GIT_COMMIT, git_dirty=git_dirty),
        lockfile_sha256=LOCKFILE_SHA256,
        inputs=("fraud/features", "warehouse/fraud_labels"),
        dagster_run_id=run_id,
    )


def approval_details(
    challenger: dict = MODEL_METRICS,
    champion: dict | None = None,
    champion_tag: str | None = None,
) -> dict[str, Any]:
    """The details ``fraud/evaluation`` records with the gate's decision."""
    plan = fraud.plan()
    decision = judge(challenger, plan.gate, plan.metrics, BASELINE_METRICS, champion)
    return {
        "window": {"first": "2026-01-29", "last": "2026-02-04"},
        "challenger": challenger,
        "baseline": BASELINE_METRICS,
        "champion_tag": champion_tag,
        "champion": champion,
        "decision": decision.summary,
        "rules": [rule.__dict__ for rule in decision.rules],
    }
