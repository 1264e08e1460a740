"""How every process opens the warehouse: Keel's assets, dbt (through ``resources/dbt_duckdb_plugin.py``),
the notebook client and ``keel reproduce``. One engine, one set of extensions, one way to reach S3.

The warehouse is either

* a DuckDB file (the local default: one process writes it at a time), or
* a DuckLake (staging and prod): its catalog a PostgreSQL database (transactions, many writers with
  optimistic conflict detection), its data Parquet files under the lake (``s3://.../warehouse/``). Each
  namespace has its own metadata schema in the catalog and its own data folder. DuckDB is the engine
  in every pod; a commit that conflicts with another's is retried (``retry_conflicts``).

Extensions load only from the installed ``duckdb-ext-*`` packages (DuckDB's 1.4 LTS line publishes
them on PyPI): the extension directory is the package's and auto-install is off, so nothing is ever
downloaded at run time and a missing package fails at ``LOAD`` with the extension's name.

S3 is DuckDB's own (httpfs). Credentials come from the AWS SDK's chain (environment, profile, a pod's
web identity), resolved by botocore as boto3 resolves them for the rest of Keel; the endpoint is
``AWS_ENDPOINT_URL_S3`` (else ``AWS_ENDPOINT_URL``), the one endpoint setting of every S3 client here.
The credentials are resolved when a connection opens: a step that outlives its role's session (an hour
by default) would need a new connection.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import duckdb

ALIAS = "warehouse"  # the DuckLake's name in every connection (dbt's profile says the same)
CONFLICT_ATTEMPTS = 6  # a commit retried over ~6 s of backoff before the conflict is called persistent
T = TypeVar("T")


CONFLICT = "Transaction conflict"  # how DuckLake says a commit lost to another writer's
FAILED_COMMIT = "Failed to commit DuckLake transaction"  # any commit that did not land, conflicts too
INITIALIZING = "Failed to initialize DuckLake"  # a first ATTACH creating the catalog's tables
DUPLICATE = "duplicate key value violates unique constraint"  # PostgreSQL: another made it first
# How httpfs says it never got an answer (DuckDB 1.4): the server unreachable, or too slow.
_UNREACHABLE = (
    "Could not establish connection",  # refused, no route
    "Failed to read connection",  # reset by the peer, or no answer in time (measured, DuckDB 1.4.4)
    "Timeout",
    "timed out",
    "Connection reset",
)


class ConflictingCommit(RuntimeError):
    """A commit that lost to another writer's: the work is sound, doing it again is the cure (a step's
    retry policy treats it as transient)."""


class SnapshotGone(LookupError):
    """A snapshot the warehouse no longer holds (expired by its retention, or never made)."""


class WarehouseConflict(RuntimeError):
    """A DuckLake commit that kept conflicting with other writers' commits; the message names the table."""


@dataclass(frozen=True)
class WarehouseLocation:
    """Where a namespace's warehouse is: a DuckDB ``file``, or a DuckLake (``catalog`` and ``data_path``).

    ``catalog`` is what follows ``ducklake:`` in DuckDB's ATTACH: ``postgres:dbname=... host=... user=...``
    (libpq's connection string; the password comes from ``PGPASSWORD``, never from here) or a local
    file. ``s3`` says whether the warehouse reaches S3 (its data, or views over the lake's files).
    """

    file: str | None = None
    catalog: str | None = None
    data_path: str | None = None
    metadata_schema: str | None = None
    s3: bool = False

    def __post_init__(self):
        if (self.file is None) == (self.catalog is None):
            raise ValueError("a warehouse is either a DuckDB file or a DuckLake catalog, exactly one")
        if self.catalog is not None and not self.data_path:
            raise ValueError("a DuckLake warehouse needs the data path its Parquet files go to")

    @property
    def is_lake(self) -> bool:
        return self.catalog is not None

    def describe(self) -> str:
        """Where it is, for messages and metadata (Settings refuse a catalog string with a password)."""
        return f"DuckLake {self.catalog} (data {self.data_path})" if self.is_lake else str(self.file)


def extension_directory() -> str:
    import duckdb_ext

    return str(duckdb_ext.get_extension_dir())


def engine_config() -> dict[str, object]:
    """DuckDB's connection settings: extensions from the installed packages, never downloaded."""
    return {
        "extension_directory": extension_directory(),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }


def prepare(connection: duckdb.DuckDBPyConnection, *, s3: bool, lake: bool) -> None:
    """Load the extensions this warehouse needs (each costs ~0.1-0.2 s: a local DuckDB file needs
    none) and, when it reaches S3, give DuckDB the SDK's credentials."""
    needed = [*(["httpfs"] if s3 else []), *(["postgres", "ducklake"] if lake else [])]
    for extension in needed:
        connection.execute(f"load {extension}")
    if s3:
        connection.execute(s3_secret_sql())


