"""The warehouse: the DuckDB database that dbt builds and that later layers read."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd


class Warehouse(dg.ConfigurableResource):
    """A DuckDB database file. dbt writes it (one writer at a time); assets and tools read it."""

    path: str

    @contextmanager
    def connect(self, read_only: bool = True):
        if read_only and not Path(self.path).exists():
            raise FileNotFoundError(f"no warehouse at {self.path}: build the warehouse assets first")
        import duckdb  # here, not at the top: ~0.1 s that every process loading the code location would pay

        connection = duckdb.connect(self.path, read_only=read_only)
        try:
            yield connection
        finally:
            connection.close()

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
        with self.connect(read_only=False) as connection:
            connection.register("incoming", frame)
            connection.execute("begin transaction")
            connection.execute(f"create schema if not exists {schema}")
            connection.execute(f"create table if not exists {table} as select * from incoming limit 0")
            existing = {row[0] for row in connection.execute(f"describe {table}").fetchall()}
            for name, kind, *_ in connection.execute("describe incoming").fetchall():
                if name not in existing:
                    connection.execute(f'alter table {table} add column "{name}" {kind}')
            connection.execute(f"delete from {table} where {day_column} between ? and ?", [first, last])
            connection.execute(f"insert into {table} by name select * from incoming")
            connection.execute("commit")
