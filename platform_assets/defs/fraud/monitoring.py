"""Monitoring: is the production model still looking at the world it learnt, and is it still right?

    features + prediction log + production model -> feature_drift   (every day, at once)
    scores + fraud flags a label delay later     -> live_performance (every day, once labelled)

Both are daily and follow their inputs by themselves (``follows_upstream``); their checks fail
when drift or performance cross the line, and the retraining sensor (``sensors.py``) acts on that.
The maths is in ``keel_core.drift`` and ``platform_assets.defs.fraud.metrics``.
"""

import io
from datetime import date

import dagster as dg
import pandas as pd

from keel_core import drift
from platform_assets.automation import follows_upstream
from platform_assets.components.plan import LABEL_DELAY, MONITORING_TAG
from platform_assets.defs.fraud import transaction_features as features
from platform_assets.defs.fraud.gate import GatePolicy
from platform_assets.defs.fraud.metrics import fraud_metrics
from platform_assets.defs.fraud.models import FEATURES, LABELS, PRODUCTION_MODEL, TRAINING_REFERENCE
from platform_assets.defs.fraud.scores import SCORE_TABLE, SCORES
from platform_assets.defs.fraud.serving import PREDICTION_LOG
from platform_assets.defs.payments.simulator import LABEL_DELAY_DAYS
from platform_assets.partitions import daily_partitions
from platform_assets.provenance import recorded
from platform_assets.steps import MONITORING, WAREHOUSE_POOL, retry_only_transient
from resources.lake import Lake, LakeError
from resources.registry import ModelRegistry, RegistryError
from resources.warehouse import Warehouse

FEATURE_DRIFT = dg.AssetKey(["monitoring", "feature_drift"])
LIVE_PERFORMANCE = dg.AssetKey(["monitoring", "live_performance"])
DRIFT_CHECK = "features_have_not_drifted"
PERFORMANCE_CHECK = "performance_above_floor"
DRIFT_REPORTS = "monitoring/drift_reports"  # lake folder of the HTML reports


class DriftConfig(dg.Config):
    """Thresholds on the share of drifted features, and the sample size (``keel_core.drift.DriftPolicy``)."""

    warn_share: float = features.DRIFT_POLICY.warn_share
    fail_share: float = features.DRIFT_POLICY.fail_share
    max_rows: int = features.DRIFT_POLICY.max_rows
    fail_features: list[str] = list(features.DRIFT_POLICY.fail_features)

    def policy(self) -> drift.DriftPolicy:
        return drift.DriftPolicy(
            warn_share=self.warn_share,
            fail_share=self.fail_share,
            max_rows=self.max_rows,
            fail_features=tuple(self.fail_features),
        )


def _champion(registry: ModelRegistry):
    champion = registry.champion()
    if champion is None:
        raise RegistryError(f"no model in production in {registry.uri}: materialize models/production_model")
    return champion


def _served_or_built(day: date, lake: Lake, warehouse: Warehouse) -> tuple[pd.DataFrame, str]:
    """The day's payments as the service saw them, or, when it served none, as the pipeline built them."""
    try:
        served = lake.read_partition(PREDICTION_LOG, day)
    except LakeError:
        served = pd.DataFrame()
    if len(served):
        return served, f"prediction log ({lake.location(PREDICTION_LOG, day)})"
    with warehouse.connect() as connection:
        features.require_days(connection, day, day)
        built = connection.execute(
            f"select * from {features.FEATURE_TABLE} where transaction_date = ?", [day]
        ).df()
    return built, f"feature table {features.FEATURE_TABLE} (nothing was served on {day})"


@dg.asset(
    key=FEATURE_DRIFT,
    group_name="monitoring",
    partitions_def=daily_partitions,
    deps=[FEATURES, dg.AssetKey(["serving", PREDICTION_LOG]), PRODUCTION_MODEL],
    pool=WAREHOUSE_POOL,
    # Checked per day: each failure names its day (the retraining sensor and the alerts read it).
    check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset=FEATURE_DRIFT, partitions_def=daily_partitions)],
    # A new champion is compared from its promotion on; the days before keep their verdicts.
    automation_condition=follows_upstream(ignore=PRODUCTION_MODEL),
    kinds={"evidently", "html"},
    tags={MONITORING_TAG: "true"},
    metadata={LABEL_DELAY: 0},
    op_tags=MONITORING.op_tags("feature_drift"),
    retry_policy=MONITORING.retry_policy,
)
@retry_only_transient
def feature_drift(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    lake: Lake,
    warehouse: Warehouse,
    registry: ModelRegistry,
):
    """How far the day's payments (as served, from the prediction log; otherwise the day's feature
    partition) are from the data the production model was trained on: one drift score per feature
    and an Evidently HTML report in the lake."""
    day = date.fromisoformat(context.partition_key)
    policy = config.policy()
    champion = _champion(registry)
    reference = pd.read_parquet(io.BytesIO(registry.attachment(champion.tag, TRAINING_REFERENCE)))
    current, source = _served_or_built(day, lake, warehouse)
    result = drift.measure(current, reference, policy, features.DRIFT_COLUMNS)
    report = f"{DRIFT_REPORTS}/date={day.isoformat()}/feature_drift.html"
    report_uri = lake.write_file(report, result.html.encode())
    level = result.level(policy)
    context.log.info(f"{day}: {len(result.drifted)} of {len(result.features)} features drifted ({level})")

    table = result.table()
    yield dg.MaterializeResult(
        metadata={
            **recorded(context),
            "drift_share": result.share,
            "drifted_features": dg.MetadataValue.json(result.drifted),
            "drift_scores": dg.MetadataValue.json({f.feature: round(f.score, 6) for f in result.features}),
            "features": dg.MetadataValue.md(table.to_markdown(index=False, floatfmt=".4f")),
            "report": dg.MetadataValue.url(lake.public_url(report)),
            "report_path": dg.MetadataValue.path(report_uri),
            "model_version": champion.tag,
            "current": source,
            "current_rows": result.current_rows,
            "current_rows_before_sampling": result.current_total,
            "reference_rows": result.reference_rows,
            "reference_rows_before_sampling": result.reference_total,
            "sampled": dg.MetadataValue.md(
                f"yes: at most {policy.max_rows:,} rows a side, drawn with seed {policy.seed}"
                if result.sampled
                else "no: every row compared"
            ),
            "dagster/row_count": result.current_total,
        }
    )
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=level == "ok",
        severity=dg.AssetCheckSeverity.WARN if level == "warn" else dg.AssetCheckSeverity.ERROR,
        description=f"{result.share:.0%} of features drifted (warn at {policy.warn_share:.0%}, "
        f"fail at {policy.fail_share:.0%} or when any of {', '.join(policy.fail_features)} drifts)",
        metadata={
            "drift_share": result.share,
            "drifted_features": dg.MetadataValue.json(result.drifted),
            "model_version": champion.tag,
        },
    )


