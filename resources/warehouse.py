"""The warehouse: the DuckDB database that dbt builds and that later layers read."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb


class Warehouse(dg.ConfigurableResource):
    """A DuckDB database file. dbt writes it (one writer at a time); assets and tools read it."""

    path: str

    @contextmanager
    def connect(self, read_only: bool = True):
        if read_only and not Path(self.path).exists():
            raise FileNotFoundError(f"no warehouse at {self.path}: build the warehouse assets first")
        connection = duckdb.connect(self.path, read_only=read_only)
        try:
            yield connection
        finally:
            connection.close()

    def row_count(self, relation: str) -> int:
        with self.connect() as connection:
            return connection.execute(f"select count(*) from {relation}").fetchone()[0]
