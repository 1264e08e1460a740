"""The warehouse: the DuckDB file or DuckLake that dbt builds and later layers read
(``keel_core.warehouse_engine`` opens it, for every process the same way)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date

import dagster as dg
import pandas as pd

from keel_core.warehouse_engine import WarehouseLocation, connect, current_snapshot, retry_conflicts

_LAKE_FIELDS = ("catalog", "data_path", "metadata_schema", "s3")  # named alike in both


class Warehouse(dg.ConfigurableResource):
    """A namespace's warehouse: a DuckDB file (one writer at a time), or a DuckLake whose catalog is
    a PostgreSQL database and whose data are Parquet files on S3 (many writers). dbt writes its
    models; Keel's assets write their own schema's tables (``replace_days``) and read."""

    path: str | None = None  # the DuckDB file (WarehouseLocation.file)
    catalog: str | None = None
    data_path: str | None = None
    metadata_schema: str | None = None
    s3: bool = False

    @classmethod
    def at(cls, location: WarehouseLocation) -> Warehouse:
        return cls(path=location.file, **{name: getattr(location, name) for name in _LAKE_FIELDS})

    @property
    def location(self) -> WarehouseLocation:
        return WarehouseLocation(file=self.path, **{name: getattr(self, name) for name in _LAKE_FIELDS})

    @contextmanager
    def connect(self, read_only: bool = True, snapshot: int | None = None):
        """A connection to the warehouse; ``snapshot`` (DuckLake) reads it as it was then."""
        with connect(self.location, read_only=read_only, snapshot=snapshot) as connection:
            yield connection

    def snapshot(self) -> int | None:
        """The DuckLake snapshot a reader sees now (what a training records); None for a DuckDB file."""
        if not self.location.is_lake:
            return None
        with self.connect() as connection:
            return current_snapshot(connection)

    def row_count(self, relation: str) -> int:
        with self.connect() as connection:
            return connection.execute(f"select count(*) from {relation}").fetchone()[0]

    def replace_days(self, table: str, day_column: str, first: date, last: date, frame: pd.DataFrame) -> None:
        """Replace the rows of days [first, last] of ``schema.table`` with ``frame``, in one transaction.

        Tables written by Keel's Python assets (features, scores) live in their own schema beside
        dbt's; re-running a window replaces exactly that window. A column the table does not have
        yet is added to it (the older rows have none: null), as dbt's ``append_new_columns`` does;
        a column the table has and ``frame`` lacks stays null for these rows.
        """
        days = pd.to_datetime(frame[day_column]).dt.date
        outside = frame[(days < first) | (days > last)]
        if len(outside):
            raise ValueError(
                f"{len(outside)} rows of {table} have a {day_column} outside {first} .. {last}, "
                f"e.g. {outside[day_column].iloc[0]}"
            )
        schema = table.partition(".")[0]

        def replace() -> None:
            with self.connect(read_only=False) as connection:
                connection.register("incoming", frame)
                connection.execute(f"create schema if not exists {schema}")  # its own commit: shared
                connection.execute("begin transaction")
                if not _exists(connection, table):
                    connection.execute(f"create table {table} as select * from incoming limit 0")
                    if self.location.is_lake:  # a day's rows in files of their own: days never conflict
                        connection.execute(f"alter table {table} set partitioned by ({day_column})")
                existing = {row[0] for row in connection.execute(f"describe {table}").fetchall()}
                for name, kind, *_ in connection.execute("describe incoming").fetchall():
                    if name not in existing:
                        connection.execute(f'alter table {table} add column "{name}" {kind}')
                connection.execute(f"delete from {table} where {day_column} between ? and ?", [first, last])
                connection.execute(f"insert into {table} by name select * from incoming")
                connection.execute("commit")

        # Another run writing other days of this table may commit first (DuckLake): try again.
        retry_conflicts(replace, table=table)


def _exists(connection, table: str) -> bool:
    schema, _, name = table.partition(".")
    return bool(
        connection.execute(
            "select count(*) from duckdb_tables() where database_name = current_database() "
            "and schema_name = ? and table_name = ?",
            [schema, name],
        ).fetchone()[0]
    )
