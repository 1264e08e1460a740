"""The online feature store: the entity features of one daily snapshot, by id, for the scoring service.

The ``serving/online_features`` asset publishes ``features.entity_snapshot(closed_day)``; the service
looks up the customer and terminal of each payment it scores. One interface, two stores, chosen by URL:

* ``sqlite:////abs/path/online_features.sqlite``: a file, for the local environment (no server).
* ``redis://host:6379/0``: production. Each snapshot is a new versioned key set; a pointer key is
  switched to it in one command, and reads run as one Lua script, so a reader sees the old snapshot or
  the new one, never a mix.

Two rules hold in both:

* Publishing is all or nothing, and the store only moves forward: a snapshot older than the one it
  holds is not published (re-materializing an old partition must not put stale features in front of
  live payments). The same day again replaces it (a re-run after a fix).
* A lookup answers for every id asked: features for an id in the snapshot, NaN for one that is not
  (``features.online_features`` turns those into the documented defaults and flags them).

Pure module: no Dagster, no BentoML.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from keel_core.features import CUSTOMER_FEATURES, FEATURE_SET_VERSION, TERMINAL_FEATURES

# entity -> (id column, its features, in the order they are stored)
ENTITIES = {
    "customer": ("customer_id", tuple(f.name for f in CUSTOMER_FEATURES)),
    "terminal": ("terminal_id", tuple(f.name for f in TERMINAL_FEATURES)),
}
ENTITY_FEATURE_NAMES = ENTITIES["customer"][1] + ENTITIES["terminal"][1]


class StoreUnavailable(ConnectionError):
    """The store cannot be reached (server down, timeout, missing file)."""


class NoSnapshot(LookupError):
    """The store is reachable but nothing has been published to it."""


@dataclass(frozen=True)
class SnapshotInfo:
    version: str
    closed_day: date  # features as of this day's close: they serve the payments of the next day
    feature_set_version: str
    customers: int
    terminals: int
    published_at: str

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "closed_day": self.closed_day.isoformat()})

    @classmethod
    def from_json(cls, text: str | bytes) -> SnapshotInfo:
        fields = json.loads(text)
        return cls(**{**fields, "closed_day": date.fromisoformat(fields["closed_day"])})


@dataclass(frozen=True)
class Publication:
    snapshot: SnapshotInfo  # what was offered
    published: bool  # False: the store holds a newer snapshot, which it keeps
    current: SnapshotInfo  # what the store serves now


@dataclass(frozen=True)
class Lookup:
    snapshot: SnapshotInfo
    values: np.ndarray  # one row per id pair asked, ENTITY_FEATURE_NAMES columns, NaN where unknown

    @property
    def entities(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, columns=list(ENTITY_FEATURE_NAMES))


def _new_snapshot(closed_day: date, customers: pd.DataFrame, terminals: pd.DataFrame) -> SnapshotInfo:
    for entity, frame in (("customer", customers), ("terminal", terminals)):
        key, names = ENTITIES[entity]
        missing = [column for column in (key, *names) if column not in frame.columns]
        if missing:
            raise ValueError(f"the {entity} snapshot lacks columns {missing}")
        if frame[key].duplicated().any():
            raise ValueError(f"the {entity} snapshot has duplicate {key}s")
    return SnapshotInfo(
        version=f"{closed_day.isoformat()}-{uuid.uuid4().hex[:12]}",
        closed_day=closed_day,
        feature_set_version=FEATURE_SET_VERSION,
        customers=len(customers),
        terminals=len(terminals),
        published_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _check_feature_set(snapshot: SnapshotInfo) -> SnapshotInfo:
    if snapshot.feature_set_version != FEATURE_SET_VERSION:
        # Serving features of another definition would give silently wrong scores.
        raise NoSnapshot(
            f"the store holds feature set {snapshot.feature_set_version}, this code computes "
            f"{FEATURE_SET_VERSION}: re-publish serving/online_features"
        )
    return snapshot


def _aligned(rows: Sequence[Sequence[float] | None], width: int) -> np.ndarray:
    values = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        if row is not None:
            values[i] = row
    return values


class OnlineStore(ABC):
    @property
    @abstractmethod
    def uri(self) -> str: ...

    @abstractmethod
    def publish(self, closed_day: date, customers: pd.DataFrame, terminals: pd.DataFrame) -> Publication:
        """Offer the snapshot of ``closed_day`` (frames from ``features.entity_snapshot``)."""

    @abstractmethod
    def current(self) -> SnapshotInfo | None:
        """The snapshot served now, or None if nothing was published. Raises StoreUnavailable."""

    @abstractmethod
    def _rows(
        self, customer_ids: Sequence[int], terminal_ids: Sequence[int]
    ) -> tuple[SnapshotInfo, list, list]:
        """The snapshot and, read consistently from it, the stored rows (None when unknown)."""

    def lookup(self, customer_ids: Sequence[int], terminal_ids: Sequence[int]) -> Lookup:
        """Entity features for each (customer_ids[i], terminal_ids[i]), from one snapshot."""
        if len(customer_ids) != len(terminal_ids):
            raise ValueError("one customer id and one terminal id per payment")
        snapshot, customers, terminals = self._rows(list(customer_ids), list(terminal_ids))
        customer_names, terminal_names = ENTITIES["customer"][1], ENTITIES["terminal"][1]
        values = np.hstack(
            [_aligned(customers, len(customer_names)), _aligned(terminals, len(terminal_names))]
        )
        return Lookup(_check_feature_set(snapshot), values)

    def close(self) -> None:  # noqa: B027 (a store without connections has nothing to close)
        pass


class SqliteOnlineStore(OnlineStore):
    """A SQLite file in WAL mode: one transaction replaces the snapshot, and a reader's transaction
    sees one snapshot throughout, while the service reads and a Dagster run publishes."""

    def __init__(self, path: str | Path, timeout_seconds: float = 5.0):
        self.path = Path(path)
        self.timeout_seconds = timeout_seconds
        self._reader: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.path}"

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are begun explicitly below.
        return sqlite3.connect(
            self.path, timeout=self.timeout_seconds, isolation_level=None, check_same_thread=False
        )

    @staticmethod
    def _snapshot(connection: sqlite3.Connection) -> SnapshotInfo | None:
        has_table = connection.execute(
            "select 1 from sqlite_master where type = 'table' and name = 'snapshot'"
        ).fetchone()
        row = has_table and connection.execute("select info from snapshot").fetchone()
        return SnapshotInfo.from_json(row[0]) if row else None

    def publish(self, closed_day: date, customers: pd.DataFrame, terminals: pd.DataFrame) -> Publication:
        offered = _new_snapshot(closed_day, customers, terminals)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = self._connect()
        try:
            connection.execute("pragma journal_mode = wal")
            connection.execute("begin immediate")  # the write lock, before reading what is current
            current = self._snapshot(connection)
            if current is not None and current.closed_day > closed_day:
                connection.execute("rollback")
                return Publication(offered, published=False, current=current)
            for entity, frame in (("customer", customers), ("terminal", terminals)):
                key, names = ENTITIES[entity]
                connection.execute(f"drop table if exists {entity}_features")
                connection.execute(
                    f"create table {entity}_features ({key} integer primary key, "
                    + ", ".join(f"{name} real not null" for name in names)
                    + ")"
                )
                connection.executemany(
                    f"insert into {entity}_features values ({', '.join('?' * (len(names) + 1))})",
                    frame[[key, *names]].itertuples(index=False, name=None),
                )
            connection.execute("create table if not exists snapshot (info text not null)")
            connection.execute("delete from snapshot")
            connection.execute("insert into snapshot values (?)", [offered.to_json()])
            connection.execute("commit")
        except BaseException:
            if connection.in_transaction:
                connection.execute("rollback")
            raise
        finally:
            connection.close()
        return Publication(offered, published=True, current=offered)

    def _read(self, read):
        if not self.path.exists():
            # Not opened: that would create an empty file and hide a wrong path.
            raise NoSnapshot(f"no file at {self.path}: materialize serving/online_features to publish one")
        with self._lock:
            if self._reader is None:
                self._reader = self._connect()
            try:
                self._reader.execute("begin")
                try:
                    return read(self._reader)
                finally:
                    self._reader.execute("commit")
            except sqlite3.OperationalError as error:
                raise StoreUnavailable(f"online store {self.path}: {error}") from error

    def current(self) -> SnapshotInfo | None:
        try:
            return self._read(self._snapshot)
        except NoSnapshot:
            return None

    def _rows(self, customer_ids, terminal_ids):
        def read(connection):
            snapshot = self._snapshot(connection)
            if snapshot is None:
                raise NoSnapshot(f"nothing published to {self.uri}: materialize serving/online_features")
            found = []
            for entity, ids in (("customer", customer_ids), ("terminal", terminal_ids)):
                key, names = ENTITIES[entity]
                unique = sorted(set(ids))
                rows = {}
                # SQLite caps a statement's parameters; ask in chunks.
                for start in range(0, len(unique), 10_000):
                    chunk = unique[start : start + 10_000]
                    for row in connection.execute(
                        f"select {key}, {', '.join(names)} from {entity}_features "
                        f"where {key} in ({', '.join('?' * len(chunk))})",
                        chunk,
                    ):
                        rows[row[0]] = row[1:]
                found.append([rows.get(i) for i in ids])
            return snapshot, found[0], found[1]

        return self._read(read)

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


# Reads the pointer and every asked field in one atomic script: the snapshot cannot switch halfway.
_LOOKUP = """
local current = redis.call('GET', KEYS[1])
if not current then return false end
local info = cjson.decode(current)
local n = tonumber(ARGV[1])
local customers, terminals = {}, {}
local snapshot = KEYS[1] .. ':' .. info.version
if n > 0 then
  customers = redis.call('HMGET', snapshot .. ':customer', unpack(ARGV, 2, n + 1))
  terminals = redis.call('HMGET', snapshot .. ':terminal', unpack(ARGV, n + 2, 2 * n + 1))
