"""The online feature store: the entity features of one daily snapshot, by id, for the scoring services.

A use case declares a ``FeatureView``: its entities (an integer key and the features served for it)
and the version of its feature set. Its online-features asset publishes a day's snapshot of the view
(one frame per entity); its scoring service looks up the entities of each request. Each view has its
own snapshot, so the views of several use cases live side by side in one store. One interface, two
stores, chosen by URL:

* ``sqlite:////abs/path/online_features.sqlite``: a file, for the local environment (no server).
* ``redis://host:6379/0``: production. Each snapshot is a new versioned key set; a pointer key is
  switched to it in one command, and reads run as one Lua script, so a reader sees the old snapshot or
  the new one, never a mix.

Two rules hold in both:

* Publishing is all or nothing, and the store only moves forward: a snapshot older than the one it
  holds is not published (re-materializing an old partition must not put stale features in front of
  live payments). The same day again replaces it (a re-run after a fix).
* A lookup answers for every id asked: features for an id in the snapshot, NaN for one that is not
  (the use case turns those into its documented defaults and flags them).

Pure module: no Dagster, no BentoML.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # view, entity and column names become SQL and keys


@dataclass(frozen=True)
class Entity:
    """What is served for one entity of a view: rows keyed by the integer ``key`` column."""

    name: str
    key: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class FeatureView:
    """A use case's online features: its entities, in the order a lookup returns their columns."""

    name: str
    entities: tuple[Entity, ...]
    version: str  # the feature set's version: a store holding another one refuses to serve

    @property
    def publisher(self) -> str:
        """The asset that publishes it (a view is named as its use case), for messages."""
        return f"{self.name}/online_features"

    def __post_init__(self):
        names = [
            self.name,
            *(e.name for e in self.entities),
            *(c for e in self.entities for c in (e.key, *e.features)),
        ]
        if bad := [name for name in names if not _NAME.match(name)]:
            raise ValueError(f"feature view {self.name!r}: not a lowercase identifier: {bad}")
        if not self.entities or any(not e.features for e in self.entities):
            raise ValueError(f"feature view {self.name!r}: every entity needs at least one feature")
        if len({e.name for e in self.entities}) < len(self.entities):
            raise ValueError(f"feature view {self.name!r}: an entity is declared twice")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(name for entity in self.entities for name in entity.features)


class StoreUnavailable(ConnectionError):
    """The store cannot be reached (server down, timeout, missing file)."""


class NoSnapshot(LookupError):
    """The store is reachable but nothing has been published to it."""


@dataclass(frozen=True)
class SnapshotInfo:
    version: str
    closed_day: date  # features as of this day's close: they serve the requests of the next day
    feature_set_version: str
    rows: dict[str, int]  # per entity
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
    values: np.ndarray  # one row per request, the view's feature_names columns, NaN where unknown
    columns: tuple[str, ...]

    @property
    def entities(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, columns=list(self.columns))


