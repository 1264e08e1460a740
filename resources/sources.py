"""Where new data comes from: the landing zone that ingestion reads, and the system that fills it.

A source system (here Keel's card-payment simulator, ``SimulatorSource``) delivers files into the
landing zone of the lake; the lake's ingestion reads them from there (``LandingZone``). Both are
``PaymentsSource``s, so a test can hand either to the ingestion assets. Layout of the landing zone::

    <lake>/landing/customers/customers.parquet                     reference tables, replaced whole
    <lake>/landing/terminals/terminals.parquet
    <lake>/landing/transactions/date=YYYY-MM-DD/transactions.parquet   the payments of the day
    <lake>/landing/fraud_labels/date=YYYY-MM-DD/fraud_labels.parquet   the flags reported that day

Daily extracts are stored as text, as a source system sends them: the lake's contract parses them,
so a malformed value reaches quarantine with the text it arrived as.
"""

from __future__ import annotations

import io
import re
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keel_core import simulator
from resources.lake import Lake, LakeError, parquet_bytes

REFERENCE_FEEDS = ("customers", "terminals")
DAILY_FEEDS = ("transactions", "fraud_labels")
_LANDED = re.compile(
    r"(?P<feed>customers|terminals)/(?P=feed)\.parquet"
    r"|(?P<daily>transactions|fraud_labels)/date=(?P<day>\d{4}-\d{2}-\d{2})/(?P=daily)\.parquet"
)


class UnreadableFile(ValueError):
    """A delivered file that cannot be read at all (empty, truncated, not Parquet): the source
    system must deliver it again; reading it again cannot help."""


class PaymentsSource(dg.ConfigurableResource):
    """A source system of card payments: reference tables, daily transactions, delayed fraud labels."""

    def location(self, feed: str, day: date | None = None) -> str:
        """Where ``feed`` (of ``day``) comes from, for errors and metadata."""
        return f"{type(self).__name__}:{feed}" + (f"/{day}" if day else "")

    @abstractmethod
    def customers(self) -> pd.DataFrame: ...

    @abstractmethod
    def terminals(self) -> pd.DataFrame: ...

    @abstractmethod
    def transactions(self, day: date) -> pa.Table | pd.DataFrame:
        """The raw extract of the payments made on ``day``, as delivered (the contract parses it)."""

    @abstractmethod
    def fraud_labels(self, day: date) -> pa.Table | pd.DataFrame:
        """The fraud flags that became known on ``day`` (for the transactions of an earlier day)."""


class SimulatorSource(PaymentsSource):
    """The simulator as a source system. Every day is regenerated identically on demand."""

    seed: int = 42
    n_customers: int = 5_000
    n_terminals: int = 10_000
    start_date: str = simulator.WORLD_START.isoformat()
    label_delay_days: int = simulator.LABEL_DELAY_DAYS
    malformed_rows_per_day: int = 0
    drift_start: str | None = None
    drift_amount_scale: float = 1.0
    drift_card_testing: bool = False

    def drifting_from(self, day: date, amount_scale: float, card_testing: bool) -> SimulatorSource:
        """The same source with the world changing from ``day`` on (the drift knob)."""
        return self.model_copy(
            update={
                "drift_start": day.isoformat(),
                "drift_amount_scale": amount_scale,
                "drift_card_testing": card_testing,
            }
        )

    def simulation(self) -> simulator.SimulationConfig:
        drift = None
        if self.drift_start:
            drift = simulator.Drift(
                start=date.fromisoformat(self.drift_start),
                amount_scale=self.drift_amount_scale,
                card_testing=self.drift_card_testing,
            )
        return simulator.SimulationConfig(
            seed=self.seed,
            n_customers=self.n_customers,
            n_terminals=self.n_terminals,
            start_date=date.fromisoformat(self.start_date),
            label_delay_days=self.label_delay_days,
            drift=drift,
            malformed_rows_per_day=self.malformed_rows_per_day,
        )

    def customers(self) -> pd.DataFrame:
        return simulator.population(self.simulation()).customers.drop(columns="nearby_terminal_count")

    def terminals(self) -> pd.DataFrame:
        return simulator.population(self.simulation()).terminals

    def transactions(self, day: date) -> pd.DataFrame:
        return simulator.simulate_day(self.simulation(), day).transactions

    def fraud_labels(self, day: date) -> pd.DataFrame:
        transaction_day = day - timedelta(days=self.label_delay_days)
        return simulator.simulate_day(self.simulation(), transaction_day).labels


@dataclass(frozen=True)
class LandedFile:
    path: str  # relative to the lake's root
    feed: str  # customers, terminals, transactions or fraud_labels
    day: date | None  # the partition, for daily feeds
    modified: float  # POSIX seconds: a re-delivered file is a new arrival

    @property
    def identity(self) -> str:
        """Names this delivery of this file: the same file delivered again is a new identity."""
        return f"{self.path}@{self.modified:.6f}"


class LandingZone(PaymentsSource):
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
                "(`uv run keel land` delivers days from the simulator)"
            ) from missing
        try:
            return pq.read_table(io.BytesIO(payload))
        except (pa.ArrowException, OSError) as error:  # empty, truncated, not Parquet, corrupt pages
            raise UnreadableFile(
                f"{self.location(feed, day)}: not a readable Parquet file ({error})"
            ) from error

    def _reference(self, feed: str) -> pd.DataFrame:
        table = self._read(feed)
        try:
            return table.to_pandas()
        except (pa.ArrowException, UnicodeDecodeError) as error:
            raise UnreadableFile(f"{self.location(feed)}: {error}") from error

    def customers(self) -> pd.DataFrame:
        return self._reference("customers")

    def terminals(self) -> pd.DataFrame:
        return self._reference("terminals")

    def transactions(self, day: date) -> pa.Table:
        return self._read("transactions", day)

    def fraud_labels(self, day: date) -> pa.Table:
        return self._read("fraud_labels", day)

    # What a source system does: deliver files. The simulator uses these; so can tests.
    def deliver_reference(self, upstream: PaymentsSource) -> list[str]:
        return [
            self.lake.write_file(self._path("customers"), parquet_bytes(upstream.customers())),
            self.lake.write_file(self._path("terminals"), parquet_bytes(upstream.terminals())),
        ]

    def deliver_day(self, upstream: PaymentsSource, day: date) -> list[str]:
        """Land ``day``'s payments and the flags reported that day, as text."""
        return [
            self.lake.write_file(self._path(feed, day), parquet_bytes(simulator.as_text(extract)))
            for feed, extract in (
                ("transactions", upstream.transactions(day)),
                ("fraud_labels", upstream.fraud_labels(day)),
            )
        ]

    def deliver(self, upstream: PaymentsSource, days: Iterable[date]) -> list[str]:
        return self.deliver_reference(upstream) + [p for day in days for p in self.deliver_day(upstream, day)]

    def deliver_missing(self, upstream: PaymentsSource, days: Iterable[date]) -> list[date]:
        """Deliver the days (and reference tables) not delivered yet; returns the days delivered.
        The landing zone is shared by namespaces: what is there already stays as it was, so the
        sensors of another namespace do not take it for a corrected delivery."""
        if self.customers_missing():
            self.deliver_reference(upstream)
        there = {f.day for f in self.landed()[0] if f.feed == "transactions"}
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

    def customers_missing(self) -> bool:
        return not any(f.feed == "customers" for f in self.landed()[0])

    def last_day(self) -> date | None:
        """The newest day whose payments have landed."""
        days = [f.day for f in self.landed()[0] if f.feed == "transactions"]
        return max(days, default=None)
