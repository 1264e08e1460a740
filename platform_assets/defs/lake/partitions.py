"""The daily partitions shared by every layer (lake, warehouse, and the layers built on them)."""

from datetime import date, timedelta

import dagster as dg

from keel.simulator import WORLD_START
from resources.environments import platform_time_zone

# History starts when the reference source's world starts; the last partition is yesterday. Days are
# the platform's (KEEL_TIME_ZONE): a day's partition exists once that day has ended there.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=WORLD_START.isoformat(), timezone=platform_time_zone()
)

# A backfill of many days runs as one run per asset (the lake loops over its days, dbt builds
# the whole window in one invocation) instead of one run per day.
one_run_per_backfill = dg.BackfillPolicy.single_run()


def partition_days(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """The first and last day (inclusive) of the partitions a run covers, one day or a backfill range."""
    window = context.partition_time_window
    return window.start.date(), (window.end - timedelta(days=1)).date()
