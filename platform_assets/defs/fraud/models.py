"""Models: train a challenger, judge it against the champion, promote it if the gate approves.

    features + labels -> fraud_model (train, register) -> evaluation (gate check) -> production_model

Every version lands in the model registry (``resources.registry``); a stage is an alias there.
Each step works on the exact version its upstream produced, read from that upstream's
materialization (never "the newest in the registry"). A refused challenger is an expected outcome,
not a failure: the run succeeds, the gate's check on ``evaluation`` is a WARN, the registry records
the refusal, and ``production_model`` records that the champion stays (nothing is promoted).
The maths lives beside them (``training.py``, ``metrics.py``, ``gate.py``) and in ``keel_core.model_card``;
these assets read, call, record and report.
"""

import base64
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from keel_core import drift, learning, provenance
from keel_core.model_record import ModelRecord, Period
from keel_core.windows import TrainingWindow
from platform_assets.defs.fraud import training
from platform_assets.defs.fraud import transaction_features as features
from platform_assets.defs.fraud.gate import GatePolicy, decide
from platform_assets.defs.fraud.metrics import Metrics, fraud_metrics
from platform_assets.handover import produced_by, promote_or_keep
from platform_assets.partitions import run_last_day
from platform_assets.provenance import recorded
from platform_assets.steps import GATE, PUBLISHING, TRAINING, WAREHOUSE_POOL, retry_only_transient
from resources.registry import APPROVED, CANDIDATE, REFUSED, ModelRegistry
from resources.warehouse import Warehouse

FRAUD_MODEL = dg.AssetKey(["models", "fraud_model"])
EVALUATION = dg.AssetKey(["models", "evaluation"])
PRODUCTION_MODEL = dg.AssetKey(["models", "production_model"])
FEATURES = dg.AssetKey(["features", "transaction_features"])
LABELS = dg.AssetKey(["warehouse", "fraud_labels"])
PAYMENTS = dg.AssetKey(["lake", "raw_transactions"])  # the payments source's table (defs/payments)

# What the model was trained on, kept with the version: monitoring compares served payments with it.
TRAINING_REFERENCE = "training_reference.parquet"
TRAINING_REFERENCE_ROWS = 50_000

MODEL_DESCRIPTION = "HistGradientBoostingClassifier (scikit-learn)"
HYPER_PARAMETERS = ("learning_rate", "max_iter", "max_depth", "min_samples_leaf", "l2_regularization")


class TrainingConfig(dg.Config):
    """One experiment: the data window and the model's hyper-parameters (editable in the launchpad)."""

    train_days: int = 14
    test_days: int = 7
    last_labelled_day: str | None = None  # YYYY-MM-DD; default: the latest day whose flags are all known
    seed: int = 42
    # Shallow, slow-learning trees: on six weeks of history the library defaults (depth unlimited,
    # 31 leaves, 20 samples per leaf) overfit and lose to the logistic baseline (ROC AUC 0.77 vs 0.88).
    learning_rate: float = 0.05
    max_iter: int = 300
    max_depth: int = 3
    min_samples_leaf: int = 200
    l2_regularization: float = 0.0


class GateConfig(dg.Config):
    """The promotion gate: the evaluation window and the policy (see ``keel_core.promotion.GatePolicy``)."""

    evaluation_days: int = 7
    min_roc_auc: float = GatePolicy.min_roc_auc
    min_average_precision: float = GatePolicy.min_average_precision
    average_precision_tolerance: float = GatePolicy.average_precision_tolerance
    card_precision_tolerance: float = GatePolicy.card_precision_tolerance

    def policy(self) -> GatePolicy:
        return GatePolicy(**self.model_dump(exclude={"evaluation_days"}))


