"""The lake: Parquet tables, hive-style (one folder per day) for partitioned ones.

Layout, the same on disk and on S3::

    <root>/<table>/data.parquet                       unpartitioned (reference tables)
    <root>/<table>/date=YYYY-MM-DD/data.parquet       daily partitions

One file per partition, replaced whole: re-running a partition can never append twice.
dbt reads the same layout through ``read_parquet('<root>/<table>/*/*.parquet', hive_partitioning=true)``,
with ``<root>`` from ``KEEL_LAKE_ROOT``.
"""

from __future__ import annotations

import io
import os
import uuid
from abc import abstractmethod
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from keel_core.value_days import ValueDays

DATA_FILE = "data.parquet"


class LakeError(LookupError):
    """A table or partition that was asked for is not in the lake."""


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as a Parquet file (no index), written by pyarrow directly."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def _relative_path(table: str, day: date | None) -> str:
    return f"{table}/{DATA_FILE}" if day is None else f"{table}/date={day.isoformat()}/{DATA_FILE}"


class Lake(dg.ConfigurableResource):
    """Where raw and reference tables live. Local files or S3 (``resources/s3_lake.py``), behind the
    same methods."""

    # Where people can open the lake's files in a browser (reports): a web server in front of the
    # folder or bucket (`make dev` serves the local lake on loopback). Without it, links are URIs.
    public_base_url: str | None = None

    @property
    @abstractmethod
    def uri(self) -> str:
        """The lake's root as dbt and DuckDB address it (a folder path or ``s3://bucket/prefix``)."""

    @abstractmethod
    def _write(self, relative: str, payload: bytes) -> None: ...

    @abstractmethod
    def _read(self, relative: str) -> bytes: ...

    @abstractmethod
    def _arrow_filesystem(self) -> tuple[pa.fs.FileSystem, str]:
        """The lake as Arrow reads it: a file system and the root's path in it (for column scans)."""

    @abstractmethod
    def _list(self, prefix: str) -> dict[str, float]:
        """Relative path -> last modification (POSIX seconds) of every file under ``prefix``."""

    def write_table(self, table: str, frame: pd.DataFrame) -> str:
        return self._write_frame(_relative_path(table, None), frame)

    def write_partition(self, table: str, day: date, frame: pd.DataFrame) -> str:
        return self._write_frame(_relative_path(table, day), frame)

    def read_table(self, table: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self._read(_relative_path(table, None))))

    def read_partition(self, table: str, day: date) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self._read(_relative_path(table, day))))

    def days_holding(self, table: str, column: str, values: pd.Series, other_than: date) -> pd.Series:
        """Which of ``values`` the daily partitions of ``table`` other than ``other_than`` already hold
        in ``column``: value -> the first day (ISO) holding it. Reads only that column of each day
        (Parquet column chunks: range reads on S3), filtered as it is read."""
        import pyarrow.dataset as ds

        filesystem, root = self._arrow_filesystem()
        found = pd.Series(dtype="string", name="day")
        if values.empty or filesystem.get_file_info(f"{root}/{table}").type == pa.fs.FileType.NotFound:
            return found
        days = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
        dataset = ds.dataset(f"{root}/{table}", filesystem=filesystem, format="parquet", partitioning=days)
        wanted = pa.array(values.to_numpy(dtype="int64"), pa.int64())
        held = dataset.to_table(
            columns=[column, "date"],
            filter=(ds.field("date") != other_than.isoformat()) & ds.field(column).isin(wanted),
        ).to_pandas()
        if held.empty:
            return found
        return held.groupby(column)["date"].min().astype("string").rename("day")

    def value_days(self, table: str, column: str) -> ValueDays:
        """Every value of ``column`` in the daily partitions of ``table``, with its day, read once: what
        a run of many days asks ``days_holding`` from (``keel_core.value_days``). Streamed into DuckDB;
        measured at 3.6 M values: see benchmarks/README.md."""
        import pyarrow.dataset as ds

        filesystem, root = self._arrow_filesystem()
        schema = pa.schema([("value", pa.int64()), ("date", pa.string())])
        if filesystem.get_file_info(f"{root}/{table}").type == pa.fs.FileType.NotFound:
            return ValueDays(schema.empty_table())
        days = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
        dataset = ds.dataset(f"{root}/{table}", filesystem=filesystem, format="parquet", partitioning=days)
        scan = dataset.scanner(columns={"value": ds.field(column), "date": ds.field("date")})
        return ValueDays(scan.to_reader())

    def partition_row_count(self, table: str, day: date) -> int:
        """Rows in a stored partition, from the Parquet footer (what was written, not what was meant)."""
        return pq.ParquetFile(io.BytesIO(self._read(_relative_path(table, day)))).metadata.num_rows

    def write_file(self, relative: str, payload: bytes) -> str:
        """Store any file (a report, a model export) at ``relative`` under the root; returns its URI."""
        self._write(relative, payload)
        return f"{self.uri}/{relative}"

    def read_file(self, relative: str) -> bytes:
        return self._read(relative)

    def list_files(self, prefix: str) -> list[str]:
        """Relative paths of the files under the folder ``prefix``, sorted."""
        return sorted(self._list(prefix.strip("/") + "/"))

    def modified_times(self, prefix: str) -> dict[str, float]:
        """Relative path -> last modification time (POSIX seconds) of the files under ``prefix``."""
        return dict(sorted(self._list(prefix.strip("/") + "/").items()))

    def public_url(self, relative: str) -> str:
        """A link to a file of the lake for people (the UI): through ``public_base_url`` when set."""
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{relative}"
        return self._uri_of(relative)

    def _uri_of(self, relative: str) -> str:
        return f"{self.uri}/{relative}"

    def location(self, table: str, day: date | None = None) -> str:
        return f"{self.uri}/{_relative_path(table, day)}"

    def _write_frame(self, relative: str, frame: pd.DataFrame) -> str:
        self._write(relative, parquet_bytes(frame))
        return f"{self.uri}/{relative}"


class LocalLake(Lake):
    """The lake as a folder on this machine (the ``local`` environment)."""

    root: str

    @property
    def uri(self) -> str:
        return str(Path(self.root).resolve())

    def _write(self, relative: str, payload: bytes) -> None:
        target = Path(self.uri, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write beside, then rename: a reader never sees half a file, a crash never leaves one.
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        partial.write_bytes(payload)
        os.replace(partial, target)

    def _uri_of(self, relative: str) -> str:
        return Path(self.uri, relative).as_uri()

    def _arrow_filesystem(self) -> tuple[pa.fs.FileSystem, str]:
        return pa.fs.LocalFileSystem(), self.uri

    def _list(self, prefix: str) -> dict[str, float]:
        folder = Path(self.uri, prefix)
        if not folder.is_dir():
            return {}
        return {
            path.relative_to(self.uri).as_posix(): path.stat().st_mtime
            for path in folder.rglob("*")
            if path.is_file() and not path.name.endswith(".partial")
        }

    def _read(self, relative: str) -> bytes:
        path = Path(self.uri, relative)
        if not path.exists():
            raise LakeError(f"not in the lake: {path} (materialize it first)")
        return path.read_bytes()


def lake_uri_from_env(default: Path) -> str:
    """``KEEL_LAKE_ROOT``, the one setting that Dagster and dbt both read."""
    return os.environ.get("KEEL_LAKE_ROOT", str(default))
