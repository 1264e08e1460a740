"""Event-time windows: the stores answer, event by event, what the offline SQL computes."""

import uuid

import duckdb
import numpy as np
import pandas as pd
import pytest

from keel_core import event_windows
from keel_core.event_windows import (
    Events,
    EventWindows,
    RedisEventStore,
    SqliteEventStore,
    offline_sql,
)

SPEC = EventWindows("test", ("customer", "terminal"), (600, 3600, 86400))
KEYS = {"customer": "customer_id", "terminal": "terminal_id"}
REDIS_TIMEOUT_SECONDS = 30  # a bound a busy machine keeps, not the service's production choice


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request, tmp_path):
    if request.param == "sqlite":
        opened = SqliteEventStore(tmp_path / "online.sqlite", SPEC)
    else:
        url = request.getfixturevalue("redis_url")
        opened = RedisEventStore(url, SPEC, f"{{test:{uuid.uuid4().hex}}}", REDIS_TIMEOUT_SECONDS)
    yield opened
    if request.param == "redis":
        opened.client.delete(*opened.client.keys(f"{opened.prefix}*") or ["none"])
    opened.close()


def events_frame(n: int, seed: int = 0, decimals: int | None = 2) -> pd.DataFrame:
    """Two days of events of a few cards and terminals, some at the same second, in time order."""
    rng = np.random.default_rng(seed)
    at = np.datetime64("2026-03-01T00:00:00") + np.sort(rng.integers(0, 2 * 86400, n)).astype(
        "timedelta64[s]"
    )
    at[10:14] = at[10]  # ties: decided by the id
    values = rng.uniform(1, 300, n)
    return pd.DataFrame(
        {
            "id": rng.permutation(n).astype("int64") * 1_000_003,  # ids not in time order
            "at": at.astype("datetime64[us]"),
            "customer_id": rng.integers(0, 8, n),
            "terminal_id": rng.integers(0, 5, n),
            "value": values.round(decimals) if decimals is not None else values,
        }
    ).sort_values(["at", "id"], ignore_index=True)


def as_events(frame: pd.DataFrame) -> Events:
    return Events(
        frame["id"].to_numpy(),
        frame["at"].to_numpy(),
        {"customer": frame["customer_id"].to_numpy(), "terminal": frame["terminal_id"].to_numpy()},
        frame["value"].to_numpy(),
    )


def offline(frame: pd.DataFrame) -> np.ndarray:
    connection = duckdb.connect()
    connection.register("events", frame)
    answers = connection.execute(f"{offline_sql(SPEC, 'events', 'events', KEYS)} order by id").df()
    return answers.set_index("id").loc[frame["id"]].to_numpy(dtype="float64")


@pytest.mark.parametrize("decimals", [2, None], ids=["cents", "every digit of a double"])
def test_replaying_events_in_order_gives_the_offline_answers(store, decimals):
    frame = events_frame(600, decimals=decimals)
    online = np.vstack([store.record(as_events(frame.iloc[i : i + 37])) for i in range(0, len(frame), 37)])
    np.testing.assert_allclose(online, offline(frame), rtol=1e-12, atol=0, equal_nan=True)
    assert (online[:, SPEC.width - 1] > 0).any() and np.isnan(online[:, SPEC.width - 1]).any()


def test_an_event_sees_only_earlier_ones_ties_go_by_id_and_a_call_is_taken_in_time_order(store):
    at = np.array(["2026-03-01T12:00:00"] * 3 + ["2026-03-01T11:00:00"], dtype="datetime64[us]")
    events = Events(
        np.array([7, 5, 9, 1]),
        at,
        {"customer": np.zeros(4, dtype="int64"), "terminal": np.arange(4)},
        np.array([1.0, 2, 4, 8]),
    )
    answers = store.record(events)
    # In time order: 1 (11:00), then 5, 7, 9 (12:00, by id); each sees those before it.
    np.testing.assert_array_equal(answers[:, 1], [2, 1, 3, 0])  # the card's payments in the hour
    np.testing.assert_array_equal(answers[:, 4], [10, 8, 11, 0])  # and their amounts
    np.testing.assert_array_equal(answers[:, 6], [0, 3600, 0, np.nan])  # since the previous one
    # The terminals are all different: nothing before any of them.
    assert (answers[:, SPEC.width : 2 * SPEC.width - 1] == 0).all()
    # Asked again, each event sees the same: itself and those after it excluded.
    np.testing.assert_array_equal(store.record(events), answers)


def test_a_retried_event_is_counted_once_and_keeps_its_first_facts(store):
    at = np.array(["2026-03-01T12:00:00"], dtype="datetime64[us]")
    first = Events(
        np.array([1]), at, {"customer": np.array([3]), "terminal": np.array([4])}, np.array([10.0])
    )
    changed = Events(
        np.array([1]), at, {"customer": np.array([3]), "terminal": np.array([4])}, np.array([99.0])
    )
    store.record(first)
    store.record(changed)
    later = Events(
        np.array([2]),
        at + np.timedelta64(1, "s"),
        {"customer": np.array([3]), "terminal": np.array([4])},
        np.array([1.0]),
    )
    (answer,) = store.record(later)
    assert answer[0] == 1 and answer[3] == 10.0 and answer[6] == 1.0