def _metrics_table(rows: dict[str, Metrics | None]) -> dg.MetadataValue:
    lines = [
        "| model | ROC AUC | average precision | card precision@100 | payments | frauds |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows.items():
        if m is None:
            lines.append(f"| {name} | – | – | – | – | – |")
        else:
            lines.append(
                f"| {name} | {m.roc_auc:.4f} | {m.average_precision:.4f} | {m.card_precision_at_100:.4f} "
                f"| {m.rows:,} | {m.frauds:,} |"
            )
    return dg.MetadataValue.md("\n".join(lines))


def _period(frame: pd.DataFrame) -> Period:
    return Period(rows=len(frame), positives=int(frame["is_fraud"].sum()))


@dg.asset(
    key=FRAUD_MODEL,
    group_name="models",
    deps=[FEATURES, LABELS],
    pool=WAREHOUSE_POOL,  # reads the warehouse file, which must not be mid-write
    kinds={"scikit-learn", "bentoml"},
    op_tags=TRAINING.op_tags("fraud_model"),
)
def fraud_model(
    context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: Warehouse, registry: ModelRegistry
):
    """The newest trained fraud model (the challenger), a version in the model registry: gradient-
    boosted trees on the transaction features, trained on a time window and tested on a later one,
    reported beside a logistic-regression baseline."""
    with warehouse.connect() as connection:
        horizon = training.label_horizon(connection)
        last = (
            date.fromisoformat(config.last_labelled_day)
            if config.last_labelled_day
            else horizon.within(run_last_day(context))
        )
        window = TrainingWindow.ending(last, config.train_days, horizon.label_delay_days, config.test_days)
        hyper_parameters = {name: getattr(config, name) for name in HYPER_PARAMETERS}
        experiment = training.run_experiment(connection, window, config.seed, hyper_parameters)
    train, test, model = experiment.train, experiment.test, experiment.model
    scored, baseline_scored = experiment.scored, experiment.baseline_scored
    metrics, baseline_metrics = experiment.metrics, experiment.baseline_metrics
    training_seconds = experiment.training_seconds

    code = provenance.code_version()
    record = ModelRecord(
        description="Card-fraud detector: the probability that a payment is fraud",
        model=MODEL_DESCRIPTION,
        baseline="LogisticRegression on the scaled features (baseline)",
        training_window=window,
        label_delay_days=horizon.label_delay_days,
        train=_period(train.frame),
        test=_period(test.frame),
        unlabelled_rows=train.unlabelled + test.unlabelled,
        metrics=metrics.values(),
        baseline_metrics=baseline_metrics.values(),
        features=features.FEATURE_NAMES,
        feature_set_version=features.FEATURE_SET_VERSION,
        hyper_parameters=hyper_parameters,
        seed=config.seed,
        training_seconds=round(training_seconds, 3),
        code_version=code,
        lockfile_sha256=provenance.lockfile_sha256(),
        dbt_manifest_sha256=provenance.dbt_manifest_sha256(),
        # What `keel reproduce` checks before training again: the very rows of each window.
        data_sha256=experiment.fingerprints,
        inputs=(FEATURES.to_user_string(), LABELS.to_user_string()),
        dagster_run_id=context.run.run_id,
    )
    tag = registry.register(model, record, run_id=context.run.run_id)
    plot = learning.precision_recall_png(
        {
            f"model (AP {metrics.average_precision:.3f})": (scored["is_fraud"], scored["score"]),
            f"baseline (AP {baseline_metrics.average_precision:.3f})": (
                baseline_scored["is_fraud"],
                baseline_scored["score"],
            ),
        },
        title=f"{tag}, test {window.test_start} .. {window.test_end}",
    )
    plot_uri = registry.attach(tag, "precision_recall.png", plot)
    reference = drift.sample(
        train.frame, TRAINING_REFERENCE_ROWS, config.seed, features.DRIFT_COLUMNS.order_by
    )
    reference_uri = registry.attach(
        tag,
        TRAINING_REFERENCE,
        reference[["transaction_id", *features.FEATURE_NAMES]].to_parquet(index=False),
    )
    context.log.info(f"registered {tag}: {metrics}")

    return dg.MaterializeResult(
        metadata={
            **recorded(context),
            "model_tag": tag,
            "roc_auc": metrics.roc_auc,
            "average_precision": metrics.average_precision,
            "card_precision_at_100": metrics.card_precision_at_100,
            "baseline_roc_auc": baseline_metrics.roc_auc,
            "baseline_average_precision": baseline_metrics.average_precision,
            "baseline_card_precision_at_100": baseline_metrics.card_precision_at_100,
            "metrics": _metrics_table({"model": metrics, "baseline (logistic regression)": baseline_metrics}),
            **window.as_dict(),
            "train_rows": len(train.frame),
            "train_fraud_rate": float(train.frame["is_fraud"].mean()),
            "test_rows": len(test.frame),
            "unlabelled_rows": record.unlabelled_rows,
            "features": dg.MetadataValue.json(
                {"version": features.FEATURE_SET_VERSION, "names": features.FEATURE_NAMES}
            ),
            "hyper_parameters": dg.MetadataValue.json({**hyper_parameters, "seed": config.seed}),
            "training_seconds": round(training_seconds, 3),
            "git_commit": code["git_commit"],
            "git_dirty": code["git_dirty"],
            "lockfile_sha256": record.lockfile_sha256,
            "precision_recall": dg.MetadataValue.md(
                f"![precision-recall](data:image/png;base64,{base64.b64encode(plot).decode()})"
            ),
            "precision_recall_png": dg.MetadataValue.path(plot_uri),
            "training_reference": dg.MetadataValue.path(reference_uri),
            "training_reference_rows": len(reference),
            "registry": dg.MetadataValue.path(registry.uri),
        }
    )


@dg.asset(
    key=EVALUATION,
    group_name="models",
    deps=[FRAUD_MODEL, FEATURES, LABELS],
    pool=WAREHOUSE_POOL,
    # Not blocking: a refusal is an expected outcome (a WARN), and production_model reads the verdict.
    check_specs=[dg.AssetCheckSpec("promotion_gate", asset=EVALUATION)],
    kinds={"scikit-learn"},
    op_tags=GATE.op_tags("evaluation"),
    retry_policy=GATE.retry_policy,
)
@retry_only_transient
def evaluation(
    context: dg.AssetExecutionContext, config: GateConfig, warehouse: Warehouse, registry: ModelRegistry
):
    """The challenger (the version models/fraud_model produced) and the production champion scored
    on the same latest labelled days. Its check is the promotion gate (a WARN when it refuses)."""
    tag, trained_in = produced_by(context, FRAUD_MODEL, "model_tag")
    challenger = registry.version(tag)
    if challenger.stage != CANDIDATE:
        raise dg.Failure(
            f"nothing to evaluate: {tag}, trained by run {trained_in[:8]}, is already {challenger.stage}; "
            "materialize models/fraud_model to train a new challenger",
            allow_retries=False,  # the same version would be found again
        )
    champion = registry.champion()
    with warehouse.connect() as connection:
        last = training.label_horizon(connection).within(run_last_day(context))
        first = last - timedelta(days=config.evaluation_days - 1)
        labelled = training.labelled_features(connection, first, last)

    challenger_metrics = fraud_metrics(training.scored(registry.load(challenger.tag), labelled.frame))
    champion_metrics = (
        fraud_metrics(training.scored(registry.load(champion.tag), labelled.frame)) if champion else None
    )
    decision = decide(challenger_metrics, champion_metrics, config.policy())
    registry.record(
        challenger.tag,
        APPROVED if decision.promote else REFUSED,
        reason=decision.summary,
        run_id=context.run.run_id,
        details={
            "window": {"first": first.isoformat(), "last": last.isoformat()},
            "challenger": challenger_metrics.as_dict(),
            "champion_tag": champion.tag if champion else None,
            "champion": champion_metrics.as_dict() if champion_metrics else None,
            "decision": decision.summary,
            "rules": [rule.__dict__ for rule in decision.rules],
        },
    )
    context.log.info(f"{challenger.tag}: {decision.summary}")
    yield dg.MaterializeResult(
        metadata={
            **recorded(context),
            "challenger": challenger.tag,
            "challenger_trained_by_run": trained_in,
            "approved": decision.promote,
            "champion": champion.tag if champion else "none yet",
            "evaluation_first_day": first.isoformat(),
            "evaluation_last_day": last.isoformat(),
            "metrics": _metrics_table({"challenger": challenger_metrics, "champion": champion_metrics}),
            "challenger_average_precision": challenger_metrics.average_precision,
            "challenger_card_precision_at_100": challenger_metrics.card_precision_at_100,
            "decision": decision.summary,
        }
    )
    yield dg.AssetCheckResult(
        check_name="promotion_gate",
        passed=decision.promote,
        severity=dg.AssetCheckSeverity.WARN,
        description=decision.summary,
        metadata={
            "rules": dg.MetadataValue.md(
                "| rule | passed | detail |\n|---|---|---|\n"
                + "\n".join(
                    f"| {r.name} | {'yes' if r.passed else 'NO'} | {r.detail} |" for r in decision.rules
                )
            ),
            "challenger": challenger.tag,
        },
    )


@dg.asset(
    key=PRODUCTION_MODEL,
    group_name="models",
    deps=[EVALUATION],
    kinds={"bentoml"},
    op_tags=PUBLISHING.op_tags("production_model"),
    retry_policy=PUBLISHING.retry_policy,
    # Before any promotion, a refused challenger leaves no production model to record: then this
    # step yields nothing and what needs one (scores, the Bento) is skipped, not failed.
    output_required=False,
)
@retry_only_transient
def production_model(context: dg.AssetExecutionContext, registry: ModelRegistry):
    """The model version in production: the challenger the gate approved (the one models/evaluation
    judged), promoted in the registry, with its model card; after a refusal, the champion that stays.
    Roll back with ``keel models promote <tag>``."""
    yield from promote_or_keep(context, registry, EVALUATION, promotion_metadata)


def promotion_metadata(registry: ModelRegistry, promotion) -> dict:
    """What the UI shows for a promotion, by the gate or by ``keel models promote``."""
    approval = registry.version(promotion.tag).approval()
    return {
        "promoted": True,
        "model_tag": promotion.tag,
        "replaces": promotion.details["replaces"] or "none (first production model)",
        "promoted_by": promotion.by,
        "promoted_at": promotion.at,
        "reason": promotion.reason,
        "average_precision": approval.details["challenger"]["average_precision"],
        "card_precision_at_100": approval.details["challenger"]["card_precision_at_100"],
        "model_card": dg.MetadataValue.md(registry.card(promotion.tag)),
        "model_card_path": dg.MetadataValue.path(registry.attachment_uri(promotion.tag, "model_card.md")),
    }
