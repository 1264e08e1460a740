"""The landing sensor: each file that lands is ingested once, into its day's partition.

Which assets a file feeds is declared by the sources (``keel.Source``): each lake asset of a feed is
tagged ``keel/feed: <feed>``, and the sensor reads those tags from the code location, so a new
source folder needs nothing here.

A file is new until its lake partition has been materialized after the file was written, by any
route (this sensor, a backfill, `make demo`). Its run key is its path and modification time: the
same file is never launched twice (run keys survive daemon restarts), and a file delivered again
(a corrected extract) is a new arrival and is ingested again, replacing its partition. The cursor,
kept by the Dagster instance, is the newest modification time handled; each tick looks a little
further back than that,
because a file can appear in a listing after newer ones (an upload that took longer), and the run
keys make looking twice harmless.
"""

import json

import dagster as dg

from platform_assets.components.source import FEED_TAG, QUARANTINE_TAG
from platform_assets.defs.jobs import ingest_day, ingest_reference
from resources.alerts import Alert, Alerts
from resources.sources import LandedFile, LandingZone

LATE_ARRIVAL_SECONDS = 300
LANDED_FILE_TAG = "keel/landed_file"


def feed_assets(repository: dg.RepositoryDefinition) -> dict[str, list[dg.AssetKey]]:
    """Feed -> the lake assets one landed file of it materializes (the table first, then its
    quarantine), as the sources declared them."""
    tables, quarantines = {}, {}
    for assets in repository.assets_defs_by_key.values():
        for spec in assets.specs:
            if (feed := spec.tags.get(FEED_TAG)) is not None:
                tables[feed] = spec.key
            if (feed := spec.tags.get(QUARANTINE_TAG)) is not None:
                quarantines[feed] = spec.key
    return {
        feed: [key, *([quarantines[feed]] if feed in quarantines else [])] for feed, key in tables.items()
    }


def _ingested_after(
    instance: dg.DagsterInstance, files: list[LandedFile], feeds: dict[str, list[dg.AssetKey]]
) -> set[str]:
    """The paths among ``files`` whose lake partition was materialized after the file was written,
    by whatever route (this sensor, a backfill, `make demo`): those are ingested already."""
    ingested = set()
    for feed in {f.feed for f in files}:
        of_feed = [f for f in files if f.feed == feed]
        records_filter = dg.AssetRecordsFilter(
            asset_key=feeds[feed][0], after_timestamp=min(f.modified for f in of_feed)
        )
        newest: dict[str | None, float] = {}
        cursor, has_more = None, True
        while has_more:
            page = instance.fetch_materializations(records_filter, limit=1_000, cursor=cursor)
            for record in page.records:
                newest[record.partition_key] = max(newest.get(record.partition_key, 0.0), record.timestamp)
            cursor, has_more = page.cursor, page.has_more
        for f in of_feed:
            if newest.get(f.day.isoformat() if f.day else None, 0.0) > f.modified:
                ingested.add(f.path)
    return ingested


def run_request(landed: LandedFile, assets: list[dg.AssetKey]) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=landed.identity,
        job_name=(ingest_day if landed.day else ingest_reference).name,
        asset_selection=assets,
        partition_key=landed.day.isoformat() if landed.day else None,
        tags={LANDED_FILE_TAG: landed.path},
    )


@dg.sensor(
    jobs=[ingest_day, ingest_reference],
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Ingests every file that lands in the lake's landing zone into its lake table and day "
    "(contract and quarantine); the warehouse, features and monitoring follow by automation.",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone, alerts: Alerts):
    cursor = json.loads(context.cursor) if context.cursor else {"newest": 0.0}
    feeds = feed_assets(context.repository_def)
    landed, strays = landing.landed()
    # A file of a feed no source declares is left where it is, and said, like a file off the layout.
    strays |= {f.path: f.modified for f in landed if f.feed not in feeds}
    landed = [f for f in landed if f.feed in feeds]
    since = cursor["newest"] - LATE_ARRIVAL_SECONDS
    recent = [f for f in landed if f.modified >= since]
    done = _ingested_after(context.instance, recent, feeds) if recent else set()
    new = [f for f in recent if f.path not in done]
    for path, modified in strays.items():
        if modified > cursor["newest"]:
            # Not ingested and not deleted: someone must move it to where the layout says.
            message = (
                f"{landing.lake.uri}/{path} is not a file of a declared feed in the landing layout "
                f"({', '.join(sorted(feeds))} as <feed>/<feed>.parquet or "
                "<feed>/date=YYYY-MM-DD/<feed>.parquet); it is left where it is"
            )
            context.log.warning(message)
            alerts.send(Alert(title="unexpected file in the landing zone", text=message, severity="warning"))
    newest = max([cursor["newest"], *(f.modified for f in landed), *strays.values()])
    return dg.SensorResult(
        run_requests=[run_request(f, feeds[f.feed]) for f in new],
        cursor=json.dumps({"newest": newest}),
        skip_reason=None if new else dg.SkipReason(f"nothing new in {landing.lake.uri}/{landing.prefix}"),
    )