def test_an_event_far_in_the_future_changes_no_present_window(store):
    now = np.datetime64("2026-03-01T12:00:00", "us")
    one = {"customer": np.array([1]), "terminal": np.array([1])}
    store.record(Events(np.array([1]), np.array([now]), one, np.array([5.0])))
    store.record(
        Events(np.array([2]), np.array([np.datetime64("2099-01-01T00:00:00", "us")]), one, np.array([9.0]))
    )
    (answer,) = store.record(
        Events(np.array([3]), np.array([now + np.timedelta64(60, "s")]), one, np.array([1.0]))
    )
    assert answer[0] == 1 and answer[3] == 5.0 and answer[6] == 60.0


@pytest.mark.redis
def test_the_events_of_one_entity_are_bounded(redis_url, monkeypatch):
    monkeypatch.setattr(event_windows, "MAX_EVENTS_PER_KEY", 40)  # the same rule, on fewer events
    store = RedisEventStore(redis_url, SPEC, f"{{test:{uuid.uuid4().hex}}}", REDIS_TIMEOUT_SECONDS)
    try:
        n = 90
        at = np.datetime64("2026-03-01T00:00:00", "us") + np.arange(n).astype("timedelta64[ms]")
        store.record(
            Events(np.arange(n), at, {"customer": np.zeros(n, "int64"), "terminal": np.arange(n)}, np.ones(n))
        )
        assert store.client.zcard(f"{store.prefix}:test:events:customer:0") == 40
        assert store.client.hlen(f"{store.prefix}:test:values:customer:0") == 40
        assert 0 < store.client.pttl(f"{store.prefix}:test:events:customer:0") <= 2 * 86400 * 1000
    finally:
        store.client.delete(*store.client.keys(f"{store.prefix}*"))
        store.close()


def test_a_spec_with_unordered_windows_or_an_odd_name_is_refused():
    with pytest.raises(ValueError, match="increasing"):
        EventWindows("test", ("customer",), (3600, 600))
    with pytest.raises(ValueError, match="identifier"):
        EventWindows("test; drop", ("customer",), (600,))


ONE = {"customer": np.array([3]), "terminal": np.array([4])}
NOON = np.array(["2026-03-01T12:00:00"], dtype="datetime64[us]")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ids": np.array([1.0])}, "ids"),  # a float id may have been rounded on its way
        ({"ids": np.array(["1"])}, "ids"),
        ({"ids": np.array([True])}, "ids"),
        ({"ids": np.array([2**64 - 1], dtype="uint64")}, "ids"),
        ({"keys": {"customer": np.array([3.7]), "terminal": np.array([4])}}, "keys\\['customer'\\]"),
        ({"keys": {"customer": np.array([3]), "terminal": np.array([None])}}, "keys\\['terminal'\\]"),
        ({"values": np.array([np.nan])}, "values"),
        ({"values": np.array([np.inf])}, "values"),
        ({"values": np.array(["10"])}, "values"),
        ({"at": np.array([1_772_366_400_000_000])}, "at"),  # an integer: seconds? microseconds?
        ({"at": np.array(["NaT"], dtype="datetime64[us]")}, "at"),
        ({"at": np.array(["2026-03-01T12:00:00.000000001"], dtype="datetime64[ns]")}, "at"),
        ({"at": np.array(["300000-01-01"], dtype="datetime64[s]")}, "at"),  # beyond microseconds' range
        ({"at": pd.Series(pd.to_datetime(["2026-03-01T12:00:00+01:00"])).to_numpy()}, "at"),  # aware
        ({"values": np.array([1.0, 2.0])}, "lengths differ"),
    ],
)
def test_events_a_store_cannot_keep_exactly_are_refused_naming_the_field(store, change, field):
    fields = {"ids": np.array([1]), "at": NOON, "keys": ONE, "values": np.array([10.0]), **change}
    with pytest.raises(ValueError, match=field):
        store.record(Events(**fields))
    # Nothing of the refused call was kept: the next event of the card sees no earlier one.
    (answer,) = store.record(Events(np.array([2]), NOON + np.timedelta64(1, "s"), ONE, np.array([1.0])))
    assert answer[0] == 0 and np.isnan(answer[SPEC.width - 1])


def test_events_before_1970_have_a_previous_one_like_any_other(store):
    at = np.array(["1969-12-31T23:59:00", "1969-12-31T23:59:30"], dtype="datetime64[us]")
    answers = store.record(Events(np.array([1, 2]), at, {e: np.array([3, 3]) for e in ONE}, np.ones(2)))
    np.testing.assert_array_equal(answers[:, SPEC.width - 1], [np.nan, 30.0])
    np.testing.assert_array_equal(answers[:, 0], [0, 1])


@pytest.mark.redis
def test_a_failing_script_is_the_store_failing_not_a_crash(redis_url):
    store = RedisEventStore(redis_url, SPEC, f"{{test:{uuid.uuid4().hex}}}", REDIS_TIMEOUT_SECONDS)
    try:
        store.client.set(f"{store.prefix}:test:events:customer:3", "not a sorted set")  # WRONGTYPE
        with pytest.raises(event_windows.StoreUnavailable, match="WRONGTYPE"):
            store.record(Events(np.array([1]), NOON, ONE, np.array([10.0])))
    finally:
        store.client.delete(*store.client.keys(f"{store.prefix}*"))
        store.close()


def test_negative_ids_are_refused(tmp_path):
    store = SqliteEventStore(tmp_path / "online.sqlite", SPEC)
    at = np.array(["2026-03-01T12:00:00"], dtype="datetime64[us]")
    with pytest.raises(ValueError, match="non-negative"):
        store.record(
            Events(np.array([-1]), at, {"customer": np.array([3]), "terminal": np.array([4])}, np.ones(1))
        )
