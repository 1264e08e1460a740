"""The landing sensor: each file that lands is ingested once, into its day's partition.

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

from platform_assets.defs.jobs import ingest_day, ingest_reference
from platform_assets.defs.lake.assets import (
    CUSTOMERS,
    QUARANTINED_FRAUD_LABELS,
    QUARANTINED_TRANSACTIONS,
    RAW_FRAUD_LABELS,
    RAW_TRANSACTIONS,
    TERMINALS,
)
from resources.alerts import Alert, Alerts
from resources.sources import LandedFile, LandingZone

LATE_ARRIVAL_SECONDS = 300
LANDED_FILE_TAG = "keel/landed_file"

FEED_ASSETS = {
    "customers": [CUSTOMERS],
    "terminals": [TERMINALS],
    "transactions": [RAW_TRANSACTIONS, QUARANTINED_TRANSACTIONS],
    "fraud_labels": [RAW_FRAUD_LABELS, QUARANTINED_FRAUD_LABELS],
}


def _ingested_after(instance: dg.DagsterInstance, files: list[LandedFile]) -> set[str]:
    """The paths among ``files`` whose lake partition was materialized after the file was written,
    by whatever route (this sensor, a backfill, `make demo`): those are ingested already."""
    ingested = set()
    for feed in {f.feed for f in files}:
        of_feed = [f for f in files if f.feed == feed]
        records_filter = dg.AssetRecordsFilter(
            asset_key=FEED_ASSETS[feed][0], after_timestamp=min(f.modified for f in of_feed)
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


def run_request(landed: LandedFile) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=landed.identity,
        job_name=(ingest_day if landed.day else ingest_reference).name,
        asset_selection=FEED_ASSETS[landed.feed],
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
    landed, strays = landing.landed()
    since = cursor["newest"] - LATE_ARRIVAL_SECONDS
    recent = [f for f in landed if f.modified >= since]
    done = _ingested_after(context.instance, recent) if recent else set()
    new = [f for f in recent if f.path not in done]
    for path, modified in strays.items():
        if modified > cursor["newest"]:
            # Not ingested and not deleted: someone must move it to where the layout says.
            message = (
                f"{landing.lake.uri}/{path} does not follow the landing layout "
                "(<feed>/<feed>.parquet or <feed>/date=YYYY-MM-DD/<feed>.parquet); it is left where it is"
            )
            context.log.warning(message)
            alerts.send(Alert(title="unexpected file in the landing zone", text=message, severity="warning"))
    newest = max([cursor["newest"], *(f.modified for f in landed), *strays.values()])
    return dg.SensorResult(
        run_requests=[run_request(f) for f in new],
        cursor=json.dumps({"newest": newest}),
        skip_reason=None if new else dg.SkipReason(f"nothing new in {landing.lake.uri}/{landing.prefix}"),
    )
