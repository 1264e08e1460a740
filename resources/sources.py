"""Where new data comes from. For now the reference source: Keel's card-payment simulator."""

from __future__ import annotations

from abc import abstractmethod
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from keel import simulator


class PaymentsSource(dg.ConfigurableResource):
    """A source system of card payments: reference tables, daily transactions, delayed fraud labels."""

    @abstractmethod
    def customers(self) -> pd.DataFrame: ...

    @abstractmethod
    def terminals(self) -> pd.DataFrame: ...

    @abstractmethod
    def transactions(self, day: date) -> pd.DataFrame:
        """The raw extract of the payments made on ``day``."""

    @abstractmethod
    def fraud_labels(self, day: date) -> pd.DataFrame:
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
