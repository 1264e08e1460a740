"""The payments source as its folder declares it (``platform_assets/defs/payments/defs.yaml``): its
contracts and ingestion assets, for tests that check one table without loading the code location."""

from datetime import date
from functools import cache
from pathlib import Path

import dagster as dg
import yaml

from keel_core import contracts
from platform_assets.components.source import Source
from platform_assets.defs.payments.system import SimulatorSource

__all__ = ["SimulatorSource", "asset", "contract", "split_labels", "split_transactions"]

DEFS_YAML = Path(__file__).parents[1] / "platform_assets" / "defs" / "payments" / "defs.yaml"


@cache
def source() -> Source:
    return Source.resolve_from_yaml(
        yaml.safe_dump(yaml.safe_load(DEFS_YAML.read_text())["attributes"], sort_keys=False)
    )


def contract(table: str) -> contracts.Table:
    spec = source().tables[table]
    return contracts.Table(name=table, columns=spec.columns, daily=spec.daily)


def asset(table: str) -> dg.AssetsDefinition:
    """The asset that ingests ``table`` (for a daily table, with its quarantine)."""
    return next(a for a in source().assets() if dg.AssetKey(["lake", table]) in a.keys)


def split_transactions(extract, day: date, customer_ids, terminal_ids, **options) -> contracts.Split:
    known = {"customer_id": customer_ids, "terminal_id": terminal_ids}
    return contracts.split(extract, contract("raw_transactions"), day, known, **options)


def split_labels(extract, transaction_ids) -> contracts.Split:
    return contracts.split(
        extract, contract("raw_fraud_labels"), date(2026, 1, 1), {"transaction_id": transaction_ids}
    )
