"""The online feature store, the same behaviour from the SQLite file and from a real Redis server."""

import threading
import time
import uuid
from datetime import date

import numpy as np
import pandas as pd
import pytest

from keel_core.online_store import (
    Entity,
    FeatureView,
    NoSnapshot,
    RedisOnlineStore,
    SqliteOnlineStore,
    StoreUnavailable,
    open_store,
)
from platform_assets.defs.fraud.transaction_features import FEATURE_SET_VERSION, ONLINE_VIEW

CUSTOMER_NAMES, TERMINAL_NAMES = (entity.features for entity in ONLINE_VIEW.entities)
WAIT_SECONDS = 120  # a bound on waits for another thread, never reached unless something is broken
# The tests' Redis timeout: the service's 0.5 s is a production choice, not a bound a busy test
# machine keeps (the server is one more process waiting for a core).
REDIS_TIMEOUT_SECONDS = 30


def snapshot(value: float, customers=(1, 2, 3), terminals=(10, 20)):
    """Entity frames whose every feature equals ``value`` (so a mix of snapshots would show)."""
    return {
        "customer": pd.DataFrame({"customer_id": list(customers), **{n: value for n in CUSTOMER_NAMES}}),
        "terminal": pd.DataFrame({"terminal_id": list(terminals), **{n: value for n in TERMINAL_NAMES}}),
    }


def ids(customers, terminals):
    return {"customer": customers, "terminal": terminals}


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request, tmp_path):
    if request.param == "sqlite":
        opened = SqliteOnlineStore(tmp_path / "online.sqlite", ONLINE_VIEW)
        yield opened
    else:
        opened = RedisOnlineStore(
            request.getfixturevalue("redis_url"),
            ONLINE_VIEW,
            prefix=f"{{test-{uuid.uuid4().hex}}}",
            timeout_seconds=REDIS_TIMEOUT_SECONDS,
        )
        yield opened
        keys = list(opened.client.scan_iter(f"{opened.prefix}*"))
        if keys:
            opened.client.delete(*keys)
    opened.close()


def test_a_lookup_returns_each_entitys_features_and_nan_for_ids_the_snapshot_lacks(store):
    store.publish(date(2026, 1, 10), snapshot(3.0))

    found = store.lookup(ids([1, 99, 3], [20, 20, 77]))

    assert found.snapshot.closed_day == date(2026, 1, 10)
    assert found.snapshot.feature_set_version == FEATURE_SET_VERSION
    assert found.snapshot.rows == {"customer": 3, "terminal": 2}
    customers, terminals = found.entities[list(CUSTOMER_NAMES)], found.entities[list(TERMINAL_NAMES)]
    assert customers.iloc[[0, 2]].eq(3.0).all().all() and customers.iloc[1].isna().all()
    assert terminals.iloc[[0, 1]].eq(3.0).all().all() and terminals.iloc[2].isna().all()


def test_a_newer_day_replaces_the_snapshot_and_an_older_one_is_refused(store):
    store.publish(date(2026, 1, 10), snapshot(1.0))
    newer = store.publish(date(2026, 1, 11), snapshot(2.0, customers=(1,)))
    older = store.publish(date(2026, 1, 9), snapshot(9.0))

    assert newer.published and not older.published
    assert older.current.closed_day == date(2026, 1, 11)
    found = store.lookup(ids([1, 2], [10, 10]))
    assert found.snapshot.version == newer.snapshot.version
    assert found.entities.iloc[0].eq(2.0).all()
    assert found.entities.loc[1, list(CUSTOMER_NAMES)].isna().all()  # gone with the old snapshot


def test_the_same_day_again_replaces_it(store):
    store.publish(date(2026, 1, 10), snapshot(1.0))
    again = store.publish(date(2026, 1, 10), snapshot(5.0))

    assert again.published
    assert store.lookup(ids([1], [10])).entities.iloc[0].eq(5.0).all()


