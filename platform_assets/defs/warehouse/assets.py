"""Warehouse: the dbt project (DuckDB), as assets downstream of the lake.

Models tagged ``daily`` in dbt (everything built from the daily lake tables: the staging views
over them, the intermediate view, the incremental marts) are daily-partitioned like the lake, so
that a backfill flows from lake to marts; a backfill of any range runs dbt once, with the range as
vars (views ignore the vars). Reference-table models are not partitioned and are rebuilt whole.
dbt tests become asset checks on the models they test.
"""

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from platform_assets.defs.automation import follows_upstream
from platform_assets.defs.lake.partitions import daily_partitions, one_run_per_backfill, partition_days
from platform_assets.defs.provenance import with_provenance
from platform_assets.defs.steps import WAREHOUSE
from resources.dbt import dbt_project

DAILY_MODELS = "tag:daily"

# Each dbt invocation locks the DuckDB file for writing: the two dbt steps share a pool of one
# so they never run at the same time (see deploy/local/dagster.yaml).
WAREHOUSE_POOL = "warehouse"


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


def _target_path(context: dg.AssetExecutionContext):
    """A fresh dbt target folder per invocation under .keel/ (dagster-dbt would use the project's target/)."""
    return dbt_project.target_path / f"{context.op_execution_context.op.name}-{context.run.run_id[:8]}"


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    exclude=DAILY_MODELS,
    dagster_dbt_translator=translator,
    pool=WAREHOUSE_POOL,
    op_tags=WAREHOUSE.op_tags("warehouse_models"),
    retry_policy=WAREHOUSE.retry_policy,
)
def warehouse_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    for event in dbt.cli(["build"], context=context, target_path=_target_path(context)).stream():
        yield with_provenance(context, event)


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
def warehouse_daily_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    first, last = partition_days(context)
    days = {"min_date": first.isoformat(), "max_date": last.isoformat()}  # inclusive, as the vars are
    build = dbt.cli(["build", "--vars", json.dumps(days)], context=context, target_path=_target_path(context))
    for event in build.stream():
        yield with_provenance(context, event)
