"""Serving: what the scoring service reads (online features, its Bento) and what it leaves (the log).

The service itself is ``scorer/`` (BentoML, on Keel's serving runtime); these assets feed it and collect
from it.
"""

from datetime import timedelta
from pathlib import Path

import dagster as dg

from keel_core import bentos
from keel_core.prediction_log import SPOOL
from platform_assets import prediction_logs
from platform_assets.automation import expected_every, follows_upstream
from platform_assets.bentos import build_and_archive
from platform_assets.defs.fraud import transaction_features as features
from platform_assets.defs.fraud.features import FRESHNESS_HOURS
from platform_assets.defs.fraud.models import PAYMENTS, PRODUCTION_MODEL
from platform_assets.partitions import daily_partitions, one_run_per_backfill, partition_days
from platform_assets.provenance import recorded
from platform_assets.steps import INGESTION, PUBLISHING, WAREHOUSE_POOL, retry_only_transient
from platform_assets.storage import stored_in_lake
from resources.lake import Lake
from resources.namespace import Namespace
from resources.online_store import OnlineFeatureStore
from resources.registry import ModelRegistry, RegistryError
from resources.warehouse import Warehouse

PREDICTION_LOG = "prediction_log"  # lake table
SERVICE = "fraud_scorer"  # the payment scorer's name (scorer/service.py): its Bentos are SERVICE_<namespace>
BENTOFILE = Path(__file__).parent / "scorer" / "bentofile.yaml"

# The snapshot of day D's close holds windows over D-29 .. D (it serves the payments of D+1).
_SNAPSHOT_WINDOW = dg.TimeWindowPartitionMapping(
    start_offset=-(features.LOOKBACK_DAYS - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
)


@dg.asset(
    key=["serving", "online_features"],
    group_name="serving",
    partitions_def=daily_partitions,
    backfill_policy=one_run_per_backfill,
    pool=WAREHOUSE_POOL,
    code_version=features.FEATURE_SET_VERSION,
    deps=[
        dg.AssetDep(["warehouse", mart], partition_mapping=_SNAPSHOT_WINDOW)
        for mart in (features.CUSTOMER_ACTIVITY, features.TERMINAL_ACTIVITY, features.TERMINAL_FRAUD_REPORTS)
    ],
    automation_condition=follows_upstream(),
    kinds={"duckdb", "redis", "sqlite"},
    op_tags=PUBLISHING.op_tags("online_features"),
    retry_policy=PUBLISHING.retry_policy,
)
@retry_only_transient
def online_features(
    context: dg.AssetExecutionContext, warehouse: Warehouse, online_store: OnlineFeatureStore
):
    """Every customer's and terminal's features as of the close of the day, published to the online
    store for the scoring service to use all the next day. The store only moves forward: a run for
    an older day than the store holds publishes nothing (and says so); for a range, the last day
    is published."""
    import pandera.errors  # here: pandera costs ~0.2 s to import, and only this step validates

    _, closed_day = partition_days(context)
    with warehouse.connect() as connection:
        customers, terminals = features.entity_snapshot(connection, closed_day)
    try:
        for entity, frame in (("customer", customers), ("terminal", terminals)):
            features.snapshot_schema(entity).validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        raise dg.Failure(
            description=f"the snapshot of {closed_day} breaks its contract: nothing was published",
            metadata={"failures": dg.MetadataValue.md(errors.failure_cases.head(20).to_markdown())},
        ) from errors

    store = online_store.open(features.ONLINE_VIEW)
    try:
        publication = store.publish(closed_day, {"customer": customers, "terminal": terminals})
    finally:
        store.close()
    if not publication.published:
        context.log.warning(
            f"not published: the store holds the snapshot of {publication.current.closed_day}, "
            f"newer than {closed_day}"
        )
    return dg.MaterializeResult(
        metadata={
            **recorded(context),
            "closed_day": closed_day.isoformat(),
            "serves_payments_of": (closed_day + timedelta(days=1)).isoformat(),
            "published": publication.published,
            "store": store.uri,
            "store_holds": publication.current.closed_day.isoformat(),
            "snapshot_version": publication.current.version,
            "customers": len(customers),
            "terminals": len(terminals),
            "feature_set_version": features.FEATURE_SET_VERSION,
        }
    )


@dg.asset(
    key=["serving", "fraud_scorer_bento"],
    group_name="serving",
    deps=[PRODUCTION_MODEL],
    # Also after a promotion outside a run (`keel models promote`), when the daemon runs.
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"bentoml"},
    op_tags=PUBLISHING.op_tags("fraud_scorer_bento"),
    retry_policy=PUBLISHING.retry_policy,
)
@retry_only_transient
def fraud_scorer_bento(
    context: dg.AssetExecutionContext, registry: ModelRegistry, lake: Lake, namespace: Namespace
):
    """The scoring service packed with the model in production: a Bento in the local BentoML store,
    tagged ``fraud_scorer_<namespace>:<model version>-<code digest>``, and its archive in the
    namespace's lake (``bentos/fraud_scorer_<namespace>/<version>.bento``), from which images are
    built. Rebuilt when the production model or the serving code changes; older Bentos stay, so
    rolling back is serving the previous tag."""
    champion = registry.champion()
    if champion is None:
        raise RegistryError(f"no model in production in {registry.uri}: materialize models/production_model")
    return build_and_archive(
        context, registry, lake, champion, bentos.bento_name(namespace.name, SERVICE), BENTOFILE
    )


@dg.asset(
    key=["serving", PREDICTION_LOG],
    group_name="serving",
    metadata=stored_in_lake(PREDICTION_LOG),
    partitions_def=daily_partitions,
    # The day's payments landing is the sign that the day is over: what was served on it is complete.
    deps=[PAYMENTS],
    automation_condition=follows_upstream(),
    freshness_policy=expected_every(FRESHNESS_HOURS),  # a silent scoring service shows here
    kinds={"parquet"},
    op_tags=INGESTION.op_tags("prediction_log"),
    retry_policy=INGESTION.retry_policy,
)
@retry_only_transient
def prediction_log(context: dg.AssetExecutionContext, lake: Lake):
    """Every payment the scoring service scored on the day: its facts, the features it used, the
    score, decision, model version, snapshot and latency. The service writes small files to the
    lake's ``prediction_log_spool/``; this compacts a day's files into the lake table
    ``prediction_log`` (re-runnable: the files stay, duplicates are dropped by prediction id)."""
    return prediction_logs.compact(context, lake, SPOOL, PREDICTION_LOG, ["scored_at", "transaction_id"])
