"""Event-time windows: what an entity did in the last minutes and hours before an event.

A use case declares ``EventWindows``: the entities an event belongs to (a payment: its card and its
terminal) and the windows to look back over. For each event and entity it gets, from the events of
the same entity *before* it in event time (ties broken by the event id, so an order exists even
within a second):

* per window ``w``: how many there were with a time in ``[t - w, t)``, and the sum of their values;
* the seconds since the previous one, if there was one within the longest window (NaN otherwise).

Offline the use case computes them point in time from its warehouse (``offline_sql``); online its
service asks a store that records each event as it is scored (``record``: in order, atomic per
call of up to ``RedisEventStore.CHUNK`` events, an event id recorded once: a retried event, or one
repeated within a call, is answered each time and recorded at its first time), so that an event sees
the ones scored before it. ``record`` takes events exactly as the stores keep them or refuses them
naming the field (integer ids and keys, naive times to the microsecond, finite values): a cast on
the way would change an id or shift a time. Both read the
same definition, and a test replays a day through the stores to hold them equal to the offline rows.

Two stores behind one interface, chosen by the online store's URL: a SQLite file (local, one
transaction per call) and Redis (production, one Lua script per call). Events are kept for twice the
longest window of wall-clock time after their entity's last event in Redis (key expiry), after
their own in SQLite (a periodic delete), and at most ``MAX_EVENTS_PER_KEY`` per entity in Redis (an
entity busier than that within the longest window, which a card never is, would be undercounted
online): an event dated far in the future or past is stored under its own time, where it changes
no other event's window.

Pure module: no Dagster, no BentoML.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keel_core.online_store import StoreUnavailable

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_EVENTS_PER_KEY = 10_000  # per entity (a card, a terminal): the oldest beyond this are dropped
# Offline sums are exact: in floating point, a sum depends on the order its terms arrive in, and that
# order on how many days a run reads (measured: a day's 24 h amounts differed in the last bits between
# a one-day and a ten-day run), so a rebuilt day would differ from itself and `keel reproduce` would
# report changed rows that nobody changed. Each value is rounded to 18 decimals (a double has at most
# 17 significant digits: an amount up to 1e5 keeps all of them), summed exactly, and the sum rounded
# once to a double. A window's sum must stay under 1e20 in magnitude, else the query fails, loudly.
EXACT = "decimal(38, 18)"
_MICROS = 1_000_000


@dataclass(frozen=True)
class EventWindows:
    """What a store keeps and answers for a use case's events."""

    name: str  # the use case's: its table or keys
    entities: tuple[str, ...]  # the ids each event carries, one per entity (customer, terminal)
    windows_seconds: tuple[int, ...]  # shortest first

    def __post_init__(self):
        if bad := [n for n in (self.name, *self.entities) if not _NAME.match(n)]:
            raise ValueError(f"event windows {self.name!r}: not a lowercase identifier: {bad}")
        if not self.entities or not self.windows_seconds:
            raise ValueError(f"event windows {self.name!r}: at least one entity and one window")
        if list(self.windows_seconds) != sorted(set(self.windows_seconds)) or self.windows_seconds[0] <= 0:
            raise ValueError(f"event windows {self.name!r}: windows are positive and increasing")

    @property
    def horizon_seconds(self) -> int:
        return self.windows_seconds[-1]

    def columns(self, entity: str) -> tuple[str, ...]:
        """The columns of one entity's answers, in the order ``record`` returns them."""
        return (
            *(f"{entity}_count_{w}s" for w in self.windows_seconds),
            *(f"{entity}_sum_{w}s" for w in self.windows_seconds),
            f"{entity}_seconds_since_previous",
        )

    @property
    def width(self) -> int:
        return 2 * len(self.windows_seconds) + 1


@dataclass(frozen=True)
class Events:
    """Events to record, in the order they are answered: aligned arrays."""

    ids: np.ndarray  # integers, non-negative
    at: np.ndarray  # datetime64 (naive wall time, as the warehouse stores it), to the microsecond
    keys: Mapping[str, np.ndarray]  # integers, per entity
    values: np.ndarray  # float64: what the windows sum (a payment's amount)