def _new_snapshot(view: FeatureView, closed_day: date, frames: Mapping[str, pd.DataFrame]) -> SnapshotInfo:
    if sorted(frames) != sorted(e.name for e in view.entities):
        raise ValueError(
            f"view {view.name}: a snapshot has one frame per entity {[e.name for e in view.entities]}"
        )
    for entity in view.entities:
        frame = frames[entity.name]
        missing = [column for column in (entity.key, *entity.features) if column not in frame.columns]
        if missing:
            raise ValueError(f"the {entity.name} snapshot lacks columns {missing}")
        if frame[entity.key].duplicated().any():
            raise ValueError(f"the {entity.name} snapshot has duplicate {entity.key}s")
    return SnapshotInfo(
        version=f"{closed_day.isoformat()}-{uuid.uuid4().hex[:12]}",
        closed_day=closed_day,
        feature_set_version=view.version,
        rows={name: len(frame) for name, frame in frames.items()},
        published_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _aligned(rows: Sequence[Sequence[float] | None], width: int) -> np.ndarray:
    values = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        if row is not None:
            values[i] = row
    return values


class OnlineStore(ABC):
    view: FeatureView

    @property
    @abstractmethod
    def uri(self) -> str: ...

    @abstractmethod
    def publish(self, closed_day: date, frames: Mapping[str, pd.DataFrame]) -> Publication:
        """Offer the view's snapshot of ``closed_day``: one frame per entity, its key and features."""

    @abstractmethod
    def current(self) -> SnapshotInfo | None:
        """The snapshot served now, or None if nothing was published. Raises StoreUnavailable."""

    @abstractmethod
    def _rows(self, ids: list[list[int]]) -> tuple[SnapshotInfo, list[list]]:
        """The snapshot and, read consistently from it, the stored rows per entity (None when unknown)."""

    def lookup(self, ids: Mapping[str, Sequence[int]]) -> Lookup:
        """The features of each request's entities (``ids[entity][i]`` for request i), from one snapshot."""
        if sorted(ids) != sorted(e.name for e in self.view.entities):
            raise ValueError(
                f"a lookup in {self.view.name} names an id per entity {[e.name for e in self.view.entities]}"
            )
        if len({len(values) for values in ids.values()}) > 1:
            raise ValueError("a lookup names one id of each entity per request")
        snapshot, rows = self._rows([list(ids[e.name]) for e in self.view.entities])
        values = np.hstack(
            [
                _aligned(found, len(entity.features))
                for entity, found in zip(self.view.entities, rows, strict=True)
            ]
        )
        if snapshot.feature_set_version != self.view.version:
            # Serving features of another definition would give silently wrong scores.
            raise NoSnapshot(
                f"the store holds feature set {snapshot.feature_set_version} of {self.view.name}, this code "
                f"computes {self.view.version}: materialize {self.view.publisher}"
            )
        return Lookup(snapshot, values, self.view.feature_names)

    def close(self) -> None:  # noqa: B027 (a store without connections has nothing to close)
        pass


class SqliteOnlineStore(OnlineStore):
    """A SQLite file in WAL mode: one transaction replaces a view's snapshot, and a reader's
    transaction sees one snapshot throughout, while the service reads and a Dagster run publishes.
    A view's tables are ``<view>__snapshot`` and ``<view>__<entity>``."""

    def __init__(self, path: str | Path, view: FeatureView, timeout_seconds: float = 5.0):
        self.path = Path(path)
        self.view = view
        self.timeout_seconds = timeout_seconds
        self._reader: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.path} ({self.view.name})"

    def _table(self, entity: str) -> str:
        return f"{self.view.name}__{entity}"

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are begun explicitly below.
        return sqlite3.connect(
            self.path, timeout=self.timeout_seconds, isolation_level=None, check_same_thread=False
        )

    def _snapshot(self, connection: sqlite3.Connection) -> SnapshotInfo | None:
        table = self._table("snapshot")
        has_table = connection.execute(
            "select 1 from sqlite_master where type = 'table' and name = ?", [table]
        ).fetchone()
        row = has_table and connection.execute(f"select info from {table}").fetchone()
        return SnapshotInfo.from_json(row[0]) if row else None

    def publish(self, closed_day: date, frames: Mapping[str, pd.DataFrame]) -> Publication:
        offered = _new_snapshot(self.view, closed_day, frames)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = self._connect()
        try:
            connection.execute("pragma journal_mode = wal")
            connection.execute("begin immediate")  # the write lock, before reading what is current
            current = self._snapshot(connection)
            if current is not None and current.closed_day > closed_day:
                connection.execute("rollback")
                return Publication(offered, published=False, current=current)
            for entity in self.view.entities:
                table, names = self._table(entity.name), entity.features
                connection.execute(f"drop table if exists {table}")
                connection.execute(
                    f"create table {table} ({entity.key} integer primary key, "
                    + ", ".join(f"{name} real not null" for name in names)
                    + ")"
                )
                connection.executemany(
                    f"insert into {table} values ({', '.join('?' * (len(names) + 1))})",
                    frames[entity.name][[entity.key, *names]].itertuples(index=False, name=None),
                )
            snapshot = self._table("snapshot")
            connection.execute(f"create table if not exists {snapshot} (info text not null)")
            connection.execute(f"delete from {snapshot}")
            connection.execute(f"insert into {snapshot} values (?)", [offered.to_json()])
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
            raise NoSnapshot(f"no file at {self.path}: materialize {self.view.publisher} to publish one")
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

    def _rows(self, ids):
        def read(connection):
            snapshot = self._snapshot(connection)
            if snapshot is None:
                raise NoSnapshot(f"nothing published to {self.uri}: materialize {self.view.publisher}")
            found = []
            for entity, asked in zip(self.view.entities, ids, strict=True):
                unique = sorted(set(asked))
                rows = {}
                # SQLite caps a statement's parameters; ask in chunks.
                for start in range(0, len(unique), 10_000):
                    chunk = unique[start : start + 10_000]
                    for row in connection.execute(
                        f"select {entity.key}, {', '.join(entity.features)} from {self._table(entity.name)} "
                        f"where {entity.key} in ({', '.join('?' * len(chunk))})",
                        chunk,
                    ):
                        rows[row[0]] = row[1:]
                found.append([rows.get(i) for i in asked])
            return snapshot, found

        return self._read(read)

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