def s3_secret_sql() -> str:
    """A DuckDB secret for S3 from the AWS SDK's chain and the endpoint variable."""
    import botocore.session

    session = botocore.session.get_session()
    # AWS_REGION first, as the AWS SDKs read it (botocore itself reads only AWS_DEFAULT_REGION and profiles).
    region = os.environ.get("AWS_REGION") or session.get_config_variable("region") or "us-east-1"
    options = {"type": "s3", "region": region}
    credentials = session.get_credentials()
    if credentials is not None:  # none at all: anonymous access (a public bucket)
        frozen = credentials.get_frozen_credentials()
        options |= {"key_id": frozen.access_key, "secret": frozen.secret_key}
        if frozen.token:
            options["session_token"] = frozen.token
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:  # an S3-compatible server (MinIO, moto): addressed by path, TLS as its URL says
        parts = urlsplit(endpoint)
        options |= {"endpoint": parts.netloc, "url_style": "path", "use_ssl": parts.scheme == "https"}
    rendered = ", ".join(f"{name} {_literal(value)}" for name, value in options.items())
    return f"create or replace secret keel_s3 ({rendered})"


def attach_sql(location: WarehouseLocation, *, read_only: bool, snapshot: int | None = None) -> str:
    """The ATTACH of ``location``'s DuckLake as ``warehouse``; at ``snapshot``, the lake as it was then."""
    options = [f"data_path {_literal(location.data_path)}"]
    if location.metadata_schema:
        options.append(f"metadata_schema {_literal(location.metadata_schema)}")
    if snapshot is not None:
        options.append(f"snapshot_version {int(snapshot)}")
    if read_only or snapshot is not None:  # a snapshot is history: read it, never write it
        options.append("read_only")
    return f"attach {_literal('ducklake:' + location.catalog)} as {ALIAS} ({', '.join(options)})"