def offline_sql(spec: EventWindows, events: str, history: str, entity_keys: Mapping[str, str]) -> str:
    """DuckDB SQL of the answers ``record`` gives, for every event of the relation ``events``, from
    the relation ``history`` (which holds the events before them, back by the longest window at least).

    Both relations have the columns ``id``, ``at`` (timestamp), ``value`` and, per entity, the column
    named in ``entity_keys``. One row per event: ``id`` then ``spec.columns(entity)`` per entity.
    """
    selects, joins = ["id"], []
    for n, entity in enumerate(spec.entities):
        key, h = entity_keys[entity], f"h{n}"
        aggregates = [
            *(
                f"count({h}.id) filter (where {h}.at >= e.at - interval {w} second)"
                for w in spec.windows_seconds
            ),
            *(
                f"coalesce(sum({h}.value::{EXACT}) filter (where {h}.at >= e.at - interval {w} second), 0)"
                "::double"
                for w in spec.windows_seconds
            ),
            f"date_diff('microsecond', max({h}.at), e.at) / {_MICROS}.0",
        ]
        named = ", ".join(f"{a} as {c}" for a, c in zip(aggregates, spec.columns(entity), strict=True))
        joins.append(
            f"""{entity} as (
                select e.id, {named}
                from {events} e
                left join {history} {h}
                    on {h}.{key} = e.{key}
                    and {h}.at >= e.at - interval {spec.horizon_seconds} second
                    -- before e: earlier, or at the same time with a lower id. As one row comparison:
                    -- written with `or`, DuckDB 1.4 joins by nested loop (22 s for 14 days, 0.4 s so)
                    and ({h}.at, {h}.id) < (e.at, e.id)
                group by e.id, e.at
            )"""
        )
        selects += [f"{entity}.{column}" for column in spec.columns(entity)]
    using = " ".join(f"join {entity} using (id)" for entity in spec.entities[1:])
    return f"""
        with {", ".join(joins)}
        select {", ".join(selects)} from {spec.entities[0]} {using}
    """


class EventStore(ABC):
    spec: EventWindows

    @abstractmethod
    def _record(
        self, ids: list[int], at: list[int], keys: list[list[int]], values: list[float]
    ) -> np.ndarray:
        """Answers then records each event, in order; ``at`` in microseconds, ``keys`` per entity."""

    def record(self, events: Events) -> np.ndarray:
        """For each event: per entity of the spec, ``spec.columns(entity)``, from the events
        of that entity recorded before it in event time; then the event is recorded (an id already
        recorded is not again, so a retried request counts once). One row per event, float64.

        Raises ValueError naming the field for events the stores cannot keep exactly, and
        StoreUnavailable when the store cannot be reached or fails."""
        if sorted(events.keys) != sorted(self.spec.entities):
            raise ValueError(f"events of {self.spec.name} carry an id per entity {list(self.spec.entities)}")
        ids = _integers("ids", events.ids)
        if (ids < 0).any():
            raise ValueError("ids: event ids are non-negative")
        keys = [_integers(f"keys[{entity!r}]", events.keys[entity]) for entity in self.spec.entities]
        at, values = _micros(events.at), _finite("values", events.values)
        if {len(a) for a in (ids, at, values, *keys)} != {len(ids)}:
            raise ValueError("ids, at, values and keys: one per event (their lengths differ)")
        if not len(ids):
            return np.empty((0, len(self.spec.entities) * self.spec.width))
        # Recorded in event-time order, so that a call's answers do not depend on how its events
        # were ordered (a batch sent unsorted gets what it would have in order).
        order = np.lexsort((ids, at))
        answers = np.empty((len(ids), len(self.spec.entities) * self.spec.width))
        answers[order] = self._record(
            ids[order].tolist(), at[order].tolist(), [k[order].tolist() for k in keys], values[order].tolist()
        )
        return answers

    def close(self) -> None:  # noqa: B027 (a store without connections has nothing to close)
        pass


def _integers(field: str, values) -> np.ndarray:
    """``values`` as int64, refused unless they are integers already: a float id may have been
    rounded (2**53 + 1), a text or boolean one is a caller's bug."""
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(f"{field}: integers, one per event (got {array.dtype} of shape {array.shape})")
    if array.dtype.kind == "u" and len(array) and array.max() > np.iinfo("int64").max:
        raise ValueError(f"{field}: above the largest 64-bit integer")
    return array.astype("int64")


def _micros(values) -> np.ndarray:
    """Naive datetime64 times as microseconds since 1970, refused if they are not times (an integer's
    unit is a guess; an aware time's zone would be dropped), NaT, or finer than a microsecond or out
    of its range (a conversion would change them)."""
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind != "M":
        raise ValueError(
            f"at: naive datetime64 times, one per event (got {array.dtype} of shape {array.shape})"
        )
    if np.isnat(array).any():
        raise ValueError("at: a time is missing (NaT)")
    micros = array.astype("datetime64[us]")
    if (micros.astype(array.dtype) != array).any():
        raise ValueError("at: a time is finer than a microsecond or out of the range the stores keep")
    return micros.astype("int64")


