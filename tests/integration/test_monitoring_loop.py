"""The monitoring loop under the real Dagster daemon, on the world `keel demo` left behind.

A new day lands in the landing zone (with the simulator's drift knob on), and nothing else is done
by hand: the landing sensor ingests it, automation carries it through the warehouse, features,
scores and the drift report, and the retraining sensor asks for a retraining that ends with a new
model version, promoted or refused by the gate. The daemon is stopped and started again while the
ingestion runs; no run is launched twice.
"""

import json
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from bento_server import Daemon
from dagster._core.instance.ref import InstanceRef
from world_settings import namespace_lake

from keel.loop import RUN_KEY_TAG, SENSOR_TAG
from platform_assets.defs.models.assets import FRAUD_MODEL
from platform_assets.defs.monitoring.assets import DRIFT_CHECK, DRIFT_REPORTS, FEATURE_DRIFT
from platform_assets.defs.monitoring.sensors import RETRAIN_REASONS_TAG
from resources.dbt import REPO_ROOT
from resources.lake import LocalLake
from resources.registry import ModelRegistry
from resources.sources import LandingZone, SimulatorSource

pytestmark = pytest.mark.slow

WAIT_SECONDS = 420  # the bound on the whole loop; it takes about three minutes here
DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def wait_for(what: str, condition, daemon: Daemon, deadline: float):
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited too long for {what}; the daemon's log ends with:\n{daemon.tail()}")
        if daemon.process.poll() is not None:
            raise RuntimeError(f"the daemon exited ({daemon.process.returncode}):\n{daemon.tail()}")
        time.sleep(1)


def has_ticked(instance: dg.DagsterInstance, name: str) -> bool:
    for state in instance.all_instigator_state():
        if state.name == name:
            return bool(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1))
    return False


def runs_of(instance: dg.DagsterInstance, **tags) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags=tags)))


@pytest.fixture(scope="module")
def loop(demo_world, tmp_path_factory):
    """The daemon on the demo's world: a drifted day lands, the daemon restarts mid-way, and the
    fixture returns once the retraining run it led to has finished."""
    assert demo_world.demo.returncode == 0, demo_world.demo.stdout[-2000:] + demo_world.demo.stderr[-2000:]
    env = {
        **demo_world.env,
        # One newly labelled day is reason enough here, so that a retraining follows a single day.
        "KEEL_RETRAIN_AFTER_LABELLED_DAYS": "1",
    }
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"]))
    lake = LocalLake(root=str(namespace_lake(env["KEEL_LAKE_ROOT"])))
    landing, registry = LandingZone(lake=LocalLake(root=env["KEEL_LAKE_ROOT"])), ModelRegistry(lake=lake)
    versions_before = {v.tag for v in registry.versions()}
    daemon = Daemon(env, tmp_path_factory.mktemp("daemon") / "daemon.log", REPO_ROOT)
    deadline = time.monotonic() + WAIT_SECONDS
    try:
        daemon.start()
        # Automation reacts to what changed since its previous evaluation: it must have evaluated
        # once before the day lands (a running deployment always has).
        wait_for("a first automation tick", lambda: has_ticked(instance, "keel_automation"), daemon, deadline)

        day = landing.last_day() + timedelta(days=1)
        drifted = SimulatorSource(n_customers=2000, n_terminals=4000, malformed_rows_per_day=3).drifting_from(
            day, amount_scale=3.0, card_testing=True
        )
        landed_at = time.monotonic()
        landed = landing.deliver_day(drifted, day)

        ingestion = wait_for(
            "the landing sensor's two runs",
            lambda: (r := runs_of(instance, **{SENSOR_TAG: "landing_sensor"})) and len(r) >= 2 and r,
            daemon,
            deadline,
        )
        # A restart while ingestion runs: cursors and run keys are in the instance, not the daemon.
        assert daemon.stop() == 0, daemon.tail()
        daemon.start()

        retraining = wait_for(
            "a finished retraining run",
            lambda: [r for r in runs_of(instance, **{SENSOR_TAG: "retraining_sensor"}) if r.status in DONE],
            daemon,
            deadline,
        )
        seconds = time.monotonic() - landed_at
        # Let the sensors tick again after the retraining: nothing may be launched twice.
        time.sleep(15)
        yield {
            "instance": instance,
            "day": day,
            "landed": landed,
            "ingestion": ingestion,
            "retraining": retraining,
            "registry": registry,
            "versions_before": versions_before,
            "lake": lake,
            "seconds": seconds,
            "daemon": daemon,
        }
    finally:
        daemon.close()


def test_each_landed_file_is_ingested_once_even_across_a_daemon_restart(loop):
    instance = loop["instance"]
    ingestion = runs_of(instance, **{SENSOR_TAG: "landing_sensor"})
    assert sorted(r.tags[RUN_KEY_TAG].split("@")[0] for r in ingestion) == sorted(
        f"landing/{feed}/date={loop['day']}/{feed}.parquet" for feed in ("fraud_labels", "transactions")
    ), loop["daemon"].tail()
    assert {r.status for r in ingestion} == {dg.DagsterRunStatus.SUCCESS}


def test_the_day_flows_by_itself_to_features_scores_and_a_drift_report_in_the_lake(loop):
    instance, day = loop["instance"], loop["day"].isoformat()
    for key in (["features", "transaction_features"], ["scores", "transaction_scores"], FEATURE_DRIFT.path):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day]), limit=10
        ).records
        assert len(records) == 1, (key, len(records))  # once: no run was launched twice
    drift = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=FEATURE_DRIFT, asset_partitions=[day]), limit=1
    ).records[0]
    metadata = drift.asset_materialization.metadata
    report = loop["lake"].read_file(f"{DRIFT_REPORTS}/date={day}/feature_drift.html")
    assert report.lstrip().startswith(b"<!DOCTYPE html>") and len(report) > 100_000  # self-contained
    assert metadata["report_path"].value.endswith("feature_drift.html")
    assert "amount" in metadata["drifted_features"].value  # the knob scaled every amount by 3
    evaluation = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(FEATURE_DRIFT, DRIFT_CHECK)
    )
    assert evaluation is not None and evaluation.partition == day


def test_the_retraining_sensor_launches_one_retraining_that_ends_with_a_judged_new_version(loop):
    (retraining,) = loop["retraining"]
    assert retraining.job_name == "train_and_promote"
    # Either trigger may come first: the day's flags (one labelled day is enough here) or its drift.
    reasons = retraining.tags[RETRAIN_REASONS_TAG]
    assert str(loop["day"]) in reasons and ("newly labelled day" in reasons or "feature drift" in reasons)
    new = [v for v in loop["registry"].versions() if v.tag not in loop["versions_before"]]
    assert len(new) == 1
    # Judged by the gate either way, with its reason on record.
    assert new[0].stage in ("production", "refused"), new[0].stage
    assert new[0].verdict() is not None and new[0].verdict().reason
    trained = loop["instance"].fetch_materializations(FRAUD_MODEL, limit=1).records[0]
    assert trained.run_id == retraining.run_id
    print(f"landing -> judged model: {loop['seconds']:.0f} s ({new[0].stage})")


def test_the_landing_sensor_kept_its_cursor_across_the_restart(loop):
    (state,) = [s for s in loop["instance"].all_instigator_state() if s.name == "landing_sensor"]
    cursor = json.loads(state.instigator_data.cursor)
    assert cursor["newest"] >= max(Path(uri).stat().st_mtime for uri in loop["landed"])
