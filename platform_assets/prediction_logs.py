"""A day of a scoring service's prediction log, compacted into a lake table.

A service writes small Parquet files to the lake's spool (``keel_core.prediction_log``), one folder
per day; the day's collection asset reads them all once the day is over and writes one partition of
a lake table. Re-runnable: the files stay, and a prediction written twice (a retried flush) is kept
once, by its ``prediction_id``.
"""

import io

import dagster as dg
import pandas as pd

from keel_core.prediction_log import day_folder
from platform_assets.partitions import partition_days
from platform_assets.provenance import recorded
from resources.lake import Lake


def compact(
    context: dg.AssetExecutionContext, lake: Lake, spool: str, table: str, order: list[str]
) -> dg.MaterializeResult:
    """Each day of the run: the files under ``<spool>/date=<day>/`` into the lake table ``table``,
    sorted by ``order``. A day nothing was scored on is written empty and said so."""
    rows_per_day = {}
    for day in pd.date_range(*partition_days(context)).date:
        prefix = f"{spool}/{day_folder(day)}/"
        files = [f for f in lake.list_files(prefix) if not f.rsplit("/", 1)[-1].startswith(("_", "."))]
        if not files:
            context.log.warning(f"nothing was scored on {day}: no files under {lake.uri}/{prefix}")
            rows_per_day[day.isoformat()] = 0
            continue
        frame = pd.concat([pd.read_parquet(io.BytesIO(lake.read_file(f))) for f in files], ignore_index=True)
        if missing := sorted({"prediction_id", *order} - set(frame.columns)):
            raise dg.Failure(
                f"the prediction files of {day} under {lake.uri}/{prefix} lack the columns {missing}: "
                "the service writes a log this use case cannot compact",
                allow_retries=False,
            )
        logged = frame.drop_duplicates("prediction_id").sort_values(order)
        lake.write_partition(table, day, logged.reset_index(drop=True))
        rows_per_day[day.isoformat()] = len(logged)
    rows = sum(rows_per_day.values())
    return dg.MaterializeResult(
        metadata={
            **recorded(context),
            "rows": rows,
            "rows_per_day": dg.MetadataValue.json(rows_per_day),
            **({"dagster/row_count": rows} if len(rows_per_day) == 1 else {}),
            "lake_table": f"{lake.uri}/{table}",
        }
    )
