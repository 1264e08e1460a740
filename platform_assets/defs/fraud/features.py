"""Features: the fraud model's inputs, one row per payment, computed in the warehouse by DuckDB.

The definitions and the SQL live in ``transaction_features`` (shared with the online service); this asset
runs them for a window of days, stores the result beside the dbt marts, and checks it.
"""

from datetime import timedelta

import dagster as dg
import pandas as pd

from platform_assets.automation import expected_every, follows_upstream
from platform_assets.defs.fraud import transaction_features as features
from platform_assets.partitions import daily_partitions, one_run_per_backfill, partition_days
from platform_assets.provenance import recorded
from platform_assets.steps import FEATURES, WAREHOUSE_POOL
from platform_assets.storage import stored_in_warehouse
from resources.warehouse import Warehouse

# Day D's features read the entity marts of days D-30 .. D-1 (windows close the day before) and
# only day D's own payments: the lineage says exactly which partitions a feature partition used.
CHUNK_DAYS = 31
FRESHNESS_HOURS = 26  # a day's payments arrive every day: a day and a bit without new features is late

_LOOKBACK = dg.TimeWindowPartitionMapping(
    start_offset=-features.LOOKBACK_DAYS, end_offset=-1, allow_nonexistent_upstream_partitions=True
)


@dg.asset(
    key=["features", "transaction_features"],
    group_name="features",
    metadata=stored_in_warehouse(features.FEATURE_TABLE, "transaction_date"),
    partitions_def=daily_partitions,
    backfill_policy=one_run_per_backfill,
    pool=WAREHOUSE_POOL,  # writes the warehouse's DuckDB file: one writer at a time
    code_version=features.FEATURE_SET_VERSION,
    deps=[
        dg.AssetDep(["warehouse", "transactions"]),
        dg.AssetDep(["warehouse", features.CUSTOMER_ACTIVITY], partition_mapping=_LOOKBACK),
        dg.AssetDep(["warehouse", features.TERMINAL_ACTIVITY], partition_mapping=_LOOKBACK),
        dg.AssetDep(["warehouse", features.TERMINAL_FRAUD_REPORTS], partition_mapping=_LOOKBACK),
    ],
    check_specs=[
        dg.AssetCheckSpec("matches_feature_schema", asset=["features", "transaction_features"], blocking=True)
    ],
    automation_condition=follows_upstream(),
    freshness_policy=expected_every(FRESHNESS_HOURS),
    kinds={"duckdb", "pandas"},
    op_tags=FEATURES.op_tags("transaction_features"),
)
def transaction_features(context: dg.AssetExecutionContext, warehouse: Warehouse):
    """One row per payment: its request features (amount, weekend, night) and its customer's and
    terminal's windows over the 1, 7 and 30 days before its day, using only fraud reports known by
    then. Table ``ml.transaction_features`` in the warehouse."""
    import pandera.errors  # here: pandera costs ~0.2 s to import, and only this step validates

    first, last = partition_days(context)
    rows, days, new_customers, new_terminals, failures, preview = 0, 0, 0, 0, [], None
    # A backfill is computed, stored and checked a month at a time: memory stays that of a month
    # whatever the window (at once, a year of rows was held twice in pandas).
    for start in pd.date_range(first, last, freq=f"{CHUNK_DAYS}D").date:
        end = min(start + timedelta(days=CHUNK_DAYS - 1), last)
        with warehouse.connect() as connection:
            table = features.transaction_features(connection, start, end)
        warehouse.replace_days(features.FEATURE_TABLE, "transaction_date", start, end, table)
        del table
        with warehouse.connect() as connection:  # check what was stored, not what was meant
            stored = connection.execute(
                f"select * from {features.FEATURE_TABLE} "
                "where transaction_date between ? and ? order by transaction_id",
                [start, end],
            ).df()
        try:
            features.feature_table_schema().validate(stored, lazy=True)
        except pandera.errors.SchemaErrors as errors:
            failures.append(errors.failure_cases[["column", "check", "failure_case", "index"]])
        rows += len(stored)
        days += stored["transaction_date"].nunique()
        new_customers += int(stored["customer_is_new"].sum())
        new_terminals += int(stored["terminal_is_new"].sum())
        preview = stored.head(5) if preview is None else preview

    if failures:
        failed = pd.concat(failures, ignore_index=True)
        check = dg.AssetCheckResult(
            passed=False,
            metadata={
                "rows_checked": rows,
                "failures": len(failed),
                "failure_cases": dg.MetadataValue.md(failed.head(20).to_markdown(index=False)),
            },
        )
    else:
        check = dg.AssetCheckResult(passed=True, metadata={"rows_checked": rows})

    metadata = {
        "table": features.FEATURE_TABLE,
        "window_rows": rows,
        "days": days,
        "feature_set_version": features.FEATURE_SET_VERSION,
        "new_customer_share": new_customers / rows if rows else 0.0,
        "new_terminal_share": new_terminals / rows if rows else 0.0,
        "features": dg.MetadataValue.md(
            "| feature | dtype | default (unseen entity) | meaning |\n|---|---|---|---|\n"
            + "\n".join(
                f"| {f.name} | {f.dtype} | {f.default} | {f.description} |" for f in features.FEATURES
            )
        ),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False)),
    }
    if first == last:
        metadata["dagster/row_count"] = rows
    yield dg.MaterializeResult(metadata={**recorded(context), **metadata})
    yield check
