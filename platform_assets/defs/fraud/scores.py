"""Scores: each day's payments scored by the model in production, in the lake and the warehouse."""

import time

import dagster as dg
import pandas as pd

from platform_assets.automation import follows_upstream
from platform_assets.defs.fraud import training
from platform_assets.defs.fraud import transaction_features as features
from platform_assets.defs.fraud.models import FEATURES, PRODUCTION_MODEL
from platform_assets.partitions import daily_partitions, one_run_per_backfill, partition_days
from platform_assets.provenance import recorded
from platform_assets.steps import SCORING, WAREHOUSE_POOL, retry_only_transient
from platform_assets.storage import stored_in_warehouse
from resources.lake import Lake
from resources.registry import ModelRegistry, RegistryError
from resources.warehouse import Warehouse

SCORES = "transaction_scores"  # lake table
SCORE_TABLE = f"ml.{SCORES}"  # warehouse table


@dg.asset(
    key=["scores", SCORES],
    group_name="scores",
    metadata=stored_in_warehouse(SCORE_TABLE, "transaction_date"),
    partitions_def=daily_partitions,
    backfill_policy=one_run_per_backfill,
    pool=WAREHOUSE_POOL,
    deps=[FEATURES, PRODUCTION_MODEL],
    # Each new day is scored when its features are; a promotion does not rescore the past.
    automation_condition=follows_upstream(ignore=PRODUCTION_MODEL),
    kinds={"scikit-learn", "duckdb", "parquet"},
    op_tags=SCORING.op_tags("transaction_scores"),
    retry_policy=SCORING.retry_policy,
)
@retry_only_transient
def transaction_scores(
    context: dg.AssetExecutionContext, warehouse: Warehouse, lake: Lake, registry: ModelRegistry
):
    """The production model's fraud probability for every payment of the day, with the model
    version that gave it. Lake table ``transaction_scores`` and warehouse table ``ml.transaction_scores``."""
    champion = registry.champion()
    if champion is None:
        raise RegistryError(
            f"no model in production in {registry.uri}: materialize models/production_model first"
        )
    started = time.monotonic()
    model = registry.load(champion.tag)
    first, last = partition_days(context)
    with warehouse.connect() as connection:
        features.require_days(connection, first, last)
        frame = connection.execute(
            f"select * from {features.FEATURE_TABLE} "
            "where transaction_date between ? and ? order by transaction_id",
            [first, last],
        ).df()
    scoring_started = time.monotonic()
    probabilities = training.fraud_scores(model, frame)
    scoring_seconds = time.monotonic() - scoring_started
    scores = pd.DataFrame(
        {
            "transaction_id": frame["transaction_id"],
            "transaction_date": frame["transaction_date"],
            "customer_id": frame["customer_id"],
            "terminal_id": frame["terminal_id"],
            "fraud_probability": probabilities,
            "model_version": champion.tag,
            "scored_at": pd.Timestamp.now(tz="UTC").tz_localize(None),
        }
    )
    for day, rows in scores.groupby(scores["transaction_date"].dt.date):
        lake.write_partition(SCORES, day, rows.reset_index(drop=True))
    warehouse.replace_days(SCORE_TABLE, "transaction_date", first, last, scores)
    elapsed = time.monotonic() - started

    metadata = {
        "model_version": champion.tag,
        "window_rows": len(scores),
        "rows_per_second": round(len(scores) / elapsed),
        "model_rows_per_second": round(len(scores) / scoring_seconds) if scoring_seconds else None,
        "seconds": round(elapsed, 3),
        "mean_fraud_probability": float(probabilities.mean()),
        "p99_fraud_probability": float(pd.Series(probabilities).quantile(0.99)),
        "lake_table": f"{lake.uri}/{SCORES}",
        "warehouse_table": SCORE_TABLE,
    }
    if first == last:
        metadata["dagster/row_count"] = len(scores)
    return dg.MaterializeResult(metadata={**recorded(context), **metadata})
