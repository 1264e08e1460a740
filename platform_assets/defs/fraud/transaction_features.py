"""The fraud model's features: what they are, and the one way to compute them, offline and online.

Facts (payments, fraud flags) live in the warehouse marts; features are derived from them here and
nowhere else. The offline rows (``transaction_features``, the ``fraud/features`` asset), the online
snapshot (``online_snapshot``, ``fraud/online_features``) and the payment scorer all import this
module, so a feature cannot mean one thing in training and another in serving. The use case's spec
(``defs.yaml``) names these functions.

Two kinds of feature:

* **Request features** come from the payment itself (amount, weekend, night):
  ``request_features(payments)``, vectorised, the same call for one row online or a million offline.
* **Entity features** are windows over the days *before* the payment's day: a customer's spending,
  a terminal's traffic and fraud rate. For a payment on day D every window ends at the close of day
  D-1, so the values are those of a daily snapshot taken after D-1 closed, and the online store can
  serve exactly them all day D (``customer_features_sql`` / ``terminal_features_sql`` as of D).
* **Velocity features** are what the card and the terminal did in the last 10 minutes, hour and
  24 hours before the payment, to the second, and the time since their previous payment
  (``keel_core.event_windows``: offline from the warehouse's payments, online from the event store
  the scorer records each payment in as it scores it). Then the amount against the card's usual one.

Point in time, by construction: a velocity window counts only payments before the payment (in
time, ties by id). Fraud flags enter only through ``terminal_daily_fraud_reports``,
which counts each flag on the day it was *reported*. A window for day D reads reports of days
D-w .. D-1, so a feature for day D can only use flags known before D began; flags about day D's own
payments arrive on D + label delay at the earliest and are out of reach.

Pure module: pandas, numpy and pandera; SQL strings for DuckDB. No Dagster, no BentoML.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from keel_core import event_windows, online_store

if TYPE_CHECKING:
    import pandera.pandas as pa

# Bump when a definition below changes meaning: the feature asset's code version and every model's
# metadata carry it, so a model is never served features it was not trained on without notice.
FEATURE_SET_VERSION = "2"

WINDOWS_DAYS = (1, 7, 30)
LOOKBACK_DAYS = max(WINDOWS_DAYS)
NIGHT_HOURS = (0, 6)  # [start, end): a payment between 00:00 and 05:59 is a night payment

# The warehouse relations the entity windows read (dbt marts, one row per entity and day).
CUSTOMER_ACTIVITY = "customer_daily_activity"
TERMINAL_ACTIVITY = "terminal_daily_activity"
TERMINAL_FRAUD_REPORTS = "terminal_daily_fraud_reports"


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str
    # The value for an entity with no history in the window (a new card, a quiet terminal):
    # nothing happened, so counts are 0, and a rate or mean over nothing is taken as 0.
    default: float | None
    description: str


REQUEST_FEATURES = (
    Feature("amount", "float64", None, "payment amount"),
    Feature("is_weekend", "int8", None, "1 if the payment is on a Saturday or Sunday"),
    Feature(
        "is_night", "int8", None, f"1 if the payment is between {NIGHT_HOURS[0]}:00 and {NIGHT_HOURS[1]}:00"
    ),
)
CUSTOMER_FEATURES = tuple(
    feature
    for w in WINDOWS_DAYS
    for feature in (
        Feature(f"customer_transactions_{w}d", "int64", 0, f"the customer's payments in the {w} days before"),
        Feature(
            f"customer_mean_amount_{w}d", "float64", 0.0, f"the customer's mean amount in the {w} days before"
        ),
    )
)
TERMINAL_FEATURES = tuple(
    feature
    for w in WINDOWS_DAYS
    for feature in (
        Feature(
            f"terminal_transactions_{w}d", "int64", 0, f"payments at the terminal in the {w} days before"
        ),
        Feature(
            f"terminal_fraud_rate_{w}d",
            "float64",
            0.0,
            f"share of the terminal's payments reported as fraud in the {w} days before (reports known then)",
        ),
    )
)
# The card's and the terminal's payments before this one, by event time (in the store's order).
PAYMENT_WINDOWS = event_windows.EventWindows("fraud", ("customer", "terminal"), (600, 3600, 86400))
_SPANS = {600: "10m", 3600: "1h", 86400: "24h"}
DAY_SECONDS = 86400  # the seconds since the previous payment when there was none in the last day
VELOCITY_FEATURES = tuple(
    feature
    for entity, whose in (("customer", "the card's"), ("terminal", "the terminal's"))
    for feature in (
        *(
            Feature(
                f"{entity}_transactions_{_SPANS[w]}",
                "int64",
                0,
                f"{whose} payments in the {_SPANS[w]} before",
            )
            for w in PAYMENT_WINDOWS.windows_seconds
        ),
        *(
            Feature(
                f"{entity}_amount_{_SPANS[w]}",
                "float64",
                0.0,
                f"{whose} amount paid in the {_SPANS[w]} before",
            )
            for w in PAYMENT_WINDOWS.windows_seconds
        ),
        Feature(
            f"{entity}_seconds_since_previous",
            "float64",
            float(DAY_SECONDS),
            f"seconds since {whose} previous payment ({DAY_SECONDS:,} when none in the day before)",
        ),
    )
)
# Compromised cards pay several times their usual amount (the handbook's third scenario).
RELATIVE_FEATURES = (
    Feature(
        "amount_to_customer_mean_30d",
        "float64",
        1.0,
        "the amount over the card's mean amount of the 30 days before (1 for a card without them)",
    ),
)
FEATURES = REQUEST_FEATURES + CUSTOMER_FEATURES + TERMINAL_FEATURES + VELOCITY_FEATURES + RELATIVE_FEATURES
FEATURE_NAMES = [feature.name for feature in FEATURES]

# What the scoring service looks up per payment: its customer's and its terminal's features
# (published by fraud/online_features, the view named as the use case).
ONLINE_VIEW = online_store.FeatureView(
    "fraud",
    (
        online_store.Entity("customer", "customer_id", tuple(f.name for f in CUSTOMER_FEATURES)),
        online_store.Entity("terminal", "terminal_id", tuple(f.name for f in TERMINAL_FEATURES)),
    ),
    FEATURE_SET_VERSION,
)

# Columns that identify a row of the feature table (the payment's facts, not features), and
# whether its card or terminal had no history: stored before the features (the spec's attributes).
KEY_COLUMNS = {
    "transaction_id": "int64",
    "transaction_date": "datetime64[ns]",
    "transacted_at": "datetime64[ns]",
    "customer_id": "int64",
    "terminal_id": "int64",
}
ENTITY_FLAGS = {"customer": "customer_is_new", "terminal": "terminal_is_new"}


def request_features(payments: pd.DataFrame) -> pd.DataFrame:
    """The features of the payments themselves, from ``amount`` and ``transacted_at``."""
    at = pd.to_datetime(payments["transacted_at"])
    return pd.DataFrame(
        {
            "amount": payments["amount"].astype("float64"),
            "is_weekend": (at.dt.dayofweek >= 5).astype("int8"),
            "is_night": at.dt.hour.between(NIGHT_HOURS[0], NIGHT_HOURS[1] - 1).astype("int8"),
        },
        index=payments.index,
    )


def velocity_values(answers: np.ndarray) -> np.ndarray:
    """``PAYMENT_WINDOWS``' answers (the event store's, or its offline SQL's columns) as
    ``VELOCITY_FEATURES``: no previous payment within the day becomes a day."""
    return np.where(np.isnan(answers), float(DAY_SECONDS), answers)


def relative_values(amount: np.ndarray, customer_mean_30d: np.ndarray) -> np.ndarray:
    """The amount over the card's 30-day mean amount; 1 (as usual) for a card without payments then."""
    usual = np.where(customer_mean_30d > 0, customer_mean_30d, np.nan)
    return np.where(np.isnan(usual), 1.0, np.asarray(amount, dtype="float64") / usual)


