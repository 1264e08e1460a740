"""The warehouse's housekeeping. A DuckLake keeps every snapshot, and every file a snapshot still
needs, until told otherwise: each re-run day leaves its old files behind. Weekly, snapshots older than
the retention are expired (time travel and `keel reproduce` reach back that far: 90 days by default,
a quarter of trainings) and the files no remaining snapshot needs are deleted a day after they were
let go. A DuckDB file keeps no history: the job says so and stops."""

import dagster as dg

from keel_core.warehouse_engine import expire_history
from platform_assets.steps import PUBLISHING, retry_only_transient
from resources.warehouse import Warehouse


class WarehouseHousekeeping(dg.Config):
    snapshot_retention_days: int = 90  # the oldest training `keel reproduce` can read as it was
    file_grace_days: int = 1  # a file let go is deleted this long after: readers of old snapshots finish


@dg.op(
    description="Expire the DuckLake's snapshots older than the retention, then delete the files no "
    "snapshot needs any more.",
    tags=PUBLISHING.op_tags("warehouse_housekeeping"),
    retry_policy=PUBLISHING.retry_policy,  # the catalog and S3 over the network
)
@retry_only_transient
def warehouse_housekeeping(
    context: dg.OpExecutionContext, config: WarehouseHousekeeping, warehouse: Warehouse
) -> dg.Output:
    if not warehouse.location.is_lake:
        said = f"{warehouse.location.describe()} is a DuckDB file: it keeps no history to expire"
        context.log.info(said)
        return dg.Output(None, metadata={"history": said})
    with warehouse.connect(read_only=False) as connection:
        done = expire_history(connection, config.snapshot_retention_days, config.file_grace_days)
    context.log.info(
        f"expired {done['expired_snapshots']} snapshots older than {config.snapshot_retention_days} days, "
        f"deleted {done['deleted_files']} files"
    )
    return dg.Output(done, metadata={**done, "snapshot_retention_days": config.snapshot_retention_days})


@dg.job(description="Weekly: the warehouse's old snapshots expired and the files they held deleted.")
def warehouse_maintenance():
    warehouse_housekeeping()


# Sunday night, when no day lands. Running from the first deploy: a DuckLake that is never cleaned
# grows by every re-run day's files.
weekly_warehouse_maintenance = dg.ScheduleDefinition(
    name="weekly_warehouse_maintenance",
    job=warehouse_maintenance,
    cron_schedule="0 3 * * 0",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
