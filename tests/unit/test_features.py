"""Point-in-time correctness of the features, on hand-made warehouses in DuckDB's memory."""

import uuid
from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pandera.errors
import pytest

from platform_assets.defs.fraud import transaction_features as features
from tests import fraud

D = date(2026, 2, 10)  # a Tuesday


def payment(transaction_id, day, customer_id=1, terminal_id=1, amount=10.0, hour=12):
    return {
        "transaction_id": transaction_id,
        "transaction_date": day,
        "transacted_at": datetime.combine(day, datetime.min.time()) + timedelta(hours=hour),
        "customer_id": customer_id,
        "terminal_id": terminal_id,
        "amount": amount,
    }


def report(day, terminal_id=1, labelled=1, frauds=0):
    return {
        "terminal_id": terminal_id,
        "reported_date": day,
        "labelled_transaction_count": labelled,
        "fraud_count": frauds,
    }


def warehouse(payments: list[dict], reports: list[dict]):
    """The marts the features read, derived from payments the way dbt derives them."""
    connection = duckdb.connect()
    transactions = pd.DataFrame(payments)  # noqa: F841 (read by DuckDB by name)
    fraud_reports = pd.DataFrame(  # noqa: F841
        reports or [report(date(2000, 1, 1))],
        columns=["terminal_id", "reported_date", "labelled_transaction_count", "fraud_count"],
    )
    connection.execute("create table transactions as select * from transactions")
    connection.execute(
        "create table customer_daily_activity as select customer_id, transaction_date as activity_date, "
        "count(*) as transaction_count, sum(amount) as amount_sum from transactions group by all"
    )
    connection.execute(
        "create table terminal_daily_activity as select terminal_id, transaction_date as activity_date, "
        "count(*) as transaction_count from transactions group by all"
    )
    connection.execute("create table terminal_daily_fraud_reports as select * from fraud_reports")
    return connection


def features_of(connection, transaction_id, first=D - timedelta(days=40), last=D + timedelta(days=40)):
    table = features.transaction_features(connection, first, last).set_index("transaction_id")
    return table.loc[transaction_id]


def test_a_payment_never_sees_fraud_reported_on_its_own_day_or_later():
    connection = warehouse(
        [payment(1, D), payment(2, D + timedelta(days=1))],
        [report(D, labelled=2, frauds=2), report(D + timedelta(days=1), labelled=1, frauds=1)],
    )
    on_the_day = features_of(connection, 1)
    assert [on_the_day[f"terminal_fraud_rate_{w}d"] for w in features.WINDOWS_DAYS] == [0.0, 0.0, 0.0]
    next_day = features_of(connection, 2)
    assert next_day["terminal_fraud_rate_1d"] == 1.0  # reported on D: known when D+1 starts


def test_fraud_rates_are_frauds_over_labelled_payments_reported_in_each_window():
    connection = warehouse(
        [payment(1, D)],
        [
            report(D - timedelta(days=1), labelled=4, frauds=1),
            report(D - timedelta(days=5), labelled=4, frauds=3),
            report(D - timedelta(days=20), labelled=2, frauds=0),
            report(D - timedelta(days=31), labelled=10, frauds=10),  # older than every window
        ],
    )
    row = features_of(connection, 1)
    assert row["terminal_fraud_rate_1d"] == pytest.approx(1 / 4)
    assert row["terminal_fraud_rate_7d"] == pytest.approx(4 / 8)
    assert row["terminal_fraud_rate_30d"] == pytest.approx(4 / 10)


def test_customer_windows_end_at_the_close_of_the_previous_day():
    connection = warehouse(
        [
            payment(1, D - timedelta(days=1), amount=10.0),
            payment(2, D - timedelta(days=1), amount=20.0),
            payment(3, D - timedelta(days=5), amount=60.0),
            payment(4, D - timedelta(days=20), amount=100.0),
            payment(5, D - timedelta(days=31), amount=5000.0),  # outside every window
            payment(6, D, amount=1000.0, hour=1),  # earlier the same day: not in any window
            payment(7, D, amount=30.0, hour=15),
        ],
        [],
    )
    row = features_of(connection, 7)
    assert [row[f"customer_transactions_{w}d"] for w in features.WINDOWS_DAYS] == [2, 3, 4]
    assert [row[f"customer_mean_amount_{w}d"] for w in features.WINDOWS_DAYS] == pytest.approx(
        [15.0, 30.0, 47.5]
    )
    assert [row[f"terminal_transactions_{w}d"] for w in features.WINDOWS_DAYS] == [2, 3, 4]
    assert features_of(connection, 6)["customer_transactions_1d"] == 2  # same as the later payment


