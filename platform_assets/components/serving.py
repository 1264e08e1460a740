"""A use case's serving, when its spec declares it: the day's rows published to the online store
(the view ``<name>``), the prediction endpoint (``serving/predictor.py``) packed as a Bento with
the production model, and what the endpoint answered, collected day by day into the lake."""

from datetime import timedelta

import dagster as dg

from keel_core.prediction_log import SPOOL
from platform_assets import prediction_logs
from platform_assets.automation import follows_upstream
from platform_assets.bentos import build_and_archive
from platform_assets.components.plan import Plan, key
from platform_assets.partitions import daily_partitions, one_run_per_backfill, partition_days
from platform_assets.provenance import recorded
from platform_assets.steps import WAREHOUSE_POOL, retry_only_transient
from platform_assets.storage import stored_in_lake
from resources.lake import Lake
from resources.namespace import Namespace
from resources.online_store import OnlineFeatureStore
from resources.registry import ModelRegistry
from resources.warehouse import Warehouse


def assets(plan: Plan) -> list[dg.AssetsDefinition]:
    """The online features, the Bento and the prediction log of a use case that serves."""
    from keel_core import bentos

    spec, name, endpoint, tags = plan.spec, plan.name, plan.endpoint, plan.tags
    features_key, production_key, feature_table = plan.features_key, plan.production_key, plan.feature_table
    columns = [endpoint.key, *endpoint.features]

    @dg.asset(
        key=key(name, "online_features"),
        group_name=name,
        description=f"The {name} features of every {endpoint.entity} as of the close of the day, published "
        f"to the online store (view {name}) for its endpoint to use all the next day. The store only moves "
        "forward: an older day than it holds is not published (and says so); for a range, the last day is.",
        partitions_def=daily_partitions,
        backfill_policy=one_run_per_backfill,
        pool=WAREHOUSE_POOL,
        code_version=spec.feature_set_version,
        deps=[features_key],
        automation_condition=follows_upstream(),
        kinds={"duckdb", "redis", "sqlite"},
        tags=tags,
        op_tags=plan.steps["publishing"].op_tags(f"{name}_online_features"),
        retry_policy=plan.steps["publishing"].retry_policy,
    )
    @retry_only_transient
    def online_asset(
        context: dg.AssetExecutionContext, warehouse: Warehouse, online_store: OnlineFeatureStore
    ):
        _, closed_day = partition_days(context)
        with warehouse.connect() as connection:
            frame = connection.execute(
                f"select {', '.join(columns)} from {feature_table} where {spec.day_column} = ?", [closed_day]
            ).df()
        if frame.empty:
            raise dg.Failure(f"{feature_table} has no rows for {closed_day}", allow_retries=False)
        if nulls := [column for column in columns if frame[column].isna().any()]:
            # The store reads a missing value as "unknown entity": a feature served must have a value.
            raise dg.Failure(
                f"{feature_table} has nulls on {closed_day} in {nulls}: nothing was published",
                allow_retries=False,
            )
        store = online_store.open(endpoint.view())
        try:
            publication = store.publish(closed_day, {endpoint.entity: frame.astype({endpoint.key: "int64"})})
        finally:
            store.close()
        if not publication.published:
            context.log.warning(
                f"not published: the store holds {publication.current.closed_day}, newer than {closed_day}"
            )
        return dg.MaterializeResult(
            metadata={
                **recorded(context),
                "closed_day": closed_day.isoformat(),
                "serves_requests_of": (closed_day + timedelta(days=1)).isoformat(),
                "published": publication.published,
                "store": store.uri,
                "store_holds": publication.current.closed_day.isoformat(),
                "snapshot_version": publication.current.version,
                "entities": len(frame),
                "feature_set_version": spec.feature_set_version,
            }
        )

    @dg.asset(
        key=key(name, "bento"),
        group_name=name,
        description=f"{name}'s prediction endpoint (serving/predictor.py) with the model in production: "
        f"a Bento {name}_<namespace>:<model version>-<code digest>, and its archive in the lake. POST "
        f'/predict with {{"{endpoint.key}": ...}} answers {endpoint.response}.',
        deps=[production_key],
        # Also after a promotion outside a run (`keel models promote`), when the daemon runs.
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"bentoml"},
        tags=tags,
        op_tags=plan.steps["publishing"].op_tags(f"{name}_bento"),
        retry_policy=plan.steps["publishing"].retry_policy,
    )
    @retry_only_transient
    def bento_asset(
        context: dg.AssetExecutionContext, registry: ModelRegistry, lake: Lake, namespace: Namespace
    ):
        models = plan.registry_of(registry)
        champion = plan.champion(models)
        bento = bentos.bento_name(namespace.name, name)
        return build_and_archive(context, models, lake, champion, bento, bentos.PREDICTOR_BENTOFILE)

    log_table = f"{name}_prediction_log"
    # The day's data having arrived is the sign that the day is over (its first daily input, that day
    # only): what was served on it is complete.
    daily_reads = [dg.AssetKey.from_user_string(r.asset) for r in spec.reads if r.lookback_days is not None]
    day_over = daily_reads[0] if daily_reads else features_key

    @dg.asset(
        key=key(name, "prediction_log"),
        group_name=name,
        description=f"Every answer {name}'s endpoint gave on the day (the key, {endpoint.response}, "
        "the model version, the snapshot's day, whether the entity was new), compacted from the files the "
        f"endpoint writes to the lake's spool into the lake table {log_table}. Re-runnable.",
        metadata=stored_in_lake(log_table),
        partitions_def=daily_partitions,
        backfill_policy=one_run_per_backfill,
        deps=[day_over],
        automation_condition=follows_upstream(),
        freshness_policy=plan.freshness,
        kinds={"parquet"},
        # Not a step of keel_pipeline (no pipeline tag): a day nobody was served has nothing to collect.
        op_tags=plan.steps["publishing"].op_tags(f"{name}_prediction_log"),
        retry_policy=plan.steps["publishing"].retry_policy,
    )
    @retry_only_transient
    def prediction_log_asset(context: dg.AssetExecutionContext, lake: Lake):
        return prediction_logs.compact(
            context, lake, f"{SPOOL}/{name}", log_table, ["scored_at", endpoint.key]
        )

    return [online_asset, bento_asset, prediction_log_asset]