def entity_defaults(features: tuple[Feature, ...]) -> dict[str, float]:
    return {feature.name: feature.default for feature in features}


def _as_of_dates(first: date, last: date) -> str:
    return (
        f"select cast(unnest(range(date '{first.isoformat()}', date '{last.isoformat()}' + 1, "
        "interval 1 day)) as date) as as_of_date"
    )


def _in_window(column: str, days: int) -> str:
    # The as-of day itself is excluded: windows end at the close of the previous day.
    return f"{column} >= as_of_date - {days}"


def customer_features_sql(first: date, last: date) -> str:
    """One row per (as_of_date, customer_id) with activity in the lookback, for every as-of day in
    [first, last]. Entities without a row take their defaults."""
    columns = []
    for w in WINDOWS_DAYS:
        in_window = _in_window("activity_date", w)
        columns.append(
            f"coalesce(sum(transaction_count) filter (where {in_window}), 0) as customer_transactions_{w}d"
        )
        columns.append(
            f"coalesce(sum(amount_sum) filter (where {in_window}) "
            f"/ nullif(sum(transaction_count) filter (where {in_window}), 0), 0.0) "
            f"as customer_mean_amount_{w}d"
        )
    return f"""
        with as_of as ({_as_of_dates(first, last)})
        select as_of_date, customer_id, {", ".join(columns)}
        from as_of
        join {CUSTOMER_ACTIVITY}
            on activity_date between as_of_date - {LOOKBACK_DAYS} and as_of_date - 1
        group by as_of_date, customer_id
    """


