"""Keel's jobs: the whole pipeline for a window of days (``make demo`` runs it), and retraining."""

import dagster as dg

from platform_assets.defs.lake.partitions import daily_partitions
from platform_assets.defs.serving.assets import PREDICTION_LOG

# Built on every promotion, whichever job promoted.
BENTO = dg.AssetSelection.assets(["serving", "fraud_scorer_bento"])

keel_pipeline = dg.define_asset_job(
    "keel_pipeline",
    selection=dg.AssetSelection.groups("lake", "warehouse", "features", "models", "scores", "serving")
    - dg.AssetSelection.assets(["serving", PREDICTION_LOG]),
    partitions_def=daily_partitions,
    description="The whole lifecycle for a range of days, in one run: ingest the source into the lake "
    "(contract + quarantine), build the dbt warehouse and the features, train a challenger, put it "
    "through the promotion gate, score the range with the model in production, publish the last "
    "day's online features and build the scoring service's Bento.",
)

train_and_promote = dg.define_asset_job(
    "train_and_promote",
    selection=dg.AssetSelection.groups("models") | BENTO,
    description="Train a challenger on the features already in the warehouse, judge it against the "
    "champion, promote it if the gate approves and build its Bento: retraining without re-ingesting.",
)

collect_prediction_log = dg.define_asset_job(
    "collect_prediction_log",
    selection=dg.AssetSelection.assets(["serving", PREDICTION_LOG]),
    partitions_def=daily_partitions,
    description="Compact the scoring service's prediction files of a day into the lake table prediction_log.",
)