def test_unseen_customers_and_terminals_get_the_documented_defaults_and_are_flagged():
    connection = warehouse(
        [payment(1, D - timedelta(days=3)), payment(2, D, customer_id=9, terminal_id=9)], []
    )
    row = features_of(connection, 2)
    for feature in features.CUSTOMER_FEATURES + features.TERMINAL_FEATURES:
        assert row[feature.name] == feature.default, feature.name
    assert row["customer_is_new"] and row["terminal_is_new"]
    assert features_of(connection, 1)["customer_is_new"]


def test_adding_reports_on_or_after_a_day_changes_no_feature_of_that_day():
    """The leak test: whatever is reported from day D on, day D's features stay the same."""
    rng = np.random.default_rng(7)
    days = [D - timedelta(days=i) for i in range(35)]
    payments = [
        payment(
            i,
            days[rng.integers(len(days))],
            int(rng.integers(5)),
            int(rng.integers(5)),
            float(rng.gamma(2, 30)),
        )
        for i in range(600)
    ]
    past = [
        report(day, int(t), labelled=int(rng.integers(1, 20)), frauds=int(rng.integers(0, 2)))
        for day in days[1:]
        for t in range(5)
    ]
    future = [report(D + timedelta(days=k), int(t), labelled=5, frauds=5) for k in range(3) for t in range(5)]

    before = features.transaction_features(warehouse(payments, past), D, D)
    after = features.transaction_features(warehouse(payments, past + future), D, D)

    assert len(before) > 0
    pd.testing.assert_frame_equal(before, after)


def test_the_entity_snapshot_of_a_day_is_what_that_days_payments_carry():
    """The online store serves ``customer_features_sql``/``terminal_features_sql`` as of today: the
    same values the offline table gives a payment made today."""
    connection = warehouse(
        [payment(1, D - timedelta(days=2), amount=40.0), payment(2, D, amount=99.0)],
        [report(D - timedelta(days=3), labelled=2, frauds=1)],
    )
    offline = features_of(connection, 2)
    customer = connection.execute(features.customer_features_sql(D, D)).df().iloc[0]
    terminal = connection.execute(features.terminal_features_sql(D, D)).df().iloc[0]
    for feature in features.CUSTOMER_FEATURES:
        assert customer[feature.name] == offline[feature.name], feature.name
    for feature in features.TERMINAL_FEATURES:
        assert terminal[feature.name] == offline[feature.name], feature.name


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online_stores(request, tmp_path):
    """The snapshot store and the event store of the fraud view, from a SQLite file or a real Redis."""
    from keel_core.event_windows import open_event_store
    from keel_core.online_store import open_store

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'online.sqlite'}"
    else:
        url = request.getfixturevalue("redis_url")
    namespace = f"test_{uuid.uuid4().hex[:12]}"
    snapshots = open_store(url, namespace, features.ONLINE_VIEW, timeout_seconds=30)
    events = open_event_store(url, namespace, features.PAYMENT_WINDOWS, timeout_seconds=30)
    yield snapshots, events
    if request.param == "redis":
        events.client.delete(*events.client.keys(f"{{keel:{namespace}}}*"))
    snapshots.close()
    events.close()


