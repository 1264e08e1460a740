"""The Dagster instance on PostgreSQL (deploy/postgres/dagster.yaml), against the local server.

A database is created for the test and dropped after it. On that instance: a materialization in
this process, then the real daemon, whose landing sensor ticks, keeps its cursor and launches the
ingestion of a landed day. Everything it records (ticks, runs, events) is read back from PostgreSQL.
"""

import os
import shutil
import time
from datetime import date

import dagster as dg
import pytest
from bento_server import Daemon, kill_group

from resources.dbt import REPO_ROOT
from resources.lake import LocalLake
from resources.sources import LandingZone
from tests.databases import count, temporary_database
from tests.payments import SimulatorSource, asset

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DAY = date(2026, 1, 1)
SOURCE = SimulatorSource(n_customers=300, n_terminals=600)
# Bounds on waits for events, far above what a busy machine needs (the daemon loads the code
# location, ticks, and the queue starts two runs: about a minute on a quiet machine).
WAIT_SECONDS = 900
STOP_SECONDS = 300  # the daemon stopping on SIGTERM


@pytest.fixture(scope="module")
def database(postgres_server):
    with temporary_database(postgres_server, "instance") as name:
        yield name


@pytest.fixture(scope="module")
def keel_on_postgres(postgres_server, database, tmp_path_factory):
    """Settings for a world whose instance is PostgreSQL, and that instance."""
    root = tmp_path_factory.mktemp("postgres_world")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": postgres_server["host"],
        "DAGSTER_PG_PORT": str(postgres_server["port"]),
        "DAGSTER_PG_USERNAME": postgres_server["user"],
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
        "DAGSTER_PG_DB": database,
        "KEEL_NAMESPACE": "prod",
        "KEEL_LAKE_ROOT": str(root / "lake"),
        "KEEL_WAREHOUSE_DIR": str(root / "warehouse"),
        "KEEL_ONLINE_STORE_URL": f"sqlite:///{root / 'online_features.sqlite'}",
        "KEEL_SIMULATOR_CUSTOMERS": str(SOURCE.n_customers),
        "KEEL_SIMULATOR_TERMINALS": str(SOURCE.n_terminals),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with dg.DagsterInstance.get() as instance:
            yield env, instance, LocalLake(root=env["KEEL_LAKE_ROOT"])


def test_the_instance_keeps_runs_events_and_schedules_in_postgresql(keel_on_postgres):
    _, instance, _ = keel_on_postgres
    for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
        assert type(storage).__module__.startswith("dagster_postgres"), type(storage)


def test_a_materialization_is_recorded_in_postgresql(keel_on_postgres, postgres_server, database):
    _, instance, root = keel_on_postgres
    landing, lake = LandingZone(lake=root), LocalLake(root=f"{root.root}/namespaces/prod")
    landing.deliver_reference(SOURCE)

    result = dg.materialize(
        [asset("customers"), asset("terminals")],
        instance=instance,
        resources={"lake": lake, "landing": landing},
    )

    assert result.success
    recorded = instance.get_latest_materialization_event(dg.AssetKey(["lake", "customers"]))
    assert recorded.run_id == result.run_id
    assert count(postgres_server, database, "select count(*) from runs") == 1
    materializations = "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'"
    assert count(postgres_server, database, materializations) == 2


def test_the_daemon_s_sensor_ticks_and_its_runs_are_recorded_in_postgresql(
    keel_on_postgres, postgres_server, database, tmp_path_factory
):
    """The real daemon: the landing sensor sees the landed day, launches its two ingestion runs
    through the queue, and keeps its ticks and cursor in PostgreSQL."""
    env, instance, lake = keel_on_postgres
    LandingZone(lake=lake).deliver_day(SOURCE, DAY)
    daemon = Daemon({**os.environ, **env}, tmp_path_factory.mktemp("daemon") / "daemon.log", REPO_ROOT)
    try:
        daemon.start()
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "landing_sensor"}))
            if len(runs) >= 2 and all(run.is_finished for run in runs):
                break
            if daemon.process.poll() is not None:
                raise RuntimeError(f"the daemon exited ({daemon.process.returncode}):\n{daemon.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no ingestion of the landed day in {WAIT_SECONDS} s; the daemon's log ends with:\n"
                    f"{daemon.tail()}"
                )
            time.sleep(1)
    finally:
        try:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.stop(timeout=STOP_SECONDS)
        finally:
            for group in daemon.groups:  # nothing the daemon started may outlive the test
                kill_group(group)

    assert len(runs) == 2, [(run.run_id, run.tags) for run in runs]  # one per landed file
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs), [run.status for run in runs]
    assert {run.job_name for run in runs} == {"ingest_day"}
    assert instance.get_latest_materialization_event(dg.AssetKey(["lake", "raw_transactions"])) is not None
    assert count(postgres_server, database, "select count(*) from job_ticks where status = 'SUCCESS'") >= 1
    state = next(state for state in instance.all_instigator_state() if state.name == "landing_sensor")
    assert "newest" in state.instigator_data.cursor  # the landing cursor, kept by PostgreSQL
