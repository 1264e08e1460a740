"""Where new data comes from: the landing zone that ingestion reads, and the systems that fill it.

A source system (``SourceSystem``; the demo's is a source folder's simulator) delivers files into the
landing zone of the lake; the lake's ingestion reads them from there (``LandingZone``). Both are
``Feeds``, so a test can hand either to the ingestion assets. Layout of the landing zone, per feed
(a table a source folder declares, ``keel.Source``)::

    <lake>/landing/<feed>/<feed>.parquet                      a reference table, replaced whole
    <lake>/landing/<feed>/date=YYYY-MM-DD/<feed>.parquet      a daily feed: what the day delivered

A source system sends daily extracts as text, if it likes: the lake's contract parses them, so a
malformed value reaches quarantine with the text it arrived as.
"""

from __future__ import annotations

import io
import re
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import ClassVar

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keel_core.settings import Settings
from resources.lake import Lake, LakeError, parquet_bytes

_FEED = r"[a-z][a-z0-9_]*"
_LANDED = re.compile(
    rf"(?P<feed>{_FEED})/(?P=feed)\.parquet|(?P<daily>{_FEED})/date=(?P<day>\d{{4}}-\d{{2}}-\d{{2}})/(?P=daily)\.parquet"
)


class UnreadableFile(ValueError):
    """A delivered file that cannot be read at all (empty, truncated, not Parquet): the source
    system must deliver it again; reading it again cannot help."""


class Feeds(dg.ConfigurableResource):
    """What a source delivers, per feed: a reference table (``day`` None) or a day's extract."""

    def location(self, feed: str, day: date | None = None) -> str:
        """Where ``feed`` (of ``day``) comes from, for errors and metadata."""
        return f"{type(self).__name__}:{feed}" + (f"/{day}" if day else "")

    @abstractmethod
    def read(self, feed: str, day: date | None = None) -> pa.Table | pd.DataFrame:
        """The feed's extract (of ``day``, for a daily feed), as delivered: the contract parses it."""


class SourceSystem(Feeds):
    """A system that delivers its feeds when asked (``fetch_from_source``, ``keel land``)."""

    REFERENCE_FEEDS: ClassVar[tuple[str, ...]] = ()
    DAILY_FEEDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> SourceSystem:
        """The system as the deployment's settings configure it."""


@dataclass(frozen=True)
class LandedFile:
    path: str  # relative to the lake's root
    feed: str  # the folder it landed in: a feed a source declares, or not
    day: date | None  # the partition, for daily feeds
    modified: float  # POSIX seconds: a re-delivered file is a new arrival

    @property
    def identity(self) -> str:
        """Names this delivery of this file: the same file delivered again is a new identity."""
        return f"{self.path}@{self.modified:.6f}"


class LandingZone(Feeds):
    """The landing zone of the lake, read as a source: what a source system delivered, per feed and day."""

    lake: Lake
    prefix: str = "landing"

    def _path(self, feed: str, day: date | None = None) -> str:
        if day is None:
            return f"{self.prefix}/{feed}/{feed}.parquet"
        return f"{self.prefix}/{feed}/date={day.isoformat()}/{feed}.parquet"

    def location(self, feed: str, day: date | None = None) -> str:
        """Where a feed's file (of ``day``) lands: what an error about it names."""
        return f"{self.lake.uri}/{self._path(feed, day)}"

    def _read(self, feed: str, day: date | None = None) -> pa.Table:
        """The landed file as it is: no value converted (the contract parses them)."""
        path = self._path(feed, day)
        try:
            payload = self.lake.read_file(path)
        except LakeError as missing:
            when = f" for {day}" if day else ""
            raise LakeError(
                f"nothing has landed in {self.lake.uri}/{path}: no {feed} delivered{when} "
                "(`uv run keel land` delivers days from the source system)"
            ) from missing
        try:
            return pq.read_table(io.BytesIO(payload))
        except (pa.ArrowException, OSError) as error:  # empty, truncated, not Parquet, corrupt pages
            raise UnreadableFile(
                f"{self.location(feed, day)}: not a readable Parquet file ({error})"
            ) from error

    def read(self, feed: str, day: date | None = None) -> pa.Table | pd.DataFrame:
        """The landed file as it is: no value converted (the contract parses them). A reference
        table comes as a frame: it is checked whole, as typed."""
        table = self._read(feed, day)
        if day is not None:
            return table
        try:
            return table.to_pandas()
        except (pa.ArrowException, UnicodeDecodeError) as error:
            raise UnreadableFile(f"{self.location(feed)}: {error}") from error

    # What a source system does: deliver files. `keel land` and the fetch job use these; so can tests.
    def deliver_reference(self, upstream: SourceSystem) -> list[str]:
        return [
            self.lake.write_file(self._path(feed), parquet_bytes(upstream.read(feed)))
            for feed in upstream.REFERENCE_FEEDS
        ]

    def deliver_day(self, upstream: SourceSystem, day: date) -> list[str]:
        """Land ``day``'s extract of every daily feed, as the system sends it."""
        return [
            self.lake.write_file(self._path(feed, day), parquet_bytes(upstream.read(feed, day)))
            for feed in upstream.DAILY_FEEDS
        ]

    def deliver(self, upstream: SourceSystem, days: Iterable[date]) -> list[str]:
        return self.deliver_reference(upstream) + [p for day in days for p in self.deliver_day(upstream, day)]

    def deliver_missing(self, upstream: SourceSystem, days: Iterable[date]) -> list[date]:
        """Deliver the days (and reference tables) not delivered yet; returns the days delivered.
        The landing zone is shared by namespaces: what is there already stays as it was, so the
        sensors of another namespace do not take it for a corrected delivery."""
        landed = self.landed()[0]
        if not {f.feed for f in landed} >= set(upstream.REFERENCE_FEEDS):
            self.deliver_reference(upstream)
        there = {f.day for f in landed if f.feed in upstream.DAILY_FEEDS}
        missing = [day for day in days if day not in there]
        for day in missing:
            self.deliver_day(upstream, day)
        return missing

    def landed(self) -> tuple[list[LandedFile], dict[str, float]]:
        """Every file in the landing zone, oldest first, and those that break the layout (path ->
        modification time)."""
        files, strays = [], {}
        for path, modified in self.lake.modified_times(self.prefix).items():
            match = _LANDED.fullmatch(path.removeprefix(f"{self.prefix}/"))
            if match is None:
                strays[path] = modified
                continue
            day = match["day"]
            files.append(
                LandedFile(
                    path, match["feed"] or match["daily"], date.fromisoformat(day) if day else None, modified
                )
            )
        return sorted(files, key=lambda f: (f.modified, f.path)), strays

    def last_day(self) -> date | None:
        """The newest day a daily feed has landed for."""
        return max((f.day for f in self.landed()[0] if f.day is not None), default=None)