# Reads the pointer and every asked field in one atomic script: the snapshot cannot switch halfway.
# ARGV: n (ids per entity), k (entities), the k entity names, then k blocks of n ids.
_LOOKUP = """
local current = redis.call('GET', KEYS[1])
if not current then return false end
local info = cjson.decode(current)
local n, k = tonumber(ARGV[1]), tonumber(ARGV[2])
local snapshot = KEYS[1] .. ':' .. info.version
local result = {current}
for e = 1, k do
  local found = {}
  if n > 0 then
    local first = 2 + k + (e - 1) * n + 1
    found = redis.call('HMGET', snapshot .. ':' .. ARGV[2 + e], unpack(ARGV, first, first + n - 1))
  end
  result[e + 1] = found
end
return result
"""

# Switches the pointer unless it names a later day (ISO dates compare as strings).
_SWITCH = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current).closed_day > ARGV[2] then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


class RedisOnlineStore(OnlineStore):
    """Redis: ``<prefix>:<view>:current`` holds the view's snapshot info; the snapshot itself is one
    hash per entity, ``<prefix>:<view>:current:<version>:<entity>``, id -> JSON list of feature values.

    The prefix carries a hash tag (``{keel}``) so that, on a Redis Cluster, every key of the store is
    on one slot and the scripts stay atomic.
    """

    # Lua's unpack() is bounded by its stack (~8000): a lookup asks at most this many ids per script.
    LOOKUP_CHUNK = 3000

    def __init__(
        self, url: str, view: FeatureView, prefix: str = "{keel}:online", timeout_seconds: float = 0.5
    ):
        import redis

        self.url = url
        self.view = view
        self.prefix = prefix
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self._lookup = self.client.register_script(_LOOKUP)
        self._switch = self.client.register_script(_SWITCH)

    @property
    def uri(self) -> str:
        return f"{self.url.split('@')[-1]} ({self.prefix}:{self.view.name})"  # without credentials

    @property
    def _pointer(self) -> str:
        return f"{self.prefix}:{self.view.name}:current"

    def _call(self, function, *args, **kwargs):
        import redis

        try:
            return function(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"online store {self.uri}: {error}") from error

    def publish(self, closed_day: date, frames: Mapping[str, pd.DataFrame]) -> Publication:
        offered = _new_snapshot(self.view, closed_day, frames)
        versions = f"{self.prefix}:{self.view.name}:versions"
        # Registered first, so that a publisher that dies halfway leaves keys the next one removes.
        self._call(self.client.sadd, versions, offered.version)
        for entity in self.view.entities:
            frame = frames[entity.name]
            hash_key = f"{self._pointer}:{offered.version}:{entity.name}"
            ids = frame[entity.key].to_numpy()
            values = frame[list(entity.features)].to_numpy(dtype="float64")
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
                pipe.delete(*(f"{self._pointer}:{version}:{entity.name}" for entity in self.view.entities))
                pipe.srem(versions, version)
            self._call(pipe.execute)
        return Publication(offered, published=current.version == offered.version, current=current)

    def current(self) -> SnapshotInfo | None:
        value = self._call(self.client.get, self._pointer)
        return SnapshotInfo.from_json(value) if value else None

    def _rows(self, ids):
        names = [entity.name for entity in self.view.entities]
        snapshot, found = None, [[] for _ in names]
        for start in range(0, max(len(ids[0]), 1), self.LOOKUP_CHUNK):
            chunks = [asked[start : start + self.LOOKUP_CHUNK] for asked in ids]
            args = [len(chunks[0]), len(names), *names, *(i for chunk in chunks for i in chunk)]
            result = self._call(self._lookup, keys=[self._pointer], args=args)
            if not result:
                raise NoSnapshot(f"nothing published to {self.uri}: materialize {self.view.publisher}")
            chunk_snapshot = SnapshotInfo.from_json(result[0])
            if snapshot is not None and chunk_snapshot.version != snapshot.version:
                # A publish landed between two chunks of a long lookup: start again on the new one.
                return self._rows(ids)
            snapshot = chunk_snapshot
            for rows, values in zip(found, result[1:], strict=True):
                rows += [json.loads(v) if v is not None else None for v in values]
        return snapshot, found

    def close(self) -> None:
        self.client.close()


def open_store(url: str, namespace: str, view: FeatureView, timeout_seconds: float = 0.5) -> OnlineStore:
    """``view``'s store at a URL: ``sqlite:////absolute/path`` or ``redis://[:password@]host:port/db``.

    A Redis is shared by namespaces, each under its own keys (``{keel:<namespace>}:online``); a
    SQLite file is one namespace's (``resources/environments.py`` gives each its own file)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute():
            raise ValueError(f"online store {url!r}: the SQLite path must be absolute (sqlite:////abs/path)")
        return SqliteOnlineStore(path, view, timeout_seconds=max(timeout_seconds, 1.0))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisOnlineStore(
            url, view, prefix=f"{{keel:{namespace}}}:online", timeout_seconds=timeout_seconds
        )
    raise ValueError(f"online store {url!r}: expected sqlite:////abs/path or redis://host:port/db")
