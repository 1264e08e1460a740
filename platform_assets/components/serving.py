"""A use case's serving, when its spec declares it: the online features of the day published to the
online store, the service packed as a Bento with the production model, and what it answered,
collected day by day into the lake.

The service is the platform's prediction endpoint (``serving/predictor.py``: one entity, its features
the day's feature rows, view ``<name>``), or the folder's own (its bentofile; the online features of
its entities computed by its snapshot function, as its view)."""

from datetime import timedelta

import dagster as dg

from platform_assets import prediction_logs
from platform_assets.automation import follows_upstream
from platform_assets.bentos import build_and_archive
from platform_assets.components.plan import Plan, key, read_deps
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

    spec, name, endpoint, serving, tags = plan.spec, plan.name, plan.endpoint, plan.serving, plan.tags
    features_key, production_key = plan.features_key, plan.production_key
    view = serving.view
    entities = " and ".join(entity.name for entity in view.entities)
    if serving.snapshot is None:
        # The platform's endpoint: the day's feature rows of its one entity.
        snapshot_deps = [features_key]
        reads = "the day's feature rows"
    else:
        snapshot_deps = read_deps(serving.snapshot_reads)
        reads = f"{spec.serving.snapshot.function} of the folder"

    @dg.asset(
        key=key(name, "online_features"),
        group_name=name,
        description=f"The {name} features of every {entities} as of the close of the day ({reads}), "
        f"published to the online store (view {view.name}) for {serving.service} to use all the next day. "
        "The store only moves forward: an older day than it holds is not published (and says so); for a "
        "range, the last day is.",
        partitions_def=daily_partitions,
        backfill_policy=one_run_per_backfill,
        pool=WAREHOUSE_POOL,
        code_version=spec.feature_set_version,
        deps=snapshot_deps,
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
            frames = (
                _feature_rows(plan, connection, closed_day)
                if serving.snapshot is None
                else _snapshot(plan, connection, closed_day)
            )
        store = online_store.open(view)
        try:
            publication = store.publish(closed_day, frames)
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
                **{f"{entity}_rows": len(frame) for entity, frame in frames.items()},
                "feature_set_version": spec.feature_set_version,
            }
        )

    @dg.asset(
        key=key(name, "bento"),
        group_name=name,
        description=f"{serving.service} ({serving.bentofile.name}) with the {name} model in production: a "
        f"Bento {serving.service}_<namespace>:<model version>-<code digest>, and its archive in the lake"
        + (
            f'. POST /predict with {{"{endpoint.key}": ...}} answers {endpoint.response}.'
            if endpoint
            else "."
        ),
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
        bento = bentos.bento_name(namespace.name, serving.service)
        return build_and_archive(context, models, lake, champion, bento, serving.bentofile)

    log_table = serving.log_table
    # The day's data having arrived is the sign that the day is over (its first daily input, that day
    # only): what was served on it is complete.
    daily_reads = [dg.AssetKey.from_user_string(r.asset) for r in spec.reads if r.lookback_days is not None]
    day_over = daily_reads[0] if daily_reads else features_key

    @dg.asset(
        key=key(name, "prediction_log"),
        group_name=name,
        description=f"Every answer {serving.service} gave on the day (what it was asked, its answer, the "
        "model version, the snapshot's day, whether an entity was new), compacted from the files the service "
        f"writes to the lake's spool ({serving.spool}) into the lake table {log_table}. Re-runnable.",
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
        return prediction_logs.compact(context, lake, serving.spool, log_table, ["scored_at", *spec.entity])

    return [online_asset, bento_asset, prediction_log_asset]


def _feature_rows(plan: Plan, connection, closed_day) -> dict:
    """The platform endpoint's snapshot: the day's feature rows of its entity."""
    endpoint = plan.endpoint
    columns = [endpoint.key, *endpoint.features]
    frame = connection.execute(
        f"select {', '.join(columns)} from {plan.feature_table} where {plan.spec.day_column} = ?",
        [closed_day],
    ).df()
    if frame.empty:
        raise dg.Failure(f"{plan.feature_table} has no rows for {closed_day}", allow_retries=False)
    if nulls := [column for column in columns if frame[column].isna().any()]:
        # The store reads a missing value as "unknown entity": a feature served must have a value.
        raise dg.Failure(
            f"{plan.feature_table} has nulls on {closed_day} in {nulls}: nothing was published",
            allow_retries=False,
        )
    return {endpoint.entity: frame.astype({endpoint.key: "int64"})}


def _snapshot(plan: Plan, connection, closed_day) -> dict:
    """The folder's snapshot of its entities as of ``closed_day``, each frame against its schema:
    nothing is published unless every entity's frame is what the view serves."""
    import pandera.errors  # here: pandera costs ~0.2 s to import, and only this step validates

    serving = plan.serving
    frames = serving.snapshot(connection, closed_day)
    expected = {entity.name: [entity.key, *entity.features] for entity in serving.view.entities}
    if set(frames) != set(expected):
        raise dg.Failure(
            f"the snapshot of {closed_day} gives the entities {sorted(frames)}; the view {serving.view.name} "
            f"serves {sorted(expected)}: nothing was published",
            allow_retries=False,
        )
    failures = []
    for entity, frame in frames.items():
        if missing := sorted(set(expected[entity]) - set(frame.columns)):
            failures.append(f"{entity}: no columns {missing}")
        elif nulls := [c for c in expected[entity] if frame[c].isna().any()]:
            failures.append(f"{entity}: nulls in {nulls}")  # read as "unknown entity" by the store
        elif serving.snapshot_schema is not None:
            try:
                serving.snapshot_schema(entity).validate(frame, lazy=True)
            except pandera.errors.SchemaErrors as errors:
                cases = errors.failure_cases[["column", "check", "failure_case"]].head(5)
                failures.append(f"{entity}: {cases.to_dict('records')}")
    if failures:
        raise dg.Failure(
            f"the snapshot of {closed_day} breaks its contract, nothing was published: {'; '.join(failures)}",
            allow_retries=False,
        )
    return {entity: frame[expected[entity]] for entity, frame in frames.items()}
