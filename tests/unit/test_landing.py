"""The landing zone: what a source system delivers, read back exactly as the lake's contract needs it."""

import os
from datetime import date, timedelta

import pyarrow as pa
import pytest

from resources.lake import LakeError, LocalLake
from resources.sources import LandingZone
from tests.payments import SimulatorSource, split_labels, split_transactions

DAY = date(2026, 1, 12)
SOURCE = SimulatorSource(n_customers=300, n_terminals=600, malformed_rows_per_day=10)


@pytest.fixture
def landing(tmp_path):
    return LandingZone(lake=LocalLake(root=str(tmp_path)))


def test_a_landed_day_checks_exactly_as_the_source_extract_would(landing):
    landing.deliver(SOURCE, [DAY])
    customers = landing.read("customers")["customer_id"]
    terminals = landing.read("terminals")["terminal_id"]
    from_source = split_transactions(SOURCE.transactions(DAY), DAY, customers, terminals)
    from_landing = split_transactions(landing.read("transactions", DAY), DAY, customers, terminals)
    assert from_landing.valid.equals(from_source.valid)
    # Malformed values arrive as the text they were sent as, and reach quarantine with their reason.
    assert from_landing.quarantined["reason"].tolist() == from_source.quarantined["reason"].tolist()
    assert len(from_landing.quarantined) == SOURCE.malformed_rows_per_day
    # The flags reported on DAY are about the payments of a label delay earlier.
    paid = SOURCE.transactions(DAY - timedelta(days=SOURCE.label_delay_days))
    paid_on = DAY - timedelta(days=SOURCE.label_delay_days)
    known = split_transactions(paid, paid_on, customers, terminals)
    labels = split_labels(landing.read("fraud_labels", DAY), known.valid["transaction_id"])
    expected = split_labels(SOURCE.fraud_labels(DAY), known.valid["transaction_id"])
    assert labels.valid.equals(expected.valid) and len(labels.valid) > 0


def test_daily_extracts_land_as_text_under_one_folder_per_day(landing, tmp_path):
    landing.deliver_day(SOURCE, DAY)
    assert (tmp_path / "landing" / "transactions" / f"date={DAY}" / "transactions.parquet").exists()
    assert all(
        pa.types.is_large_string(t) or pa.types.is_string(t)
        for t in landing.read("transactions", DAY).schema.types
    )


def test_a_day_that_has_not_landed_is_named_in_the_error(landing):
    with pytest.raises(LakeError, match=r"no transactions delivered for 2026-01-12.*keel land"):
        landing.read("transactions", DAY)


def test_landed_files_are_listed_oldest_first_with_their_day_and_strays_apart(landing, tmp_path):
    landing.deliver_day(SOURCE, date(2026, 1, 13))
    landing.deliver_day(SOURCE, DAY)
    stray = tmp_path / "landing" / "transactions" / "notes.txt"
    stray.write_text("not an extract")
    files, strays = landing.landed()
    assert [(f.feed, f.day) for f in files] == [
        ("transactions", date(2026, 1, 13)),
        ("fraud_labels", date(2026, 1, 13)),
        ("transactions", DAY),
        ("fraud_labels", DAY),
    ]
    assert list(strays) == ["landing/transactions/notes.txt"]
    assert landing.last_day() == date(2026, 1, 13)


def test_a_file_delivered_again_is_a_new_arrival(landing, tmp_path):
    landing.deliver_day(SOURCE, DAY)
    (first,) = [f for f in landing.landed()[0] if f.feed == "transactions"]
    path = tmp_path / first.path
    os.utime(path, (first.modified + 60, first.modified + 60))
    (again,) = [f for f in landing.landed()[0] if f.feed == "transactions"]
    assert again.path == first.path and again.identity != first.identity


def test_the_fallback_schedule_fetches_yesterday_from_the_source_into_the_landing_zone(landing, tmp_path):
    import dagster as dg

    from platform_assets.defs.jobs import daily_fetch, fetch_from_source

    result = fetch_from_source.execute_in_process(
        partition_key=DAY.isoformat(), resources={"landing": landing, "upstream": SOURCE}
    )
    assert result.success
    assert [(f.feed, f.day) for f in landing.landed()[0]] == [("transactions", DAY), ("fraud_labels", DAY)]
    assert daily_fetch.cron_schedule == "0 1 * * *"
    assert daily_fetch.default_status == dg.DefaultScheduleStatus.STOPPED


def test_the_drift_knob_changes_the_world_from_the_given_day_on():
    from platform_assets.defs.payments.simulator import Drift

    drifted = SOURCE.drifting_from(DAY, amount_scale=3.0, card_testing=True)
    assert drifted.simulation().drift == Drift(start=DAY, amount_scale=3.0, card_testing=True)
    assert SOURCE.simulation().drift is None and drifted.n_customers == SOURCE.n_customers