def test_a_store_with_nothing_published_says_so(store):
    assert store.current() is None
    with pytest.raises(NoSnapshot, match="materialize fraud/online_features"):
        store.lookup(ids([1], [10]))


def test_a_snapshot_missing_a_feature_is_refused_before_anything_is_written(store):
    frames = snapshot(1.0)
    broken = {**frames, "customer": frames["customer"].drop(columns=CUSTOMER_NAMES[0])}
    with pytest.raises(ValueError, match="customer snapshot lacks columns"):
        store.publish(date(2026, 1, 10), broken)
    with pytest.raises(ValueError, match="one frame per entity"):
        store.publish(date(2026, 1, 10), {"customer": frames["customer"]})
    assert store.current() is None


def test_readers_never_see_half_a_snapshot_while_another_is_published(store):
    """Each snapshot has one value everywhere; a lookup mixing two values would be a torn read."""
    customers = range(2000)
    store.publish(date(2026, 1, 1), snapshot(0.0, customers=customers))
    torn, lookups, done = [], [0], threading.Event()

    def read():
        while not done.is_set():
            values = store.lookup(ids([0, 1999, 1000], [10, 20, 10])).entities.to_numpy()
            lookups[0] += 1
            if len(np.unique(values)) != 1:
                torn.append(values)

    def reader_has_read(more_than: int) -> None:
        """Until the reader has finished more lookups than ``more_than`` (it runs when it gets the CPU)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while lookups[0] <= more_than and reader.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert lookups[0] > more_than, f"the reader did {lookups[0]} lookups"

    reader = threading.Thread(target=read)
    reader.start()
    try:
        reader_has_read(0)
        for day in range(2, 8):
            before = lookups[0]
            store.publish(date(2026, 1, day), snapshot(float(day), customers=customers))
            # A lookup begun after this publish began: the reader reads beside every publish.
            reader_has_read(before + 1)
    finally:
        done.set()
        reader.join()

    assert torn == []
    assert store.lookup(ids([0], [10])).entities.iloc[0].eq(7.0).all()


@pytest.mark.redis
def test_redis_keeps_only_the_current_snapshots_keys(redis_url):
    store = RedisOnlineStore(
        redis_url, ONLINE_VIEW, prefix=f"{{test-{uuid.uuid4().hex}}}", timeout_seconds=REDIS_TIMEOUT_SECONDS
    )
    try:
        first = store.publish(date(2026, 1, 1), snapshot(1.0))
        second = store.publish(date(2026, 1, 2), snapshot(2.0))
        keys = {key.decode() for key in store.client.scan_iter(f"{store.prefix}*")}
        assert keys == {
            f"{store.prefix}:fraud:current",
            f"{store.prefix}:fraud:versions",
            f"{store.prefix}:fraud:current:{second.snapshot.version}:customer",
            f"{store.prefix}:fraud:current:{second.snapshot.version}:terminal",
        }
        assert first.snapshot.version not in "".join(keys)
    finally:
        store.client.delete(*store.client.scan_iter(f"{store.prefix}*"))
        store.close()


def test_an_unreachable_store_is_an_error_that_names_it(tmp_path):
    missing = SqliteOnlineStore(tmp_path / "missing.sqlite", ONLINE_VIEW)
    with pytest.raises(NoSnapshot, match="missing.sqlite"):
        missing.lookup(ids([1], [1]))
    assert not (tmp_path / "missing.sqlite").exists()  # a wrong path is not silently created
    closed_port = RedisOnlineStore("redis://127.0.0.1:1/0", ONLINE_VIEW, timeout_seconds=0.2)
    with pytest.raises(StoreUnavailable, match="127.0.0.1:1"):
        closed_port.lookup(ids([1], [1]))


def test_the_url_chooses_the_store_and_a_relative_sqlite_path_is_refused():
    assert isinstance(open_store("sqlite:////tmp/x.sqlite", "test", ONLINE_VIEW), SqliteOnlineStore)
    assert isinstance(open_store("redis://127.0.0.1:6379/0", "test", ONLINE_VIEW), RedisOnlineStore)
    with pytest.raises(ValueError, match="must be absolute"):
        open_store("sqlite:///relative.sqlite", "test", ONLINE_VIEW)
    with pytest.raises(ValueError, match="expected sqlite"):
        open_store("postgres://somewhere", "test", ONLINE_VIEW)


@pytest.mark.redis
def test_namespaces_sharing_one_redis_each_read_only_their_own_snapshot(redis_url):
    run = uuid.uuid4().hex[:8]
    prod = open_store(redis_url, f"prod_{run}", ONLINE_VIEW, timeout_seconds=REDIS_TIMEOUT_SECONDS)
    mine = open_store(redis_url, f"alice_{run}", ONLINE_VIEW, timeout_seconds=REDIS_TIMEOUT_SECONDS)
    try:
        prod.publish(date(2026, 1, 10), snapshot(1.0))
        assert mine.current() is None  # nothing published in alice's namespace yet
        mine.publish(date(2026, 1, 12), snapshot(2.0))

        assert prod.current().closed_day == date(2026, 1, 10)
        assert prod.lookup(ids([1], [10])).entities[list(CUSTOMER_NAMES)].eq(1.0).all().all()
        assert mine.lookup(ids([1], [10])).entities[list(CUSTOMER_NAMES)].eq(2.0).all().all()
    finally:
        for store in (prod, mine):
            keys = list(store.client.scan_iter(f"{store.prefix}*"))
            if keys:
                store.client.delete(*keys)
            store.close()


VOLUME = FeatureView("volume", (Entity("terminal", "terminal_id", ("payments_7d", "payments_1d")),), "3")


def test_views_of_two_use_cases_live_side_by_side_in_one_store(store):
    """Another use case's view (one entity, other features, its own version) in the same store: each
    publishes and reads its own snapshot, and a view's version must match the stored one."""
    other = beside(store, VOLUME)
    store.publish(date(2026, 1, 10), snapshot(1.0))
    assert other.current() is None
    frame = pd.DataFrame({"terminal_id": [10, 11], "payments_7d": [70.0, 7.0], "payments_1d": [10.0, 1.0]})
    other.publish(date(2026, 1, 11), {"terminal": frame})
    found = other.lookup({"terminal": [11, 12, 10]})
    assert found.columns == ("payments_7d", "payments_1d")
    assert found.values[[0, 2]].tolist() == [[7.0, 1.0], [70.0, 10.0]] and np.isnan(found.values[1]).all()
    assert store.current().closed_day == date(2026, 1, 10)
    assert store.lookup(ids([1], [10])).entities.eq(1.0).all().all()
    with pytest.raises(ValueError, match="an id per entity"):
        other.lookup({"customer": [1]})
    other.close()
    changed = beside(store, FeatureView("volume", VOLUME.entities, "4"))
    with pytest.raises(NoSnapshot, match="feature set 3 of volume, this code computes 4"):
        changed.lookup({"terminal": [10]})
    changed.close()


def beside(store, view: FeatureView):
    """Another view's handle on the same store."""
    if isinstance(store, SqliteOnlineStore):
        return SqliteOnlineStore(store.path, view)
    return RedisOnlineStore(store.url, view, prefix=store.prefix, timeout_seconds=REDIS_TIMEOUT_SECONDS)


def test_a_view_is_named_so_that_its_names_can_be_tables_and_keys():
    with pytest.raises(ValueError, match="not a lowercase identifier"):
        FeatureView("Volume; drop", (Entity("terminal", "terminal_id", ("x",)),), "1")
    with pytest.raises(ValueError, match="at least one feature"):
        FeatureView("volume", (Entity("terminal", "terminal_id", ()),), "1")