def _finite(field: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        raise ValueError(f"{field}: numbers, one per event (got {array.dtype} of shape {array.shape})")
    array = array.astype("float64")
    if not np.isfinite(array).all():
        raise ValueError(f"{field}: a value is NaN or infinite")
    return array


class SqliteEventStore(EventStore):
    """The events in a table ``<name>__events`` of the online store's SQLite file; a call is one
    write transaction, so concurrent workers each see the others' events once committed."""

    CLEANUP_EVERY_SECONDS = 60.0

    def __init__(self, path: str | Path, spec: EventWindows, timeout_seconds: float = 5.0):
        self.path, self.spec = Path(path), spec
        self.table = f"{spec.name}__events"
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._cleaned = 0.0
        self.timeout_seconds = timeout_seconds

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=self.timeout_seconds, isolation_level=None, check_same_thread=False
            )
            connection.execute("pragma journal_mode = wal")
            connection.execute(
                f"create table if not exists {self.table} (entity text not null, key integer not null, "
                "id integer not null, at_us integer not null, value real not null, "
                "recorded_at real not null, primary key (entity, key, id)) without rowid"
            )
            connection.execute(
                f"create index if not exists {self.table}_by_time on {self.table} (entity, key, at_us)"
            )
            connection.execute(
                f"create index if not exists {self.table}_by_age on {self.table} (recorded_at)"
            )
            self._connection = connection
        return self._connection

    def _record(self, ids, at, keys, values):
        spec, width = self.spec, self.spec.width
        windows = [w * _MICROS for w in spec.windows_seconds]
        answers = np.full((len(ids), len(spec.entities) * width), np.nan)
        counts = ", ".join("coalesce(sum(at_us >= ?), 0)" for _ in windows)
        sums = ", ".join("total(case when at_us >= ? then value end)" for _ in windows)
        read = (
            f"select {counts}, {sums}, max(at_us) from {self.table} where entity = ? and key = ? "
            "and at_us >= ? and (at_us < ? or (at_us = ? and id < ?))"
        )
        # Only an event already recorded is skipped: any other failed constraint is an error.
        write = f"insert into {self.table} values (?, ?, ?, ?, ?, ?) on conflict (entity, key, id) do nothing"
        now = time.time()
        with self._lock:
            try:
                connection = self._connect()
                connection.execute("begin immediate")
                try:
                    for i, (event, t, value) in enumerate(zip(ids, at, values, strict=True)):
                        for e, entity in enumerate(spec.entities):
                            key = keys[e][i]
                            bounds = [t - w for w in windows]
                            row = connection.execute(
                                read, [*bounds, *bounds, entity, key, t - windows[-1], t, t, event]
                            ).fetchone()
                            previous = row[-1]
                            answers[i, e * width : (e + 1) * width] = [
                                *row[:-1],
                                (t - previous) / _MICROS if previous is not None else np.nan,
                            ]
                        for e, entity in enumerate(spec.entities):
                            connection.execute(write, [entity, keys[e][i], event, t, value, now])
                    if now - self._cleaned > self.CLEANUP_EVERY_SECONDS:
                        connection.execute(
                            f"delete from {self.table} where recorded_at < ?",
                            [now - 2 * spec.horizon_seconds],
                        )
                        self._cleaned = now
                    connection.execute("commit")
                except BaseException:
                    connection.execute("rollback")
                    raise
            except sqlite3.OperationalError as error:
                raise StoreUnavailable(f"event store {self.path} ({self.table}): {error}") from error
        return answers

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


