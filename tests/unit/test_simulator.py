from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from platform_assets.defs.payments.simulator import (
    CARD_TESTING,
    COMPROMISED_CUSTOMER,
    COMPROMISED_TERMINAL,
    LABEL_DELAY_DAYS,
    MALFORMED_KINDS,
    Drift,
    SimulationConfig,
    as_text,
    population,
    simulate_day,
)

SMALL = SimulationConfig(n_customers=500, n_terminals=1000)
DAY = date(2026, 1, 5)
TRANSACTION_COLUMNS = ["transaction_id", "transacted_at", "customer_id", "terminal_id", "amount"]


def days_from(start: date, n: int) -> list[date]:
    return [start + timedelta(days=k) for k in range(n)]


def labelled(config: SimulationConfig, days: list[date]) -> pd.DataFrame:
    """The transactions of several days joined with their labels, with a ``day`` column."""
    frames = []
    for d in days:
        simulated = simulate_day(config, d)
        frames.append(simulated.transactions.merge(simulated.labels, on="transaction_id").assign(day=d))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def forty_default_days() -> pd.DataFrame:
    return labelled(SimulationConfig(), days_from(SimulationConfig().start_date, 40))


def test_a_regenerated_day_is_identical():
    first, second = simulate_day(SMALL, DAY), simulate_day(SMALL, DAY)
    assert first.transactions.equals(second.transactions)
    assert first.labels.equals(second.labels)


def test_another_seed_gives_other_transactions():
    other = simulate_day(replace(SMALL, seed=SMALL.seed + 1), DAY)
    assert not other.transactions.equals(simulate_day(SMALL, DAY).transactions)


def test_a_day_does_not_depend_on_the_days_generated_before_it():
    config = replace(SMALL, seed=2026)
    alone = simulate_day(config, DAY)
    for d in [DAY + timedelta(days=3), *days_from(config.start_date, 4)]:
        simulate_day(config, d)
    after_others = simulate_day(config, DAY)
    assert alone.transactions.equals(after_others.transactions)
    assert alone.labels.equals(after_others.labels)


@pytest.mark.parametrize("start", [SMALL.start_date, date(2026, 3, 1)])
def test_there_are_no_transactions_before_the_start_date(start):
    day = simulate_day(replace(SMALL, start_date=start), start - timedelta(days=1))
    assert day.transactions.empty and day.labels.empty
    assert list(day.transactions.columns) == TRANSACTION_COLUMNS
    assert list(day.labels.columns) == ["transaction_id", "is_fraud", "fraud_scenario"]


def test_transaction_ids_are_unique_across_days():
    ids = pd.concat([simulate_day(SMALL, d).transactions["transaction_id"] for d in days_from(DAY, 5)])
    assert len(ids) > 0
    assert ids.is_unique


def test_transactions_fall_inside_their_day_with_non_negative_amounts():
    transactions = simulate_day(SMALL, DAY).transactions
    assert (transactions["transacted_at"].dt.normalize() == pd.Timestamp(DAY)).all()
    assert (transactions["amount"] >= 0).all()


def test_customers_pay_at_terminals_within_the_radius():
    pop = population(SMALL)
    transactions = simulate_day(SMALL, DAY).transactions
    customers = pop.customers.set_index("customer_id").loc[transactions["customer_id"]]
    terminals = pop.terminals.set_index("terminal_id").loc[transactions["terminal_id"]]
    distance = np.hypot(
        customers["x"].to_numpy() - terminals["x"].to_numpy(),
        customers["y"].to_numpy() - terminals["y"].to_numpy(),
    )
    assert (distance <= SMALL.radius).all()


def test_every_amount_above_220_is_a_fraud(forty_default_days):
    large = forty_default_days[forty_default_days["amount"] > 220]
    assert len(large) > 0
    assert (large["is_fraud"] == 1).all()


def test_every_transaction_on_a_compromised_terminal_that_day_is_a_fraud(forty_default_days):
    tx = forty_default_days
    compromised = tx.loc[tx["fraud_scenario"] == COMPROMISED_TERMINAL, ["terminal_id", "day"]]
    compromised = compromised.drop_duplicates()
    assert len(compromised) > 0
    on_compromised = tx.merge(compromised, on=["terminal_id", "day"])
    assert (on_compromised["is_fraud"] == 1).all()