@contextmanager
def connect(
    location: WarehouseLocation, *, read_only: bool = True, snapshot: int | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection whose default database is the warehouse (``schema.table`` names resolve in it).
    ``snapshot`` (DuckLake only) reads the warehouse as it was at that snapshot; a read-only DuckLake
    connection without one reads the snapshot that was newest when it opened, in every statement."""
    import duckdb

    if location.is_lake:
        connection = duckdb.connect(config=engine_config())
    else:
        if snapshot is not None:
            raise ValueError(f"{location.describe()} is a DuckDB file: it has no snapshots to read")
        if read_only and not Path(location.file).exists():
            raise FileNotFoundError(f"no warehouse at {location.file}: build the warehouse assets first")
        connection = duckdb.connect(location.file, read_only=read_only, config=engine_config())
    try:
        prepare(connection, s3=location.s3, lake=location.is_lake)
        if location.is_lake:
            try:
                _attach(connection, attach_sql(location, read_only=read_only, snapshot=snapshot))
            except duckdb.InvalidInputException as error:
                if snapshot is None or "No snapshot found" not in str(error):
                    raise
                raise SnapshotGone(
                    f"the warehouse holds no snapshot {snapshot} any more (snapshots older than its "
                    "retention are expired): read its current data instead"
                ) from None
            if read_only and snapshot is None:
                # Pinned to the newest snapshot: unpinned, each statement reads the newest one then,
                # and a reader's two queries could see two states of a table another run is writing.
                # (Not one open transaction: any error in it would abort every later statement.)
                pinned = connection.execute(
                    f"select id from ducklake_current_snapshot('{ALIAS}')"
                ).fetchone()[0]
                connection.execute(f"detach {ALIAS}")
                _attach(connection, attach_sql(location, read_only=True, snapshot=pinned))
            connection.execute(f"use {ALIAS}")
        yield connection
    finally:
        connection.close()


def _attach(connection: duckdb.DuckDBPyConnection, sql: str) -> None:
    """ATTACH, again while another process is creating the same new metadata schema: DuckLake creates
    it on the first ATTACH, and of two first ATTACHes at once one fails on PostgreSQL's unique index
    (measured: two of three simultaneous first ATTACHes). Once the winner committed, ATTACH finds it."""
    import duckdb

    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            connection.execute(sql)
            return
        except duckdb.Error as error:
            if not is_initializing_race(str(error)) or attempt == CONFLICT_ATTEMPTS:
                raise
            time.sleep(0.1 * 2 ** (attempt - 1) * (0.5 + random.random()))


def is_initializing_race(message: str) -> bool:
    """Whether an error is a DuckLake catalog being created by two processes at once."""
    return INITIALIZING in message and DUPLICATE in message


def is_transient_engine_error(error: BaseException) -> bool:
    """Whether a DuckDB error is the network or a busy S3 (httpfs), which a retry can cure: a refused
    or timed-out connection, HTTP 429 or 5xx. A missing file or a denied request is final. Matched by
    name: the caller need not import DuckDB."""
    kind = type(error)
    if not kind.__module__.lstrip("_").startswith("duckdb"):
        return False
    if kind.__name__ == "HTTPException":
        status = getattr(error, "status_code", 0) or 0
        return status == 429 or status >= 500
    if kind.__name__ in ("IOException", "Error"):  # a read cut off mid-query is a bare duckdb.Error
        message = str(error)
        return any(sign in message for sign in _UNREACHABLE)
    return False


def current_snapshot(connection: duckdb.DuckDBPyConnection) -> int | None:
    """The DuckLake snapshot a connection reads (its newest when attached without one); None for a file."""
    attached = connection.execute(
        "select count(*) from duckdb_databases() where database_name = ? and type = 'ducklake'", [ALIAS]
    ).fetchone()[0]
    if not attached:
        return None
    return connection.execute(f"select id from ducklake_current_snapshot('{ALIAS}')").fetchone()[0]


def changed_rows(
    connection: duckdb.DuckDBPyConnection,
    table: str,
    day_column: str,
    first: object,
    last: object,
    snapshot: int,
    keys: tuple[str, ...],
    examples: int = 3,
) -> str | None:
    """What differs between ``table``'s rows of the days [first, last] at ``snapshot`` and now, said
    in a sentence naming added or dropped columns and a few rows by their keys; None if the same."""
    import duckdb

    then_table = f"{table} at (version => {int(snapshot)})"
    try:
        columns_then = [
            row[0] for row in connection.execute(f"describe select * from {then_table}").fetchall()
        ]
    except duckdb.InvalidInputException as error:
        if "No snapshot found" not in str(error):
            raise
        return f"{table}: snapshot {snapshot} was expired, so what changed since cannot be named"
    columns_now = [row[0] for row in connection.execute(f"describe select * from {table}").fetchall()]
    said = []
    if added := [c for c in columns_now if c not in columns_then]:
        said.append(f"columns added: {', '.join(added)}")
    if dropped := [c for c in columns_then if c not in columns_now]:
        said.append(f"columns dropped: {', '.join(dropped)}")
    common = ", ".join(f'"{c}"' for c in columns_now if c in columns_then)
    window = f"cast({day_column} as date) between cast(? as date) and cast(? as date)"
    then = f"select {common} from {then_table} where {window}"
    now = f"select {common} from {table} where {window}"
    gone_sql, new_sql = f"({then} except all {now})", f"({now} except all {then})"
    days = [first, last, first, last]
    gone = connection.execute(f"select count(*) from {gone_sql}", days).fetchone()[0]
    new = connection.execute(f"select count(*) from {new_sql}", days).fetchone()[0]
    if gone or new:
        names = ", ".join(keys)
        sample = connection.execute(
            f"select distinct {names} from ({gone_sql} union all {new_sql}) "
            f"order by all limit {int(examples)}",
            days * 2,
        ).fetchall()
        rows = "; ".join(", ".join(f"{k} {v}" for k, v in zip(keys, row, strict=True)) for row in sample)
        said.append(
            f"{gone} rows as they were are gone or changed, {new} rows are new or changed (e.g. {rows})"
        )
    if not said:
        return None
    return f"{table}, days {first} .. {last}, since snapshot {snapshot}: {'; '.join(said)}"


def expire_history(connection: duckdb.DuckDBPyConnection, keep_days: int, grace_days: int) -> dict[str, int]:
    """DuckLake's housekeeping: forget the snapshots older than ``keep_days`` (time travel and
    `keel reproduce` reach back that far, no further), then delete the data files that only those
    snapshots needed and that were let go more than ``grace_days`` ago (a reader that opened an old
    snapshot a moment before keeps its files). Returns how many snapshots and files went."""
    if keep_days < 1 or grace_days < 0:
        raise ValueError(
            f"keep_days must be at least 1 and grace_days at least 0 ({keep_days}, {grace_days})"
        )
    expired = connection.execute(
        f"call ducklake_expire_snapshots('{ALIAS}', older_than => now() - to_days(?))", [keep_days]
    ).fetchall()
    deleted = connection.execute(
        f"call ducklake_cleanup_old_files('{ALIAS}', older_than => now() - to_days(?))", [grace_days]
    ).fetchall()
    return {"expired_snapshots": len(expired), "deleted_files": len(deleted)}


def retry_conflicts(work: Callable[[], T], *, table: str, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """Run ``work`` (one whole transaction, begin to commit) again while its commit conflicts with
    another writer's (DuckLake's optimistic concurrency), with jittered exponential backoff; a conflict
    that persists raises ``WarehouseConflict`` naming ``table``. Any other error is raised at once."""
    import duckdb

    for attempt in range(1, attempts + 1):
        try:
            return work()
        except duckdb.TransactionException as error:
            if CONFLICT not in str(error):
                raise
            if attempt == attempts:
                raise WarehouseConflict(
                    f"{table}: the commit conflicted with other writers {attempts} times in a row; "
                    f"last: {error}"
                ) from error
            time.sleep(0.2 * 2 ** (attempt - 1) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "'" + str(value).replace("'", "''") + "'"
