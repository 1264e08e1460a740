"""Warehouse: the dbt project (DuckDB), as assets downstream of the lake.

Models tagged ``daily`` in dbt (everything built from the daily lake tables: the staging views
over them, the intermediate view, the incremental marts) are daily-partitioned like the lake, so
that a backfill flows from lake to marts; a backfill of any range runs dbt once, with the range in
the environment (KEEL_MIN_DATE, KEEL_MAX_DATE; views ignore it). Reference-table models are not
partitioned and are rebuilt whole. dbt tests become asset checks on the models they test.
"""

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, dbt_assets
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from keel_core.warehouse_engine import CONFLICT, FAILED_COMMIT, ConflictingCommit, is_initializing_race
from platform_assets.automation import follows_upstream
from platform_assets.partitions import daily_partitions, one_run_per_backfill, partition_days
from platform_assets.provenance import with_provenance
from platform_assets.steps import WAREHOUSE, WAREHOUSE_POOL, retry_only_transient
from resources.dbt import DbtCli, dbt_project
from resources.namespace import Namespace

DAILY_MODELS = "tag:daily"


PARTIAL_PARSE = "partial_parse.msgpack"


class WarehouseTranslator(DagsterDbtTranslator):
    """dbt models become ``warehouse/<model>``; sources keep ``<source>/<table>``, which is where
    the lake assets live (``lake/raw_transactions``), so lake and warehouse are one graph."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        return dg.AssetKey(["warehouse", dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return "warehouse"

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition:
        # Every model follows the lake: a landed and ingested day flows on through dbt by itself.
        return follows_upstream()


translator = WarehouseTranslator()


def _last_parse(namespace: Namespace) -> Path:
    """Where the namespace's last dbt invocation left its parse, for the next one to start from.

    dagster-dbt's own copy of the prepared parse looks in $DBT_TARGET_PATH or dbt_project/target/,
    never in the DbtProject's target_path; and the prepared parse was made without --target and
    with the profile of the shell that prepared it (its DuckDB file): dbt parsed the whole project
    at every invocation. The last invocation's parse was made with this namespace's profile and
    target. dbt checks on load that the files, profile, target and vars are still the same, and
    parses again otherwise, so a stale one costs only the parse."""
    return dbt_project.target_path / "last_parse" / f"{namespace.environment}-{namespace.name}.msgpack"


def _target_path(context: dg.AssetExecutionContext, last_parse: Path) -> Path:
    """A fresh dbt target folder per invocation under .keel/ (dagster-dbt would use the project's
    target/), starting from the last parse, else the prepared one (a fresh pod has only that)."""
    path = dbt_project.target_path / f"{context.op_execution_context.op.name}-{context.run.run_id[:8]}"
    path.mkdir(parents=True, exist_ok=True)
    seed = last_parse if last_parse.exists() else dbt_project.target_path / PARTIAL_PARSE
    if seed.exists():
        shutil.copyfile(seed, path / PARTIAL_PARSE)
    return path


def _keep_parse(target_path: Path, last_parse: Path) -> None:
    parse = target_path / PARTIAL_PARSE
    if parse.exists():
        last_parse.parent.mkdir(parents=True, exist_ok=True)
        # Replaced whole, never written in place: another run may be copying it.
        partial = last_parse.with_name(f"{target_path.name}.tmp")
        shutil.copyfile(parse, partial)
        os.replace(partial, last_parse)


def _dbt_build(
    context: dg.AssetExecutionContext,
    dbt: DbtCli,
    namespace: Namespace,
    environment: Mapping[str, str],
):
    last_parse = _last_parse(namespace)
    target_path = _target_path(context, last_parse)
    build = dbt.cli(["build"], context=context, target_path=target_path, env=environment)
    try:
        for event in build.stream():
            yield with_provenance(context, event)
    except DagsterDbtCliRuntimeError as error:
        if _lost_to_another_run(str(error)):  # the retry policy's to cure, with backoff
            raise ConflictingCommit(f"dbt's commit lost to another writer's: {error}") from error
        # A failed model or test fails the same way again: no retry (dagster-dbt's error allows them).
        raise dg.Failure(description=str(error), allow_retries=False) from error
    finally:
        _keep_parse(target_path, last_parse)  # valid whether or not the build passed


def _lost_to_another_run(message: str) -> bool:
    """Whether dbt failed because another run wrote the same DuckLake at the same time. Every daily
    run replaces the staging views, and two runs doing so at once fail in three ways, all seen here
    (DuckLake 0.3): a commit that lost ("Transaction conflict"), a commit DuckLake could not check
    ("Failed to commit DuckLake transaction. Failed to parse catalog entry - trailing data after quoted
    value"), and dbt's renames of its temporary relations crossing ("Cannot rename view
    stg_lake__transactions to stg_lake__transactions__dbt_backup, since stg_lake__transactions already
    exists"). A namespace's first two runs at once also race to create its metadata schema. Done again
    a moment later, the build succeeds; a failure that persists ends the retries."""
    crossed_renames = "__dbt_" in message and ("already exists" in message or "does not exist" in message)
    return CONFLICT in message or FAILED_COMMIT in message or crossed_renames or is_initializing_race(message)


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    exclude=DAILY_MODELS,
    dagster_dbt_translator=translator,
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE.op_tags("warehouse_models"),
    retry_policy=WAREHOUSE.retry_policy,
)
@retry_only_transient
def warehouse_models(context: dg.AssetExecutionContext, dbt: DbtCli, namespace: Namespace):
    yield from _dbt_build(context, dbt, namespace, {})


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select=DAILY_MODELS,
    dagster_dbt_translator=translator,
    partitions_def=daily_partitions,
    backfill_policy=one_run_per_backfill,
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE.op_tags("warehouse_daily_models"),
    retry_policy=WAREHOUSE.retry_policy,
)
@retry_only_transient
def warehouse_daily_models(context: dg.AssetExecutionContext, dbt: DbtCli, namespace: Namespace):
    first, last = partition_days(context)
    # The window goes in dbt's environment, not in --vars: dbt re-parses the whole project whenever
    # the vars differ from its saved parse's, as every new day's would (see partition_window.sql).
    context.log.info(f"dbt builds the days {first} to {last} (KEEL_MIN_DATE, KEEL_MAX_DATE)")
    window = {"KEEL_MIN_DATE": first.isoformat(), "KEEL_MAX_DATE": last.isoformat()}
    yield from _dbt_build(context, dbt, namespace, window)
