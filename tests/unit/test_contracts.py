from dataclasses import replace
from datetime import date

import pandas as pd
import pytest

from keel_core.contracts import ContractError, check_reference
from platform_assets.defs.payments.simulator import (
    MALFORMED_KINDS,
    SimulationConfig,
    population,
    simulate_day,
)
from tests.payments import contract, split_labels, split_transactions

SMALL = SimulationConfig(n_customers=500, n_terminals=1000)
DAY = date(2026, 1, 5)
KNOWN_IDS = range(10)


def extract(*rows) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["transaction_id", "transacted_at", "customer_id", "terminal_id", "amount"]
    )


def split(frame: pd.DataFrame):
    return split_transactions(frame, DAY, KNOWN_IDS, KNOWN_IDS)


def split_simulated(config: SimulationConfig):
    pop = population(config)
    day = simulate_day(config, DAY)
    return day, split_transactions(
        day.transactions, DAY, pop.customers["customer_id"], pop.terminals["terminal_id"]
    )


@pytest.fixture(scope="module")
def malformed_day():
    return split_simulated(replace(SMALL, malformed_rows_per_day=len(MALFORMED_KINDS)))


def test_a_clean_simulated_day_passes_whole():
    day, result = split_simulated(SMALL)
    assert result.quarantined.empty
    assert result.valid.equals(day.transactions)
    assert result.valid.dtypes.astype(str).to_dict() == {
        "transaction_id": "int64",
        "transacted_at": "datetime64[ns]",
        "customer_id": "int64",
        "terminal_id": "int64",
        "amount": "float64",
    }


@pytest.mark.parametrize(("kind", "column"), MALFORMED_KINDS.items())
def test_each_kind_of_malformed_row_is_quarantined_for_its_column(malformed_day, kind, column):
    day, result = malformed_day
    source_row = day.malformed.loc[day.malformed["kind"] == kind, "source_row"].item()
    quarantined = result.quarantined.set_index("source_row")
    assert source_row in quarantined.index
    assert quarantined.loc[source_row, "reason"].startswith(f"{column}: ")


def test_a_day_with_malformed_rows_splits_into_the_clean_day_and_the_injected_rows(malformed_day):
    day, result = malformed_day
    assert len(result.valid) + len(result.quarantined) == len(day.transactions)
    assert sorted(result.quarantined["source_row"]) == sorted(day.malformed["source_row"])
    assert result.valid.equals(simulate_day(SMALL, DAY).transactions)


def test_a_row_with_two_problems_gets_both_reasons():
    result = split(extract((1, "2026-01-05 10:00:00", 99, 1, "12,50 EUR")))
    assert result.valid.empty
    reasons = result.quarantined.loc[0, "reason"].split("; ")
    assert sorted(reason.split(":")[0] for reason in reasons) == ["amount", "customer_id"]


def test_the_first_of_two_duplicated_ids_stays_valid():
    result = split(extract((7, "2026-01-05 10:00:00", 1, 1, 10.0), (7, "2026-01-05 11:00:00", 2, 2, 20.0)))
    assert result.valid["customer_id"].tolist() == [1]
    assert result.quarantined["source_row"].tolist() == [1]
    assert result.quarantined.loc[0, "reason"].startswith("transaction_id: duplicate")


@pytest.mark.parametrize(
    ("change", "column"),
    [(lambda f: f.drop(columns="amount"), "amount"), (lambda f: f.assign(channel="web"), "channel")],
    ids=["missing", "unexpected"],
)
def test_a_wrong_column_refuses_the_whole_extract(change, column):
    with pytest.raises(ContractError, match=column):
        split(change(extract((1, "2026-01-05 10:00:00", 1, 1, 10.0))))


@pytest.mark.parametrize(
    ("timestamp", "valid"),
    [("2026-01-05 00:00:00", True), ("2026-01-05 23:59:59", True), ("2026-01-06 00:00:00", False)],
)
def test_only_timestamps_inside_the_partitions_day_are_valid(timestamp, valid):
    result = split(extract((1, timestamp, 1, 1, 10.0)))
    assert (len(result.valid), len(result.quarantined)) == ((1, 0) if valid else (0, 1))


def test_quarantined_rows_keep_their_raw_values_as_text():
    result = split(extract((1, "2026-01-05 10:00:00", 1, 1, "12,50 EUR")))
    row = result.quarantined.loc[0]
    assert row["amount"] == "12,50 EUR"
    assert row["transacted_at"] == "2026-01-05 10:00:00"
    assert "12,50 EUR" in row["reason"]


def test_labels_about_unknown_transactions_bad_flags_or_duplicates_are_quarantined():
    labels = pd.DataFrame(
        {"transaction_id": [1, 2, 3, 1, 77], "is_fraud": [0, 1, 2, 0, 0], "fraud_scenario": [0, 1, 1, 0, 0]}
    )
    result = split_labels(labels, [1, 2, 3])
    assert result.valid["transaction_id"].tolist() == [1, 2]
    assert result.valid["is_fraud"].dtype == "int8"
    reasons = dict(zip(result.quarantined["source_row"], result.quarantined["reason"], strict=True))
    assert sorted(reasons) == [2, 3, 4]
    assert reasons[2].startswith("is_fraud: ")
    assert reasons[3].startswith("transaction_id: duplicate")
    assert reasons[4].startswith("transaction_id: ")


def test_simulated_labels_pass_whole():
    day = simulate_day(SMALL, DAY)
    result = split_labels(day.labels, day.transactions["transaction_id"])
    assert result.quarantined.empty
    assert result.valid.equals(day.labels)


@pytest.mark.parametrize(
    ("table", "schema"),
    [
        (lambda pop: pop.customers.drop(columns="nearby_terminal_count"), contract("customers")),
        (lambda pop: pop.terminals, contract("terminals")),
    ],
    ids=["customers", "terminals"],
)
def test_the_simulators_reference_tables_pass_their_contract(table, schema):
    frame = table(population(SMALL))
    assert check_reference(frame, schema).equals(frame)


def test_a_duplicated_customer_id_refuses_the_customers_table():
    customers = population(SMALL).customers.drop(columns="nearby_terminal_count")
    with pytest.raises(ContractError, match="customer_id"):
        check_reference(pd.concat([customers, customers.iloc[[3]]], ignore_index=True), contract("customers"))