def test_about_a_third_of_a_compromised_customers_transactions_are_frauds(forty_default_days):
    tx = forty_default_days
    hit = tx.loc[tx["fraud_scenario"] == COMPROMISED_CUSTOMER, ["customer_id", "day"]].drop_duplicates()
    assert len(hit) > 0
    share = (tx.merge(hit, on=["customer_id", "day"])["fraud_scenario"] == COMPROMISED_CUSTOMER).mean()
    assert 0.2 <= share <= 0.6


def test_the_fraud_rate_is_between_0_3_and_2_percent(forty_default_days):
    after_30_days = SimulationConfig().start_date + timedelta(days=30)
    fraud_rate = forty_default_days.loc[forty_default_days["day"] < after_30_days, "is_fraud"].mean()
    assert 0.003 <= fraud_rate <= 0.02


def test_labels_are_delayed_by_seven_days_by_default():
    assert SimulationConfig().label_delay_days == LABEL_DELAY_DAYS == 7


def test_amount_drift_doubles_amounts_from_its_start():
    drifting = replace(SMALL, drift=Drift(start=DAY, amount_scale=2.0))
    later = DAY + timedelta(days=2)
    drifted, usual = (simulate_day(c, later).transactions["amount"].mean() for c in (drifting, SMALL))
    assert 1.8 <= drifted / usual <= 2.2


def test_days_before_the_drift_start_are_untouched():
    drifting = replace(SMALL, drift=Drift(start=DAY, amount_scale=2.0, card_testing=True))
    before = DAY - timedelta(days=1)
    assert simulate_day(drifting, before).transactions.equals(simulate_day(SMALL, before).transactions)


def test_card_testing_frauds_appear_from_the_drift_start_at_night():
    drift_start = DAY + timedelta(days=5)
    tx = labelled(replace(SMALL, drift=Drift(start=drift_start, card_testing=True)), days_from(DAY, 10))
    card_testing = tx[tx["fraud_scenario"] == CARD_TESTING]
    assert card_testing["day"].min() == drift_start
    assert set(card_testing["day"]) == set(days_from(drift_start, 5))
    assert (card_testing["transacted_at"].dt.hour < 5).all()


def test_card_testing_amounts_are_tiny():
    tx = labelled(replace(SMALL, drift=Drift(start=DAY, card_testing=True)), days_from(DAY, 25))
    card_testing = tx[tx["fraud_scenario"] == CARD_TESTING]
    assert len(card_testing) > 0
    assert card_testing["amount"].between(1, 5).all()  # uniform(1, 5), rounded to cents


def test_malformed_rows_are_appended_cycling_through_the_kinds():
    n = len(MALFORMED_KINDS) + 3
    clean = simulate_day(SMALL, DAY)
    day = simulate_day(replace(SMALL, malformed_rows_per_day=n), DAY)
    assert len(day.transactions) == len(clean.transactions) + n
    kinds, order = day.malformed["kind"].tolist(), list(MALFORMED_KINDS)
    first = order.index(kinds[0])
    assert kinds == [order[(first + i) % len(order)] for i in range(n)]
    assert day.malformed["source_row"].tolist() == list(range(len(clean.transactions), len(day.transactions)))
    assert day.labels.equals(clean.labels)


def test_each_malformed_row_is_a_real_row_broken_only_in_the_column_of_its_kind():
    config = replace(SMALL, malformed_rows_per_day=200)
    day = simulate_day(config, DAY)
    clean = as_text(simulate_day(SMALL, DAY).transactions)
    damaged = []
    for row in day.malformed.itertuples():
        kept = [c for c in TRANSACTION_COLUMNS[1:] if c != MALFORMED_KINDS[row.kind]]
        originals = set(clean[kept].itertuples(index=False, name=None))
        if tuple(day.transactions.loc[row.source_row, kept]) not in originals:
            damaged.append((row.source_row, row.kind))
    assert damaged == []


def test_an_extract_with_malformed_rows_is_text_and_its_clean_rows_read_back_exactly():
    clean = simulate_day(SMALL, DAY).transactions
    extract = simulate_day(replace(SMALL, malformed_rows_per_day=3), DAY).transactions
    assert set(extract.dtypes.astype(str)) == {"string"}
    head = extract.iloc[: len(clean)]
    assert (pd.to_datetime(head["transacted_at"]) == clean["transacted_at"]).all()
    assert (pd.to_numeric(head["amount"]) == clean["amount"]).all()
    assert (pd.to_numeric(head["transaction_id"]) == clean["transaction_id"]).all()
