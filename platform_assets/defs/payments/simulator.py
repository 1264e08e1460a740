"""Card-payment simulator: the source system of Keel's demo world (the `payments` source).

It follows the simulator of the fraud-detection handbook by Le Borgne et al. (customer and
terminal profiles on a 100x100 grid, three fraud scenarios), vectorised with numpy so that a
day of ~10,000 transactions takes milliseconds.

Every day is generated from its own random stream, derived from the seed and the date, so any
single day can be regenerated on its own and comes out identical: a lake partition can be
re-run at any time. State that spans days (compromised terminals and customers) is derived the
same way, from the streams of the days that compromised them.

The world starts on ``start_date``: there are no transactions (and nothing compromised) before.
Pure module: numpy, pandas (pyarrow for text) and scipy only, no Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd

WORLD_START = date(2026, 1, 1)
LABEL_DELAY_DAYS = 7
SECONDS_PER_DAY = 86_400
GRID_SIZE = 100.0

# Fraud scenarios, as in the handbook, plus the one that drift can switch on.
GENUINE, LARGE_AMOUNT, COMPROMISED_TERMINAL, COMPROMISED_CUSTOMER, CARD_TESTING = 0, 1, 2, 3, 4
LARGE_AMOUNT_THRESHOLD = 220.0
TERMINALS_COMPROMISED_PER_DAY, TERMINAL_COMPROMISE_DAYS = 2, 28
CUSTOMERS_COMPROMISED_PER_DAY, CUSTOMER_COMPROMISE_DAYS = 3, 14
COMPROMISED_CUSTOMER_FRAUD_SHARE, COMPROMISED_CUSTOMER_AMOUNT_FACTOR = 1 / 3, 5.0

# Transaction ids are days-since-epoch * 1e6 + rank within the day: unique across days,
# identical when a day is regenerated, and readable (the day is in the id).
_ID_EPOCH = date(2000, 1, 1)
_IDS_PER_DAY = 1_000_000

# One named random stream per purpose, so changing one behaviour does not reshuffle the others.
_PROFILES, _TRANSACTIONS, _TERMINAL_COMPROMISE, _CUSTOMER_COMPROMISE, _DRIFT, _MALFORMED = range(6)

# The kinds of malformed row the simulator can emit, and the column each one breaks.
MALFORMED_KINDS: dict[str, str] = {
    "missing_transaction_id": "transaction_id",
    "duplicate_transaction_id": "transaction_id",
    "missing_customer_id": "customer_id",
    "unknown_customer": "customer_id",
    "unknown_terminal": "terminal_id",
    "unparseable_amount": "amount",
    "negative_amount": "amount",
    "absurd_amount": "amount",
    "missing_timestamp": "transacted_at",
    "timestamp_outside_day": "transacted_at",
}


@dataclass(frozen=True)
class Drift:
    """A change of the world from ``start`` on, for monitoring to detect.

    ``amount_scale`` multiplies every customer's spending; ``card_testing`` switches on a new
    fraud pattern: compromised cards making bursts of small payments at night on terminals far
    from the customer.
    """

    start: date
    amount_scale: float = 1.0
    card_testing: bool = False
    card_testing_customers_per_day: int = 5
    card_testing_burst: int = 10


@dataclass(frozen=True)
class SimulationConfig:
    seed: int = 42
    n_customers: int = 5_000
    n_terminals: int = 10_000
    radius: float = 5.0
    start_date: date = WORLD_START
    label_delay_days: int = LABEL_DELAY_DAYS
    drift: Drift | None = None
    malformed_rows_per_day: int = 0


@dataclass(frozen=True)
class Population:
    """Customer and terminal profiles, and which terminals each customer uses."""

    customers: pd.DataFrame
    terminals: pd.DataFrame
    # Nearby terminals in CSR form: customer i uses nearby[offsets[i]:offsets[i + 1]].
    nearby_offsets: np.ndarray = field(repr=False)
    nearby_terminals: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Day:
    """One simulated day, as a source system would deliver it.

    ``transactions`` is the raw extract (including malformed rows, if asked for), without fraud
    flags: those are only known later. ``labels`` holds the fraud flag of each well-formed
    transaction, for the label feed to publish ``label_delay_days`` later. ``malformed`` lists
    the injected bad rows by their position in the extract (``source_row``) and kind.
    """

    date: date
    transactions: pd.DataFrame
    labels: pd.DataFrame
    malformed: pd.DataFrame


def _rng(config: SimulationConfig, stream: int, day: date | None = None) -> np.random.Generator:
    key = [config.seed, stream] + ([day.toordinal()] if day is not None else [])
    return np.random.default_rng(np.random.SeedSequence(key))


@lru_cache(maxsize=4)
def population(config: SimulationConfig) -> Population:
    """Build (once per config) the customer and terminal profiles."""
    from scipy.spatial import cKDTree

    rng = _rng(config, _PROFILES)
    n_c, n_t = config.n_customers, config.n_terminals
    mean_amount = rng.uniform(5, 100, n_c)
    customers = pd.DataFrame(
        {
            "customer_id": np.arange(n_c, dtype="int64"),
            "x": rng.uniform(0, GRID_SIZE, n_c),
            "y": rng.uniform(0, GRID_SIZE, n_c),
            "mean_amount": mean_amount,
            "std_amount": mean_amount / 2,
            "mean_transactions_per_day": rng.uniform(0, 4, n_c),
        }
    )
    terminals = pd.DataFrame(
        {
            "terminal_id": np.arange(n_t, dtype="int64"),
            "x": rng.uniform(0, GRID_SIZE, n_t),
            "y": rng.uniform(0, GRID_SIZE, n_t),
        }
    )
    tree = cKDTree(terminals[["x", "y"]].to_numpy())
    nearby = tree.query_ball_point(customers[["x", "y"]].to_numpy(), r=config.radius)
    counts = np.fromiter((len(n) for n in nearby), dtype="int64", count=n_c)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    flat = np.fromiter((t for n in nearby for t in sorted(n)), dtype="int64", count=int(offsets[-1]))
    customers["nearby_terminal_count"] = counts
    return Population(customers, terminals, offsets, flat)


def _compromised(config: SimulationConfig, day: date, stream: int, per_day: int, days: int, pool: int):
    """Entities compromised on any of the ``days`` days up to and including ``day``.

    Each day's choice comes from that day's own stream, so it is the same whichever day asks.
    """
    chosen = [
        _rng(config, stream, d).choice(pool, size=per_day, replace=False)
        for d in (day - timedelta(days=k) for k in range(days))
        if d >= config.start_date
    ]
    return np.unique(np.concatenate(chosen)) if chosen else np.empty(0, dtype="int64")


def _empty_day(day: date) -> Day:
    transactions = pd.DataFrame(
        {
            "transaction_id": pd.Series(dtype="int64"),
            "transacted_at": pd.Series(dtype="datetime64[ns]"),
            "customer_id": pd.Series(dtype="int64"),
            "terminal_id": pd.Series(dtype="int64"),
            "amount": pd.Series(dtype="float64"),
        }
    )
    labels = pd.DataFrame(
        {
            "transaction_id": pd.Series(dtype="int64"),
            "is_fraud": pd.Series(dtype="int8"),
            "fraud_scenario": pd.Series(dtype="int8"),
        }
    )
    return Day(day, transactions, labels, pd.DataFrame({"source_row": [], "kind": []}))


def simulate_day(config: SimulationConfig, day: date) -> Day:
    """Generate one day of transactions (and their fraud labels)."""
    if day < config.start_date:
        return _empty_day(day)
    transactions, labels = _clean_day(config, day)
    # Copies: the cached frames are shared, the caller's are its own to change.
    transactions, labels = transactions.copy(), labels.copy()
    malformed = pd.DataFrame({"source_row": pd.Series(dtype="int64"), "kind": pd.Series(dtype="str")})
    if config.malformed_rows_per_day:
        transactions, malformed = inject_malformed(
            transactions, config.malformed_rows_per_day, _rng(config, _MALFORMED, day), population(config)
        )
    return Day(day, transactions, labels, malformed)


# A source delivers day D's payments and, the same day, the flags about D - label delay: the last
# few days stay cached so that the flag feed does not generate its day a second time.
@lru_cache(maxsize=16)
def _clean_day(config: SimulationConfig, day: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    pop = population(config)
    rng = _rng(config, _TRANSACTIONS, day)
    customers = pop.customers
    drifting = config.drift is not None and day >= config.drift.start

    # How many transactions each customer makes; customers with no terminal nearby make none.
    counts = rng.poisson(customers["mean_transactions_per_day"].to_numpy())
    counts[customers["nearby_terminal_count"].to_numpy() == 0] = 0
    who = np.repeat(np.arange(len(customers)), counts)
    n = len(who)

    # Time of day: normal around noon, redrawn until it falls inside the day.
    seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, n)
    outside = (seconds < 0) | (seconds >= SECONDS_PER_DAY)
    while outside.any():
        seconds[outside] = rng.normal(SECONDS_PER_DAY / 2, 20_000, int(outside.sum()))
        outside = (seconds < 0) | (seconds >= SECONDS_PER_DAY)

    # Amount: normal(mean, std); a negative draw becomes uniform in [0, 2 * mean].
    mean = customers["mean_amount"].to_numpy()[who]
    std = customers["std_amount"].to_numpy()[who]
    amount = rng.normal(mean, std)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    if drifting:
        amount *= config.drift.amount_scale

    # Terminal: uniform among the customer's nearby terminals.
    start = pop.nearby_offsets[who]
    width = pop.nearby_offsets[who + 1] - start
    terminal = pop.nearby_terminals[start + (rng.random(n) * width).astype("int64")]

    frame = pd.DataFrame({"seconds": seconds, "customer_id": who, "terminal_id": terminal, "amount": amount})
    frame["fraud_scenario"] = np.int8(GENUINE)
    frame = _apply_fraud_scenarios(config, day, frame, rng)
    if drifting and config.drift.card_testing:
        frame = pd.concat([frame, _card_testing(config, day, pop)], ignore_index=True)

    frame = frame.sort_values(["seconds", "customer_id"], kind="stable", ignore_index=True)
    day_number = (day - _ID_EPOCH).days
    transactions = pd.DataFrame(
        {
            "transaction_id": day_number * _IDS_PER_DAY + np.arange(len(frame), dtype="int64"),
            "transacted_at": pd.Timestamp(day) + pd.to_timedelta(np.floor(frame["seconds"]), unit="s"),
            "customer_id": frame["customer_id"].astype("int64"),
            "terminal_id": frame["terminal_id"].astype("int64"),
            "amount": frame["amount"].round(2),
        }
    )
    labels = pd.DataFrame(
        {
            "transaction_id": transactions["transaction_id"],
            "is_fraud": (frame["fraud_scenario"] != GENUINE).astype("int8"),
            "fraud_scenario": frame["fraud_scenario"].astype("int8"),
        }
    )
    return transactions, labels


def _apply_fraud_scenarios(config, day, frame, rng) -> pd.DataFrame:
    scenario = frame["fraud_scenario"].to_numpy().copy()
    amount = frame["amount"].to_numpy().copy()
    # 1. Every amount above the threshold is a fraud.
    scenario[amount > LARGE_AMOUNT_THRESHOLD] = LARGE_AMOUNT
    # 2. Every transaction on a terminal compromised in the last 28 days is a fraud.
    terminals = _compromised(
        config,
        day,
        _TERMINAL_COMPROMISE,
        TERMINALS_COMPROMISED_PER_DAY,
        TERMINAL_COMPROMISE_DAYS,
        config.n_terminals,
    )
    scenario[np.isin(frame["terminal_id"].to_numpy(), terminals)] = COMPROMISED_TERMINAL
    # 3. A third of the transactions of a customer compromised in the last 14 days are frauds,
    #    with five times the amount.
    customers = _compromised(
        config,
        day,
        _CUSTOMER_COMPROMISE,
        CUSTOMERS_COMPROMISED_PER_DAY,
        CUSTOMER_COMPROMISE_DAYS,
        config.n_customers,
    )
    hit = np.isin(frame["customer_id"].to_numpy(), customers) & (
        rng.random(len(frame)) < COMPROMISED_CUSTOMER_FRAUD_SHARE
    )
    amount[hit] *= COMPROMISED_CUSTOMER_AMOUNT_FACTOR
    scenario[hit] = COMPROMISED_CUSTOMER
    return frame.assign(fraud_scenario=scenario, amount=amount)


def _card_testing(config: SimulationConfig, day: date, pop: Population) -> pd.DataFrame:
    """Drift's new fraud pattern: night-time bursts of tiny payments on far-away terminals."""
    rng = _rng(config, _DRIFT, day)
    drift = config.drift
    victims = rng.choice(config.n_customers, size=drift.card_testing_customers_per_day, replace=False)
    who = np.repeat(victims, drift.card_testing_burst)
    n = len(who)
    return pd.DataFrame(
        {
            "seconds": rng.uniform(0, 5 * 3600, n),
            "customer_id": who,
            "terminal_id": rng.integers(0, config.n_terminals, n),
            "amount": rng.uniform(1, 5, n),
            "fraud_scenario": np.int8(CARD_TESTING),
        }
    )


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as a text extract carries it: every column a string, timestamps to the second.
    Converted by Arrow, column at a time: pandas formats each value in Python, 6x slower."""
    import pyarrow as pa

    text = {}
    for name, values in frame.items():
        if isinstance(values.dtype, pd.StringDtype):
            text[name] = values  # text already (an extract with malformed rows)
            continue
        array = pa.array(values, from_pandas=True)
        if pa.types.is_timestamp(array.type):
            array = array.cast(pa.timestamp("s"))
        text[name] = pd.Series(
            pd.arrays.ArrowStringArray(pa.chunked_array([array.cast(pa.string())])), index=frame.index
        )
    return pd.DataFrame(text, index=frame.index)


def inject_malformed(
    transactions: pd.DataFrame, n_rows: int, rng: np.random.Generator, pop: Population
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Append ``n_rows`` broken copies of real rows, rotating through ``MALFORMED_KINDS``.

    The extract becomes text (``string`` columns), as a raw file with a bad value in it is read.
    Returns the extract and a frame of (source_row, kind) for the appended rows.
    """
    if transactions.empty:
        raise ValueError("cannot inject malformed rows into a day without transactions")
    # Rotate through the kinds from a day-dependent offset, so a few rows a day cover them all.
    offset = int(transactions["transacted_at"].min().toordinal()) * n_rows
    kinds = [list(MALFORMED_KINDS)[(offset + i) % len(MALFORMED_KINDS)] for i in range(n_rows)]
    # A fresh index: a row sampled twice must become two independent bad rows. The bad rows are
    # copies of the text of real rows, so the columns a kind leaves alone read exactly as theirs.
    text = as_text(transactions)
    bad = text.sample(n=n_rows, replace=True, random_state=rng).reset_index(drop=True)
    new_ids = transactions["transaction_id"].max() + 1 + np.arange(n_rows)
    bad["transaction_id"] = pd.Series(
        [str(i) for i in new_ids], index=bad.index, dtype=bad["transaction_id"].dtype
    )
    day_start = transactions["transacted_at"].min().normalize()
    # What each kind writes into its column (MALFORMED_KINDS names the column).
    bad_value = {
        "missing_transaction_id": None,
        "duplicate_transaction_id": text["transaction_id"].iloc[0],
        "missing_customer_id": None,
        "unknown_customer": str(len(pop.customers) + 1_000),
        "unknown_terminal": str(len(pop.terminals) + 1_000),
        "unparseable_amount": "12,50 EUR",
        "negative_amount": "-42.0",
        "absurd_amount": "5000000000.0",
        "missing_timestamp": None,
        "timestamp_outside_day": str(day_start + pd.Timedelta(days=3, hours=1)),
    }
    for row, kind in zip(bad.index, kinds, strict=True):
        bad.at[row, MALFORMED_KINDS[kind]] = bad_value[kind]
    extract = pd.concat([text, bad], ignore_index=True)
    rows = np.arange(len(transactions), len(extract), dtype="int64")
    return extract, pd.DataFrame({"source_row": rows, "kind": kinds})
