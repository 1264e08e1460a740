"""Keel's jobs: the whole pipeline for a window of days (``make demo`` runs it), and retraining."""

import dagster as dg

from platform_assets.defs.lake.partitions import daily_partitions

keel_pipeline = dg.define_asset_job(
    "keel_pipeline",
    selection=dg.AssetSelection.groups("lake", "warehouse", "features", "models", "scores"),
    partitions_def=daily_partitions,
    description="The whole lifecycle for a range of days, in one run: ingest the source into the lake "
    "(contract + quarantine), build the dbt warehouse and the features, train a challenger, put it "
    "through the promotion gate, and score the range with the model in production.",
)

train_and_promote = dg.define_asset_job(
    "train_and_promote",
    selection=dg.AssetSelection.groups("models"),
    description="Train a challenger on the features already in the warehouse, judge it against the "
    "champion, and promote it if the gate approves: retraining without re-ingesting anything.",
)