def terminal_features_sql(first: date, last: date) -> str:
    """One row per (as_of_date, terminal_id) with payments or fraud reports in the lookback."""
    traffic, risk = [], []
    traffic_names = [f"terminal_transactions_{w}d" for w in WINDOWS_DAYS]
    risk_names = [f"terminal_fraud_rate_{w}d" for w in WINDOWS_DAYS]
    for w in WINDOWS_DAYS:
        traffic.append(
            f"coalesce(sum(transaction_count) filter (where {_in_window('activity_date', w)}), 0) "
            f"as terminal_transactions_{w}d"
        )
        in_window = _in_window("reported_date", w)
        risk.append(
            f"coalesce(sum(fraud_count) filter (where {in_window}) "
            f"/ nullif(sum(labelled_transaction_count) filter (where {in_window}), 0), 0.0) "
            f"as terminal_fraud_rate_{w}d"
        )
    return f"""
        with
        as_of as ({_as_of_dates(first, last)}),
        traffic as (
            select as_of_date, terminal_id, {", ".join(traffic)}
            from as_of
            join {TERMINAL_ACTIVITY}
                on activity_date between as_of_date - {LOOKBACK_DAYS} and as_of_date - 1
            group by as_of_date, terminal_id
        ),
        risk as (
            -- Only flags reported before the as-of day: what was known at the close of the day before.
            select as_of_date, terminal_id, {", ".join(risk)}
            from as_of
            join {TERMINAL_FRAUD_REPORTS}
                on reported_date between as_of_date - {LOOKBACK_DAYS} and as_of_date - 1
            group by as_of_date, terminal_id
        )
        select
            as_of_date,
            terminal_id,
            {", ".join(f"coalesce(traffic.{name}, 0) as {name}" for name in traffic_names)},
            {", ".join(f"coalesce(risk.{name}, 0.0) as {name}" for name in risk_names)}
        from traffic
        full outer join risk using (as_of_date, terminal_id)
    """


def transaction_features_sql(first: date, last: date, transactions: str = "transactions") -> str:
    """The payments of days [first, last] joined to their entities' features as of their own day.

    Request features are not computed here but by ``request_features``, the function the online
    service calls, so there is one definition of them.
    """
    entity_columns = ", ".join(
        f"coalesce({feature.name}, {feature.default!r}) as {feature.name}"
        for feature in CUSTOMER_FEATURES + TERMINAL_FEATURES
    )
    facts = "transaction_id as id, transacted_at as at, amount as value, customer_id, terminal_id"
    # The day before the first, for the velocity windows of its first hours.
    history_from = first - timedelta(seconds=PAYMENT_WINDOWS.horizon_seconds)
    velocity = event_windows.offline_sql(
        PAYMENT_WINDOWS,
        "velocity_events",
        "velocity_history",
        {"customer": "customer_id", "terminal": "terminal_id"},
    )
    return f"""
        with
        payments as (
            select transaction_id, transaction_date, transacted_at, customer_id, terminal_id, amount
            from {transactions}
            where transaction_date between date '{first.isoformat()}' and date '{last.isoformat()}'
        ),
        velocity_events as (select {facts} from payments),
        velocity_history as (
            select {facts} from {transactions}
            where transaction_date between date '{history_from.isoformat()}' and date '{last.isoformat()}'
        ),
        velocity as ({velocity}),
        customer_windows as ({customer_features_sql(first, last)}),
        terminal_windows as ({terminal_features_sql(first, last)})
        select
            payments.*,
            {entity_columns},
            velocity.* exclude (id),
            customer_windows.customer_id is null as customer_is_new,
            terminal_windows.terminal_id is null as terminal_is_new
        from payments
        join velocity on velocity.id = payments.transaction_id
        left join customer_windows
            on payments.customer_id = customer_windows.customer_id
            and payments.transaction_date = customer_windows.as_of_date
        left join terminal_windows
            on payments.terminal_id = terminal_windows.terminal_id
            and payments.transaction_date = terminal_windows.as_of_date
        order by payments.transaction_id
    """


