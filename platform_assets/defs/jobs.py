"""Keel's main job: the whole pipeline for a window of days (``make demo`` runs it)."""

import dagster as dg

from platform_assets.defs.lake.partitions import daily_partitions

keel_pipeline = dg.define_asset_job(
    "keel_pipeline",
    selection=dg.AssetSelection.groups("lake", "warehouse"),
    partitions_def=daily_partitions,
    description="Ingest the source into the lake (contract + quarantine) and build the dbt warehouse "
    "for a range of days. One run covers the whole range.",
)