class PerformanceConfig(dg.Config):
    """The floor a production model must stay above on a labelled day (defaults: the gate's floors)."""

    min_roc_auc: float = GatePolicy.min_roc_auc
    min_average_precision: float = GatePolicy.min_average_precision


# The flags about day D's payments are reported on day D + label delay.
_FLAGS_OF_THE_DAY = dg.TimeWindowPartitionMapping(
    start_offset=LABEL_DELAY_DAYS, end_offset=LABEL_DELAY_DAYS, allow_nonexistent_upstream_partitions=True
)


@dg.asset(
    key=LIVE_PERFORMANCE,
    group_name="monitoring",
    partitions_def=daily_partitions,
    deps=[dg.AssetDep(["scores", SCORES]), dg.AssetDep(LABELS, partition_mapping=_FLAGS_OF_THE_DAY)],
    pool=WAREHOUSE_POOL,
    check_specs=[
        dg.AssetCheckSpec(PERFORMANCE_CHECK, asset=LIVE_PERFORMANCE, partitions_def=daily_partitions)
    ],
    automation_condition=follows_upstream(after_inputs_are_built=True),
    kinds={"scikit-learn", "duckdb"},
    tags={MONITORING_TAG: "true"},
    metadata={LABEL_DELAY: LABEL_DELAY_DAYS},
    op_tags=MONITORING.op_tags("live_performance"),
    retry_policy=MONITORING.retry_policy,
)
@retry_only_transient
def live_performance(context: dg.AssetExecutionContext, config: PerformanceConfig, warehouse: Warehouse):
    """How the model in production did on the day's payments, once their fraud flags are known
    (a label delay later): ROC AUC, average precision and card precision@100 of the day's scores."""
    day = date.fromisoformat(context.partition_key)
    with warehouse.connect() as connection:
        scored = connection.execute(
            f"""
            select scores.transaction_date, scores.customer_id, scores.model_version,
                   scores.fraud_probability as score, cast(labels.is_fraud as integer) as is_fraud
            from {SCORE_TABLE} as scores
            left join {LABELS.path[-1]} as labels using (transaction_id)
            where scores.transaction_date = ?
            """,
            [day],
        ).df()
    if scored.empty:
        raise dg.Failure(f"no scores for {day} in {SCORE_TABLE}: materialize scores/{SCORES} for it first")
    labelled = scored.dropna(subset=["is_fraud"])
    if labelled.empty:
        raise dg.Failure(
            f"none of the {len(scored):,} payments of {day} has a fraud flag in the warehouse yet: flags "
            f"arrive {LABEL_DELAY_DAYS} days later, with warehouse/fraud_labels of that day"
        )
    metrics = fraud_metrics(labelled)
    versions = sorted(scored["model_version"].unique())
    failures = [
        f"{name} {value:.4f} below the floor {floor:.2f}"
        for name, value, floor in (
            ("ROC AUC", metrics.roc_auc, config.min_roc_auc),
            ("average precision", metrics.average_precision, config.min_average_precision),
        )
        if value < floor
    ]
    yield dg.MaterializeResult(
        metadata={
            **recorded(context),
            "roc_auc": metrics.roc_auc,
            "average_precision": metrics.average_precision,
            "card_precision_at_100": metrics.card_precision_at_100,
            "payments": len(scored),
            "labelled_payments": len(labelled),
            "unlabelled_payments": len(scored) - len(labelled),
            "frauds": metrics.frauds,
            "model_version": ", ".join(versions),
            "dagster/row_count": len(scored),
        }
    )
    yield dg.AssetCheckResult(
        check_name=PERFORMANCE_CHECK,
        passed=not failures,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(failures)
        or f"ROC AUC {metrics.roc_auc:.4f}, AP {metrics.average_precision:.4f}: above the floors",
        metadata={"roc_auc": metrics.roc_auc, "average_precision": metrics.average_precision},
    )