def fraud_labels(connection, first: date, last: date) -> pd.DataFrame:
    """The fraud flag of each payment of days [first, last] whose flag has been reported: one row
    per payment (``transaction_id``, ``transaction_date``, ``is_fraud``), from the warehouse mart."""
    labels = connection.execute(
        "select transaction_id, transaction_date, cast(is_fraud as integer) as is_fraud from fraud_labels "
        "where transaction_date between ? and ? order by transaction_id",
        [first, last],
    ).df()
    return labels.astype(
        {"transaction_id": "int64", "transaction_date": "datetime64[ns]", "is_fraud": "int64"}
    )


def transaction_features(connection, first: date, last: date) -> pd.DataFrame:
    """The feature table for days [first, last], from a DuckDB connection to the warehouse.

    One row per payment: its key columns, every feature in ``FEATURE_NAMES``, and whether its
    customer or terminal had no history (they then carry the defaults).
    """
    joined = connection.execute(transaction_features_sql(first, last)).df()
    requested = request_features(joined)
    store_columns = [c for entity in PAYMENT_WINDOWS.entities for c in PAYMENT_WINDOWS.columns(entity)]
    velocity = pd.DataFrame(
        velocity_values(joined[store_columns].to_numpy(dtype="float64")),
        columns=[feature.name for feature in VELOCITY_FEATURES],
        index=joined.index,
    )
    frame = joined.drop(columns=["amount", *store_columns]).join(requested).join(velocity)
    frame["amount_to_customer_mean_30d"] = relative_values(
        frame["amount"].to_numpy(), frame["customer_mean_amount_30d"].to_numpy(dtype="float64")
    )
    frame["transaction_date"] = pd.to_datetime(frame["transaction_date"])
    for feature in CUSTOMER_FEATURES + TERMINAL_FEATURES + VELOCITY_FEATURES:
        frame[feature.name] = frame[feature.name].astype(feature.dtype)
    return frame[[*KEY_COLUMNS, *ENTITY_FLAGS.values(), *FEATURE_NAMES]]


