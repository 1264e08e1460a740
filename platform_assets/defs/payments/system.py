"""The simulator as the source system of the ``payments`` source: it delivers, when asked, the
reference tables (customers, terminals) and each day's payments and the fraud flags reported that
day, as a card-payment processor would (daily extracts as text). Every day is regenerated
identically on demand. Its knobs are the deployment's ``KEEL_SIMULATOR_*`` settings."""

from __future__ import annotations

from datetime import date, timedelta
from typing import ClassVar

import pandas as pd

from keel_core.settings import Settings
from platform_assets.defs.payments import simulator
from resources.sources import SourceSystem


class SimulatorSource(SourceSystem):
    REFERENCE_FEEDS: ClassVar[tuple[str, ...]] = ("customers", "terminals")
    DAILY_FEEDS: ClassVar[tuple[str, ...]] = ("transactions", "fraud_labels")

    seed: int = 42
    n_customers: int = 5_000
    n_terminals: int = 10_000
    start_date: str = simulator.WORLD_START.isoformat()
    label_delay_days: int = simulator.LABEL_DELAY_DAYS
    malformed_rows_per_day: int = 0
    drift_start: str | None = None
    drift_amount_scale: float = 1.0
    drift_card_testing: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SimulatorSource:
        """The simulator with its knobs from ``KEEL_SIMULATOR_*`` (drift: ``KEEL_SIMULATOR_DRIFT_START``
        and what changes from then on). Its world starts with the calendar: there is no history
        before the first partition."""
        return cls(
            seed=settings.simulator_seed,
            n_customers=settings.simulator_customers,
            n_terminals=settings.simulator_terminals,
            start_date=settings.first_day.isoformat(),
            malformed_rows_per_day=settings.simulator_malformed_rows_per_day,
            drift_start=settings.simulator_drift_start.isoformat()
            if settings.simulator_drift_start
            else None,
            drift_amount_scale=settings.simulator_drift_amount_scale,
            drift_card_testing=settings.simulator_drift_card_testing,
        )

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

    def read(self, feed: str, day: date | None = None) -> pd.DataFrame:
        """What the system delivers for ``feed``: a reference table typed, a day's extract as text."""
        feeds = {
            None: {"customers": self.customers, "terminals": self.terminals},
            "daily": {"transactions": self.transactions, "fraud_labels": self.fraud_labels},
        }["daily" if day else None]
        if feed not in feeds:
            raise KeyError(f"the simulator delivers no {'daily ' if day else ''}feed {feed!r}")
        return simulator.as_text(feeds[feed](day)) if day else feeds[feed]()

    # The same, typed: what tests and the demo's summary compare with.
    def customers(self) -> pd.DataFrame:
        return simulator.population(self.simulation()).customers.drop(columns="nearby_terminal_count")

    def terminals(self) -> pd.DataFrame:
        return simulator.population(self.simulation()).terminals

    def transactions(self, day: date) -> pd.DataFrame:
        return simulator.simulate_day(self.simulation(), day).transactions

    def fraud_labels(self, day: date) -> pd.DataFrame:
        """The fraud flags that became known on ``day`` (for the transactions of an earlier day)."""
        transaction_day = day - timedelta(days=self.label_delay_days)
        return simulator.simulate_day(self.simulation(), transaction_day).labels
