"""The fraud use case's jobs: retraining without re-ingesting, and compacting the scorer's prediction log."""

import dagster as dg

from platform_assets.defs.fraud.serving import PREDICTION_LOG
from platform_assets.partitions import daily_partitions
from platform_assets.steps import INGESTION_RUNS, TRAINING_RUNS

# Built on every promotion, whichever job promoted.
BENTO = dg.AssetSelection.assets(["serving", "fraud_scorer_bento"])

train_and_promote = dg.define_asset_job(
    "train_and_promote",
    selection=dg.AssetSelection.groups("models") | BENTO,
    tags=TRAINING_RUNS,
    description="Train a challenger on the features already in the warehouse, judge it against the "
    "champion, promote it if the gate approves and build its Bento: retraining without re-ingesting.",
)

collect_prediction_log = dg.define_asset_job(
    "collect_prediction_log",
    selection=dg.AssetSelection.assets(["serving", PREDICTION_LOG]),
    partitions_def=daily_partitions,
    tags=INGESTION_RUNS,
    description="Compact the scoring service's prediction files of a day into the lake table prediction_log.",
)