# ARGV: n events, k entities, w windows, the w windows in microseconds, the cap, the expiry in ms,
# then n blocks (id, at_us, value). KEYS: per event, per entity, its sorted set then its hash.
# Per event and entity it returns w counts, w sums (text: Lua would truncate a number) and the
# previous event's time ('none' for none: any number is a time, 1969's too). Ids are compared as
# decimal text: by length, then by digits (they are non-negative).
_RECORD = """
local n, k, w = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local windows = {}
for j = 1, w do windows[j] = tonumber(ARGV[3 + j]) end
local cap, expiry_ms = tonumber(ARGV[4 + w]), tonumber(ARGV[5 + w])
local function before(id, other)
  if #id ~= #other then return #id < #other end
  return id < other
end
local result = {}
for i = 0, n - 1 do
  local base = 6 + w + 3 * i
  local id, at, value = ARGV[base], tonumber(ARGV[base + 1]), ARGV[base + 2]
  for e = 0, k - 1 do
    local zkey, hkey = KEYS[2 * (i * k + e) + 1], KEYS[2 * (i * k + e) + 2]
    local counts, sums, previous = {}, {}, nil
    for j = 1, w do counts[j], sums[j] = 0, 0.0 end
    -- As text: Redis would format a Lua number with 14 digits, too few for microseconds.
    local since = string.format('%.0f', at - windows[w])
    local found = redis.call('ZRANGEBYSCORE', zkey, since, ARGV[base + 1], 'WITHSCORES')
    for m = 1, #found, 2 do
      local other, other_at = found[m], tonumber(found[m + 1])
      if other_at < at or before(other, id) then
        local amount = tonumber(redis.call('HGET', hkey, other))
        for j = 1, w do
          if other_at >= at - windows[j] then
            counts[j] = counts[j] + 1
            sums[j] = sums[j] + amount
          end
        end
        if previous == nil or other_at > previous then previous = other_at end
      end
    end
    for j = 1, w do result[#result + 1] = counts[j] end
    for j = 1, w do result[#result + 1] = string.format('%.17g', sums[j]) end
    if previous == nil then result[#result + 1] = 'none' else result[#result + 1] = previous end
  end
  for e = 0, k - 1 do
    local zkey, hkey = KEYS[2 * (i * k + e) + 1], KEYS[2 * (i * k + e) + 2]
    if redis.call('HSETNX', hkey, id, value) == 1 then
      redis.call('ZADD', zkey, ARGV[base + 1], id)
      local extra = redis.call('ZCARD', zkey) - cap
      if extra > 0 then
        for _, old in ipairs(redis.call('ZPOPMIN', zkey, extra)) do redis.call('HDEL', hkey, old) end
      end
    end
    redis.call('PEXPIRE', zkey, expiry_ms)
    redis.call('PEXPIRE', hkey, expiry_ms)
  end
end
return result
"""


class RedisEventStore(EventStore):
    """Per entity id, a sorted set of event ids by time and a hash of their values:
    ``<prefix>:<name>:events:<entity>:<id>`` and ``...:values:<entity>:<id>``, under the online
    store's hash-tagged prefix, so that one script may touch them all on a Redis Cluster."""

    CHUNK = 500  # events per script: a script blocks the server while it runs

    def __init__(self, url: str, spec: EventWindows, prefix: str, timeout_seconds: float = 0.5):
        import redis

        self.url, self.spec, self.prefix = url, spec, prefix
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self._script = self.client.register_script(_RECORD)

    def _record(self, ids, at, keys, values):
        import redis

        spec = self.spec
        windows = [w * _MICROS for w in spec.windows_seconds]
        expiry_ms = 2 * spec.horizon_seconds * 1000
        rows = []
        for start in range(0, len(ids), self.CHUNK):
            chunk = range(start, min(start + self.CHUNK, len(ids)))
            redis_keys = [
                f"{self.prefix}:{spec.name}:{kind}:{entity}:{keys[e][i]}"
                for i in chunk
                for e, entity in enumerate(spec.entities)
                for kind in ("events", "values")
            ]
            args = [len(chunk), len(spec.entities), len(windows), *windows, MAX_EVENTS_PER_KEY, expiry_ms]
            args += [x for i in chunk for x in (ids[i], at[i], repr(values[i]))]
            try:
                flat = self._script(keys=redis_keys, args=args)
            except redis.RedisError as error:  # unreachable, timed out, busy, or the script failed
                raise StoreUnavailable(f"event store {self.url.split('@')[-1]}: {error}") from error
            answers = np.asarray(
                [np.nan if x == b"none" else float(x) for x in flat], dtype="float64"
            ).reshape(len(chunk), -1)
            for e in range(len(spec.entities)):
                column = (e + 1) * spec.width - 1
                answers[:, column] = (np.asarray(at[chunk.start : chunk.stop]) - answers[:, column]) / _MICROS
            rows.append(answers)
        return np.vstack(rows)

    def close(self) -> None:
        self.client.close()


def open_event_store(
    url: str, namespace: str, spec: EventWindows, timeout_seconds: float = 0.5
) -> EventStore:
    """``spec``'s events in the online store at ``url`` (``keel_core.online_store.open_store``'s URLs,
    under the same namespace)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute():
            raise ValueError(f"online store {url!r}: the SQLite path must be absolute (sqlite:////abs/path)")
        return SqliteEventStore(path, spec, timeout_seconds=max(timeout_seconds, 1.0))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisEventStore(url, spec, f"{{keel:{namespace}}}:online", timeout_seconds)
    raise ValueError(f"online store {url!r}: expected sqlite:////abs/path or redis://host:port/db")