def test_online_feature_rows_equal_the_offline_table_through_the_store(online_stores):
    """Day D's payments, scored online in their order against the snapshot of D-1's close, after the
    payments of D-1, get exactly the feature rows (values, dtypes, new-entity flags) of the offline
    table, velocity included (sums of amounts to floating-point tolerance)."""
    store, event_store = online_stores
    rng = np.random.default_rng(3)
    days = [D - timedelta(days=i) for i in range(35)]
    payments = [
        payment(i, days[rng.integers(len(days))], int(rng.integers(40)), int(rng.integers(40)), 1 + i % 97)
        for i in range(800)
    ] + [payment(900, D, customer_id=555, terminal_id=777)]  # both never seen before
    # Bursts within minutes on day D and late on D-1, some at the same second.
    payments += [
        {**payment(1000 + i, D, customer_id=i % 3, terminal_id=i % 5, amount=2.5 + i), "transacted_at": at}
        for i, at in enumerate(
            pd.Timestamp(D) + pd.to_timedelta(np.sort(rng.integers(0, 86400, 120)), unit="s")
        )
    ] + [
        {**payment(1200 + i, D - timedelta(days=1), customer_id=i % 3, amount=7.0), "transacted_at": at}
        for i, at in enumerate(pd.Timestamp(D) - pd.to_timedelta([1, 1, 30, 900, 5000], unit="s"))
    ]
    reports = [
        report(day, t, labelled=10, frauds=int(rng.integers(0, 3))) for day in days[1:] for t in range(40)
    ]
    connection = warehouse(payments, reports)
    offline = features.transaction_features(connection, D, D)
    customers, terminals = features.entity_snapshot(connection, D - timedelta(days=1))
    store.publish(D - timedelta(days=1), {"customer": customers, "terminal": terminals})

    # The service records every payment it scores: D-1's, then D's, in batches as they come.
    replay = pd.DataFrame(payments).sort_values(["transacted_at", "transaction_id"], ignore_index=True)
    replay = replay[replay["transaction_date"] >= D - timedelta(days=1)]
    answers = np.vstack(
        [
            event_store.record(features.payment_events(replay.iloc[i : i + 50]))
            for i in range(0, len(replay), 50)
        ]
    )
    scored_on_d = (replay["transaction_date"] == D).to_numpy()
    facts = replay[scored_on_d].reset_index(drop=True)
    looked_up = store.lookup(
        {"customer": facts["customer_id"].tolist(), "terminal": facts["terminal_id"].tolist()}
    )
    online = features.online_features(facts, looked_up.entities, answers[scored_on_d])
    expected = offline.set_index("transaction_id").loc[facts["transaction_id"]].reset_index()

    assert looked_up.snapshot.closed_day == D - timedelta(days=1)
    assert offline["customer_is_new"].any() and offline["terminal_is_new"].any()
    assert (expected["customer_transactions_10m"] > 0).any() and (
        expected["customer_seconds_since_previous"] < 60
    ).any()
    pd.testing.assert_frame_equal(online, expected[online.columns.tolist()], rtol=1e-12, atol=1e-9)


def test_no_feature_of_a_payment_sees_a_later_payment_or_an_unreported_flag():
    """Every payment's features are unchanged when what came after it is changed: the later payments
    of the same day (other amounts, more of them, at the same second with a higher id) and the fraud
    reports of its own day and after."""
    rng = np.random.default_rng(11)
    days = [D - timedelta(days=i) for i in range(3)]
    payments = [
        {
            **payment(i, day, customer_id=int(rng.integers(4)), terminal_id=int(rng.integers(4))),
            "transacted_at": pd.Timestamp(day) + pd.Timedelta(seconds=int(rng.integers(0, 86400))),
            "amount": float(rng.uniform(1, 200)),
        }
        for i, day in enumerate(rng.choice(days, 300))
    ]
    reports = [report(day - timedelta(days=1), t, labelled=5, frauds=1) for day in days for t in range(4)]
    before = features.transaction_features(warehouse(payments, reports), D, D).set_index("transaction_id")

    for cut in before.sort_values("transacted_at")["transacted_at"].iloc[::40]:
        changed = (
            [{**p, "amount": p["amount"] * 3} if p["transacted_at"] > cut else p for p in payments]
            + [
                {**payment(5000 + i, D, customer_id=i % 4, terminal_id=i % 4), "transacted_at": cut}
                for i in range(8)  # at the same second, with higher ids: after every real payment then
            ]
            + [
                {
                    **payment(6000 + i, D, customer_id=i % 4, terminal_id=i % 4),
                    "transacted_at": cut + pd.Timedelta(seconds=1),
                }
                for i in range(8)
            ]
        )
        flags = reports + [report(D, t, labelled=1, frauds=1) for t in range(4)]
        after = features.transaction_features(warehouse(changed, flags), D, D).set_index("transaction_id")
        seen = before.index[before["transacted_at"] <= cut]
        assert len(seen) > 0
        pd.testing.assert_frame_equal(
            after.loc[seen, features.FEATURE_NAMES].drop(columns="amount"),
            before.loc[seen, features.FEATURE_NAMES].drop(columns="amount"),
            check_exact=False,
            rtol=1e-12,
        )


def test_every_snapshot_row_passes_its_contract_and_a_broken_one_does_not():
    connection = warehouse(
        [payment(1, D - timedelta(days=2), amount=40.0), payment(2, D - timedelta(days=1), amount=9.0)],
        [report(D - timedelta(days=1), labelled=2, frauds=1)],
    )
    customers, terminals = features.entity_snapshot(connection, D - timedelta(days=1))
    features.snapshot_schema("customer").validate(customers)
    features.snapshot_schema("terminal").validate(terminals)
    with pytest.raises(pandera.errors.SchemaError):
        features.snapshot_schema("terminal").validate(terminals.assign(terminal_fraud_rate_1d=1.5))


