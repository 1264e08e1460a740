"""Where an asset's value is stored, declared on the asset: what the notebook client reads.

``keel/lake_table`` (a lake table, by day if the asset is partitioned) or ``dagster/table_name`` (a
warehouse relation; with ``keel/partition_column``, by day). Any other asset's value is what its
materialization recorded.
"""

LAKE_TABLE = "keel/lake_table"
TABLE_NAME = "dagster/table_name"
PARTITION_COLUMN = "keel/partition_column"


def stored_in_lake(table: str) -> dict[str, str]:
    """Asset metadata: the value is the lake table ``table`` (one file per day if partitioned)."""
    return {LAKE_TABLE: table}


def stored_in_warehouse(relation: str, day_column: str | None = None) -> dict[str, str]:
    """Asset metadata: the value is the warehouse relation ``schema.table``, by ``day_column``."""
    return {TABLE_NAME: relation, **({PARTITION_COLUMN: day_column} if day_column else {})}
