"""The daily partitions shared by every layer (lake, warehouse, and the layers built on them)."""

from datetime import date, timedelta

import dagster as dg

from keel_core.settings import current

# The calendar is the deployment's (KEEL_CALENDAR_START, KEEL_CALENDAR_END, KEEL_TIME_ZONE;
# keel_core/settings.py): days are the platform's, and a day's partition exists once that day has
# ended there (and, for a calendar that ends, up to its last day).
_end = current().calendar_end
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=current().first_day.isoformat(),
    end_date=(_end + timedelta(days=1)).isoformat() if _end else None,
    timezone=current().time_zone,
)

# A backfill of many days runs as one run per asset (the lake loops over its days, dbt builds
# the whole window in one invocation) instead of one run per day.
one_run_per_backfill = dg.BackfillPolicy.single_run()


def run_last_day(context: dg.AssetExecutionContext) -> date | None:
    """The last day of the partitions the run was launched for (a day, or a range such as `keel
    demo`'s), or None for a run of no partition. An unpartitioned step of such a run (training,
    evaluation) works on those days, not on newer ones the warehouse may hold."""
    tags = context.run.tags
    last = tags.get("dagster/asset_partition_range_end") or tags.get("dagster/partition")
    return date.fromisoformat(last) if last else None


def partition_days(context: dg.AssetExecutionContext) -> tuple[date, date]:
    """The first and last day (inclusive) of the partitions a run covers, one day or a backfill range."""
    window = context.partition_time_window
    return window.start.date(), (window.end - timedelta(days=1)).date()