@pytest.mark.parametrize(
    ("at", "weekend", "night"),
    [
        ("2026-02-10 05:59:59", 0, 1),  # Tuesday, before 6:00
        ("2026-02-10 06:00:00", 0, 0),
        ("2026-02-14 00:00:00", 1, 1),  # Saturday midnight
        ("2026-02-15 23:59:00", 1, 0),  # Sunday evening
    ],
)
def test_request_features_flag_weekends_and_nights(at, weekend, night):
    row = features.request_features(pd.DataFrame({"amount": [12], "transacted_at": [pd.Timestamp(at)]})).iloc[
        0
    ]
    assert (row["amount"], row["is_weekend"], row["is_night"]) == (12.0, weekend, night)


def test_the_feature_table_matches_its_schema_and_a_broken_one_does_not():
    connection = warehouse(
        [payment(i, D - timedelta(days=i % 3), customer_id=i % 4, terminal_id=i % 2) for i in range(30)],
        [report(D - timedelta(days=1), labelled=3, frauds=1)],
    )
    table = features.transaction_features(connection, D - timedelta(days=2), D)
    features.feature_table_schema().validate(table, lazy=True)

    broken = table.assign(terminal_fraud_rate_7d=1.5)
    broken.loc[0, "customer_transactions_1d"] = broken.loc[0, "customer_transactions_30d"] + 1
    with pytest.raises(pandera.errors.SchemaErrors) as failed:
        features.feature_table_schema().validate(broken, lazy=True)
    checks = set(failed.value.failure_cases["check"].astype(str))
    assert "windows_are_nested" in checks
    assert any("in_range" in check for check in checks)


def test_the_feature_list_is_what_the_model_and_the_table_use():
    assert [f.name for f in features.FEATURES] == features.FEATURE_NAMES
    assert len(set(features.FEATURE_NAMES)) == len(features.FEATURE_NAMES) == 3 + 2 * 3 + 2 * 3 + 2 * 7 + 1
    assert all(f.default is not None for f in features.CUSTOMER_FEATURES + features.TERMINAL_FEATURES)
    # The use case's spec declares the same features, and stores the columns its schema checks.
    rows = fraud.plan().rows
    assert list(rows.features) == features.FEATURE_NAMES
    assert rows.stored == list(features.feature_table_schema().columns)


def test_online_calendar_features_match_the_offline_ones_at_every_hour():
    # Two weeks of hours, either side of 1970 and of a leap day: weekday and night from numpy alone.
    at = pd.Series(
        pd.date_range("1969-12-25", periods=24 * 14, freq="h").append(
            pd.date_range("2028-02-25 00:30", periods=24 * 14, freq="h")
        )
    )
    payments = pd.DataFrame({"amount": 1.0, "transacted_at": at})
    unknown = np.full((len(at), len(features.CUSTOMER_FEATURES) + len(features.TERMINAL_FEATURES)), np.nan)
    nothing_before = np.full((len(at), len(features.VELOCITY_FEATURES)), np.nan)
    online = features.online_feature_values(
        payments["amount"].to_numpy(), at.to_numpy(), unknown, nothing_before
    )
    offline = features.request_features(payments)

    frame = online.frame()
    pd.testing.assert_frame_equal(frame[offline.columns.tolist()], offline)
    assert online.customer_is_new.all() and online.terminal_is_new.all()
    assert frame["customer_transactions_30d"].eq(0).all()


def test_a_day_s_features_are_the_same_bits_whether_built_alone_or_with_other_days():
    """Re-running one day must give back exactly the rows a longer run gave it (the partitions are
    idempotent, and `keel reproduce --current-data` must not report rows nobody changed). Sums in
    floating point depend on the order of their terms, and the order on how much history a run
    reads: the sums are exact."""
    rng = np.random.default_rng(5)
    days = [D - timedelta(days=i) for i in range(4)]
    payments = [
        {
            **payment(i, day, customer_id=int(rng.integers(3)), terminal_id=int(rng.integers(3))),
            "transacted_at": pd.Timestamp(day) + pd.Timedelta(seconds=int(rng.integers(0, 86400))),
            "amount": float(rng.uniform(0, 1000)),  # every bit used: no sum of these is exact in doubles
        }
        for i, day in enumerate(rng.choice(days, 6_000))
    ]
    connection = warehouse(payments, [])
    alone = features.transaction_features(connection, D, D).sort_values("transaction_id", ignore_index=True)
    longer = features.transaction_features(connection, days[-1], D)
    longer = longer[pd.to_datetime(longer["transaction_date"]).dt.date == D]
    pd.testing.assert_frame_equal(
        alone, longer.sort_values("transaction_id", ignore_index=True), check_exact=True
    )