def entity_snapshot(connection, closed_day: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The entity features that payments of the day after ``closed_day`` get: one row per customer
    (``customer_id`` + ``CUSTOMER_FEATURES``) and per terminal with history in the lookback, as of the
    close of ``closed_day``. What the online store serves all that next day."""
    serving_day = closed_day + timedelta(days=1)
    frames = []
    for sql, key, entity_features in (
        (customer_features_sql, "customer_id", CUSTOMER_FEATURES),
        (terminal_features_sql, "terminal_id", TERMINAL_FEATURES),
    ):
        frame = connection.execute(f"{sql(serving_day, serving_day)} order by {key}").df()
        frame = frame.drop(columns="as_of_date").astype(
            {key: "int64", **{feature.name: feature.dtype for feature in entity_features}}
        )
        frames.append(frame.reset_index(drop=True))
    return frames[0], frames[1]


def online_snapshot(connection, closed_day: date) -> dict[str, pd.DataFrame]:
    """``entity_snapshot`` by entity of ``ONLINE_VIEW``: what ``fraud/online_features`` publishes."""
    customers, terminals = entity_snapshot(connection, closed_day)
    return {"customer": customers, "terminal": terminals}


@dataclass(frozen=True)
class OnlineFeatures:
    """Feature rows of payments scored online, as plain arrays (the service's hot path)."""

    values: np.ndarray  # one row per payment, FEATURE_NAMES columns, float64
    customer_is_new: np.ndarray  # bool: the snapshot has no row for the customer (defaults used)
    terminal_is_new: np.ndarray

    def frame(self, index: pd.Index | None = None) -> pd.DataFrame:
        """The rows typed as the offline feature table types them, plus the two flags."""
        frame = pd.DataFrame(self.values, columns=FEATURE_NAMES, index=index).astype(
            {feature.name: feature.dtype for feature in FEATURES}
        )
        frame[ENTITY_FLAGS["customer"]] = self.customer_is_new
        frame[ENTITY_FLAGS["terminal"]] = self.terminal_is_new
        return frame


_ENTITY_DEFAULTS = np.array([f.default for f in CUSTOMER_FEATURES + TERMINAL_FEATURES], dtype="float64")


def online_feature_values(
    amount: np.ndarray, transacted_at: np.ndarray, entity_values: np.ndarray, velocity: np.ndarray
) -> OnlineFeatures:
    """What ``transaction_features`` computes offline, for payments scored one or a few at a time.

    ``amount`` and ``transacted_at`` (naive ``datetime64``) are the payments' facts; ``entity_values``
    holds, per payment, the looked-up customer then terminal features (the store's column order), NaN
    where the snapshot has no row for that entity: it then takes the defaults and is flagged new.
    ``velocity`` holds the event store's answers for the payments (``PAYMENT_WINDOWS``).
    numpy only: this runs for every request, usually on one row, where pandas costs milliseconds.
    """
    at = np.asarray(transacted_at, dtype="datetime64[s]")
    day = at.astype("datetime64[D]")
    weekday = (day.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0, as in pandas
    hour = (at - day).astype("timedelta64[h]").astype("int64")
    missing = np.isnan(entity_values)
    values = np.empty((len(at), len(FEATURE_NAMES)), dtype="float64")
    request = {
        "amount": amount,
        "is_weekend": weekday >= 5,
        "is_night": (hour >= NIGHT_HOURS[0]) & (hour < NIGHT_HOURS[1]),
    }
    for column, feature in enumerate(REQUEST_FEATURES):
        values[:, column] = request[feature.name]
    entities = slice(len(REQUEST_FEATURES), len(REQUEST_FEATURES) + len(_ENTITY_DEFAULTS))
    values[:, entities] = np.where(missing, _ENTITY_DEFAULTS, entity_values)
    values[:, entities.stop : entities.stop + len(VELOCITY_FEATURES)] = velocity_values(velocity)
    values[:, -1] = relative_values(amount, values[:, FEATURE_NAMES.index("customer_mean_amount_30d")])
    # A snapshot row is complete (counts are never null), so one null column means "no row".
    return OnlineFeatures(values, missing[:, 0].copy(), missing[:, len(CUSTOMER_FEATURES)].copy())


def payment_events(payments: pd.DataFrame) -> event_windows.Events:
    """The payments (``transaction_id``, ``transacted_at``, the ids, ``amount``) as the events of
    ``PAYMENT_WINDOWS``, not cast: the store refuses what it cannot keep exactly (a float id, an
    aware time) rather than a cast changing it here."""
    return event_windows.Events(
        payments["transaction_id"].to_numpy(),
        pd.to_datetime(payments["transacted_at"]).to_numpy(),
        {entity: payments[f"{entity}_id"].to_numpy() for entity in PAYMENT_WINDOWS.entities},
        payments["amount"].to_numpy(),
    )


def online_features(payments: pd.DataFrame, entities: pd.DataFrame, velocity: np.ndarray) -> pd.DataFrame:
    """``online_feature_values`` for a frame of payments, the looked-up ``entities`` (aligned, entity
    feature columns, NaN where unknown) and the event store's answers for them, typed as the offline
    table: for tests and notebooks."""
    entity_names = [feature.name for feature in CUSTOMER_FEATURES + TERMINAL_FEATURES]
    computed = online_feature_values(
        payments["amount"].to_numpy(dtype="float64"),
        pd.to_datetime(payments["transacted_at"]).to_numpy(),
        entities[entity_names].to_numpy(dtype="float64"),
        velocity,
    )
    return computed.frame(payments.index)


# The schemas are built on first use, pandera imported there: every asset module and the scoring
# service import this module, and most never validate (pandera costs ~0.2 s to import).


def _feature_column(feature: Feature) -> pa.Column:
    import pandera.pandas as pa

    checks = []
    if feature.name.startswith("is_"):
        checks.append(pa.Check.isin([0, 1]))
    elif "fraud_rate" in feature.name:
        checks.append(pa.Check.in_range(0.0, 1.0))
    elif "seconds_since" in feature.name:
        checks.append(pa.Check.in_range(0.0, float(DAY_SECONDS)))
    else:
        checks.append(pa.Check.ge(0))
    return pa.Column(feature.dtype, checks=checks, nullable=False, description=feature.description)


def _windows_are_nested(*entities: str, velocity: bool = False) -> pa.Check:
    """The 30-day count is at least the 7-day count, at least the 1-day count (or the 24-hour one at
    least the hour's, at least the 10 minutes')."""
    import pandera.pandas as pa

    spans = (
        [f"{w}d" for w in WINDOWS_DAYS]
        if not velocity
        else [_SPANS[w] for w in PAYMENT_WINDOWS.windows_seconds]
    )
    return pa.Check(
        lambda frame: pd.concat(
            [
                frame[f"{entity}_transactions_{short}"] <= frame[f"{entity}_transactions_{long}"]
                for entity in entities
                for short, long in zip(spans, spans[1:], strict=False)
            ],
            axis=1,
        ).all(axis=1),
        name="windows_are_nested" if not velocity else "velocity_windows_are_nested",
    )


@cache
def feature_table_schema() -> pa.DataFrameSchema:
    """What every stored feature table satisfies."""
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            **{name: pa.Column(dtype, nullable=False) for name, dtype in KEY_COLUMNS.items()},
            **{flag: pa.Column(bool) for flag in ENTITY_FLAGS.values()},
            **{feature.name: _feature_column(feature) for feature in FEATURES},
        },
        checks=[
            # A customer's mean over 1 day cannot exist without a payment on that day, and so on.
            pa.Check(
                lambda frame: pd.concat(
                    [
                        (frame[f"customer_transactions_{w}d"] > 0)
                        | (frame[f"customer_mean_amount_{w}d"] == 0)
                        for w in WINDOWS_DAYS
                    ],
                    axis=1,
                ).all(axis=1),
                name="customer_mean_needs_payments",
            ),
            _windows_are_nested("customer", "terminal"),
            _windows_are_nested("customer", "terminal", velocity=True),
        ],
        unique=["transaction_id"],
        strict=True,
        ordered=True,
        name="transaction_features",
    )


@cache
def snapshot_schema(entity: str) -> pa.DataFrameSchema:
    """What the online store may be given for ``entity`` (customer or terminal): one row per
    entity, every feature in range."""
    import pandera.pandas as pa

    entity_features = {"customer": CUSTOMER_FEATURES, "terminal": TERMINAL_FEATURES}[entity]
    return pa.DataFrameSchema(
        {
            f"{entity}_id": pa.Column("int64", pa.Check.ge(0), unique=True),
            **{feature.name: _feature_column(feature) for feature in entity_features},
        },
        checks=[_windows_are_nested(entity)],
        strict=True,
        name=f"{entity}_snapshot",
    )


def example_payment(connection, closed_day: date) -> tuple[str, dict]:
    """A payment to try the scorer with (``keel demo`` prints it): the riskiest card and terminal of
    ``closed_day``, paying again the next morning."""
    customer_id, terminal_id, amount = connection.execute(
        "select f.customer_id, f.terminal_id, f.amount from ml.transaction_scores s "
        "join ml.transaction_features f using (transaction_id) "
        "where f.transaction_date = ? order by s.fraud_probability desc limit 1",
        [closed_day],
    ).fetchone()
    payment = {
        "transaction_id": 1,
        "transacted_at": f"{closed_day + timedelta(days=1)}T09:30:00",
        "customer_id": int(customer_id),
        "terminal_id": int(terminal_id),
        "amount": round(float(amount), 2),
    }
    return "/score", payment
