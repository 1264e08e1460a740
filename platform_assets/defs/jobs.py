"""Keel's jobs: the whole pipeline for a window of days (``make demo`` runs it), ingestion of what
lands (the landing sensor) and delivery from the source system (the fallback schedule). A use
case's own jobs are in its folder (retraining, for instance)."""

from datetime import date

import dagster as dg

from platform_assets.components.plan import PIPELINE_TAG
from platform_assets.components.source import INGESTS_TAG
from platform_assets.partitions import daily_partitions
from platform_assets.steps import (
    INGESTION,
    INGESTION_RUNS,
    WAREHOUSE_RUNS,
    retry_only_transient,
)
from resources.sources import LandingZone, SourceSystem

keel_pipeline = dg.define_asset_job(
    "keel_pipeline",
    # Every source and the warehouse, then every use case's lifecycle (keel.UseCase tags its assets;
    # the monitoring ones and the prediction logs are not: they judge or collect days already served).
    selection=dg.AssetSelection.groups("lake", "warehouse") | dg.AssetSelection.tag(PIPELINE_TAG, "true"),
    partitions_def=daily_partitions,
    tags=WAREHOUSE_RUNS,
    description="The whole lifecycle for a range of days, in one run: ingest the sources into the lake "
    "(contract + quarantine), build the dbt warehouse, and for every use case its features, a "
    "challenger trained and put through the promotion gate, the range scored by the model in "
    "production, the last day's online features and its service's Bento.",
)

ingest_day = dg.define_asset_job(
    "ingest_day",
    selection=dg.AssetSelection.tag(INGESTS_TAG, "daily"),
    tags=INGESTION_RUNS,
    description="Ingest a day's landed file of a daily feed into the lake (the landing sensor runs it).",
)

ingest_reference = dg.define_asset_job(
    "ingest_reference",
    selection=dg.AssetSelection.tag(INGESTS_TAG, "reference"),
    tags=INGESTION_RUNS,
    description="Ingest a landed reference table into the lake (the landing sensor runs it).",
)


@dg.op(
    description="Ask the source system for the day's extract of each of its daily feeds, and land them.",
    tags=INGESTION.op_tags("deliver_day"),
    retry_policy=INGESTION.retry_policy,
)
@retry_only_transient
def deliver_day(context: dg.OpExecutionContext, landing: LandingZone, upstream: SourceSystem) -> None:
    day = date.fromisoformat(context.partition_key)
    for path in landing.deliver_day(upstream, day):
        context.log.info(f"landed {path}")


@dg.job(partitions_def=daily_partitions, tags=INGESTION_RUNS)
def fetch_from_source():
    """Pull a day from the source system into the landing zone; the landing sensor ingests it."""
    deliver_day()


# For sources that do not deliver by themselves: every morning, fetch yesterday. Stopped by
# default: the simulator delivers when asked (`keel land`), a production feed by itself.
daily_fetch = dg.build_schedule_from_partitioned_job(fetch_from_source, hour_of_day=1, minute_of_hour=0)