end
return {current, customers, terminals}
"""

# Switches the pointer unless it names a later day (ISO dates compare as strings).
_SWITCH = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current).closed_day > ARGV[2] then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


class RedisOnlineStore(OnlineStore):
    """Redis: ``<prefix>:current`` holds the snapshot's info; the snapshot itself is two hashes,
    ``<prefix>:current:<version>:customer`` and ``...:terminal``, id -> JSON list of feature values.

    The prefix carries a hash tag (``{keel}``) so that, on a Redis Cluster, every key of the store is
    on one slot and the scripts stay atomic.
    """

    # Lua's unpack() is bounded by its stack (~8000): a lookup asks at most this many ids per script.
    LOOKUP_CHUNK = 3000

    def __init__(self, url: str, prefix: str = "{keel}:online", timeout_seconds: float = 0.5):
        import redis

        self.url = url
        self.prefix = prefix
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self._lookup = self.client.register_script(_LOOKUP)
        self._switch = self.client.register_script(_SWITCH)

    @property
    def uri(self) -> str:
        return f"{self.url.split('@')[-1]} ({self.prefix})"  # without credentials

    @property
    def _pointer(self) -> str:
        return f"{self.prefix}:current"

    def _call(self, function, *args, **kwargs):
        import redis

        try:
            return function(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"online store {self.uri}: {error}") from error

    def publish(self, closed_day: date, customers: pd.DataFrame, terminals: pd.DataFrame) -> Publication:
        offered = _new_snapshot(closed_day, customers, terminals)
        versions = f"{self.prefix}:versions"
        # Registered first, so that a publisher that dies halfway leaves keys the next one removes.
        self._call(self.client.sadd, versions, offered.version)
        for entity, frame in (("customer", customers), ("terminal", terminals)):
            key, names = ENTITIES[entity]
            hash_key = f"{self._pointer}:{offered.version}:{entity}"
            ids = frame[key].to_numpy()
            values = frame[list(names)].to_numpy(dtype="float64")
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(frame), 5000):
                pipe.hset(
                    hash_key,
                    mapping={
                        int(i): json.dumps(row.tolist())
                        for i, row in zip(
                            ids[start : start + 5000], values[start : start + 5000], strict=True
                        )
                    },
                )
            self._call(pipe.execute)
        now = self._call(self._switch, keys=[self._pointer], args=[offered.to_json(), closed_day.isoformat()])
        current = SnapshotInfo.from_json(now)
        # Every version but the current one goes: superseded, refused, or left by a failed publish.
        stale = [
            v.decode() for v in self._call(self.client.smembers, versions) if v.decode() != current.version
        ]
        if stale:
            pipe = self.client.pipeline(transaction=False)
            for version in stale:
                pipe.delete(f"{self._pointer}:{version}:customer", f"{self._pointer}:{version}:terminal")
                pipe.srem(versions, version)
            self._call(pipe.execute)
        return Publication(offered, published=current.version == offered.version, current=current)

    def current(self) -> SnapshotInfo | None:
        value = self._call(self.client.get, self._pointer)
        return SnapshotInfo.from_json(value) if value else None

    def _rows(self, customer_ids, terminal_ids):
        snapshot, customers, terminals = None, [], []
        for start in range(0, max(len(customer_ids), 1), self.LOOKUP_CHUNK):
            chunk_c = customer_ids[start : start + self.LOOKUP_CHUNK]
            chunk_t = terminal_ids[start : start + self.LOOKUP_CHUNK]
            result = self._call(self._lookup, keys=[self._pointer], args=[len(chunk_c), *chunk_c, *chunk_t])
            if not result:
                raise NoSnapshot(f"nothing published to {self.uri}: materialize serving/online_features")
            chunk_snapshot = SnapshotInfo.from_json(result[0])
            if snapshot is not None and chunk_snapshot.version != snapshot.version:
                # A publish landed between two chunks of a long lookup: start again on the new one.
                return self._rows(customer_ids, terminal_ids)
            snapshot = chunk_snapshot
            customers += [json.loads(v) if v is not None else None for v in result[1]]
            terminals += [json.loads(v) if v is not None else None for v in result[2]]
        return snapshot, customers, terminals

    def close(self) -> None:
        self.client.close()


def open_store(url: str, namespace: str, timeout_seconds: float = 0.5) -> OnlineStore:
    """The store a URL names: ``sqlite:////absolute/path`` or ``redis://[:password@]host:port/db``.

    A Redis is shared by namespaces, each under its own keys (``{keel:<namespace>}:online``); a
    SQLite file is one namespace's (``resources/environments.py`` gives each its own file)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute():
            raise ValueError(f"online store {url!r}: the SQLite path must be absolute (sqlite:////abs/path)")
        return SqliteOnlineStore(path, timeout_seconds=max(timeout_seconds, 1.0))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisOnlineStore(url, prefix=f"{{keel:{namespace}}}:online", timeout_seconds=timeout_seconds)
    raise ValueError(f"online store {url!r}: expected sqlite:////abs/path or redis://host:port/db")
