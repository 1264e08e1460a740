"""The code location: loads, shows one lineage graph, stays light to import."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from platform_assets.defs.lake.partitions import daily_partitions


def test_lake_and_warehouse_form_one_lineage_graph(definitions):
    graph = definitions.resolve_asset_graph()
    upstream_of_staging = graph.get(dg.AssetKey(["warehouse", "stg_lake__transactions"])).parent_keys
    assert dg.AssetKey(["lake", "raw_transactions"]) in upstream_of_staging
    upstream_of_mart = graph.get(dg.AssetKey(["warehouse", "transactions"])).parent_keys
    assert dg.AssetKey(["warehouse", "stg_lake__transactions"]) in upstream_of_mart


def test_daily_assets_share_one_partitions_definition(definitions):
    graph = definitions.resolve_asset_graph()
    for key in (
        ["lake", "raw_transactions"],
        ["lake", "raw_fraud_labels"],
        ["warehouse", "transactions"],
        ["warehouse", "terminal_daily_fraud_reports"],
    ):
        assert graph.get(dg.AssetKey(key)).partitions_def == daily_partitions, key
    assert graph.get(dg.AssetKey(["warehouse", "customers"])).partitions_def is None


def test_each_layer_is_its_own_asset_group(definitions):
    groups = {node.key.path[0]: node.group_name for node in definitions.resolve_asset_graph().asset_nodes}
    assert groups == {"lake": "lake", "warehouse": "warehouse"}


def test_dg_check_defs_passes(keel_state):
    check = subprocess.run(
        [Path(sys.executable).with_name("dg"), "check", "defs"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr


def test_loading_the_code_location_imports_no_heavy_library(keel_state):
    probe = (
        "import sys; from platform_assets.definitions import defs; defs(); "
        "print(','.join(m for m in ('evidently', 'bentoml', 'sklearn.ensemble') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""


def test_a_ui_backfill_of_some_days_targets_those_days_of_every_daily_asset(definitions):
    """What the webserver computes when someone backfills days from the UI, over the whole graph.

    Uses the target computation the webserver uses (dagster internals: kept to this one test).
    """
    from dagster._core.execution.asset_backfill import AssetBackfillData

    graph = definitions.resolve_asset_graph()
    days = ["2026-02-01", "2026-02-02", "2026-02-03"]
    with dg.instance_for_test() as instance:
        target = AssetBackfillData.from_asset_partitions(
            asset_graph=graph,
            partition_names=days,
            asset_selection=[node.key for node in graph.asset_nodes],
            dynamic_partitions_store=instance,
            backfill_start_timestamp=1_800_000_000,  # 2027-01-15: every partition above exists
            all_partitions=False,
        ).target_subset
    daily = {node.key for node in graph.asset_nodes if node.partitions_def == daily_partitions}
    assert set(target.partitions_subsets_by_asset_key) == daily
    for key in daily:
        assert sorted(target.get_partitions_subset(key).get_partition_keys()) == days, key
    assert dg.AssetKey(["warehouse", "customers"]) in target.non_partitioned_asset_keys
