"""The monitoring loop under the real Dagster daemon, on the world `keel demo` left behind.

The demo simulated every day up to yesterday; as `keel demo-drift` does when the next day has not
ended, the source delivers the newest day again with the simulator's drift knob on (a re-delivered
file is a new arrival), and nothing else is done by hand: the landing sensor ingests it, automation
carries it through the warehouse, features, scores and the drift report, and the retraining sensor
asks for a retraining that ends with a new model version, promoted or refused by the gate. The
daemon is stopped and started again while the ingestion runs; no run is launched twice, and the
tests look once the world has settled (no run in flight, every launching sensor has ticked on the
world as the last run left it).

Every wait is for an event (a tick, a run's end), bounded generously: on a busy two-core machine the
loop takes several times the three minutes it takes on a quiet one.
"""

import json
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from bento_server import Daemon, kill_group
from dagster._core.instance.ref import InstanceRef
from dagster._core.scheduler.instigation import TickStatus
from world_settings import namespace_lake

from keel.loop import RUN_KEY_TAG, SENSOR_TAG
from platform_assets.components.plan import DRIFT_CHECK
from platform_assets.defs.payments.system import SimulatorSource
from platform_assets.retraining import RETRAIN_REASONS_TAG, TRIGGERING_TRAINING_TAG
from resources.dbt import REPO_ROOT
from resources.lake import LocalLake
from resources.registry import ModelRegistry
from resources.sources import LandingZone
from tests import fraud

FRAUD_MODEL, FEATURE_DRIFT = fraud.MODEL, fraud.DRIFT
DRIFT_REPORTS = "monitoring/fraud_drift_reports"  # where the fraud use case's drift writes its reports

pytestmark = pytest.mark.slow

# Bounds on waits for events, not expected durations: far above what a busy machine needs.
TICK_SECONDS = 600  # the daemon loads the code location and ticks, or the queue starts runs
LOOP_SECONDS = 1800  # landed day -> ingestion -> warehouse ... -> a finished retraining (~3 min quiet)
STOP_SECONDS = 300  # the daemon stopping on SIGTERM
DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# The sensors that launch runs on this world; the others only send alerts or evaluate freshness.
LAUNCHING_SENSORS = ("landing_sensor", "keel_automation", "fraud_retraining", "terminal_volume_retraining")


def wait_for(what: str, condition, daemon: Daemon, seconds: float):
    """``condition()``'s value once it is true, polled; an error if ``seconds`` pass or the daemon exits."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds} s for {what}; the daemon's log ends with:\n{daemon.tail()}")
        if daemon.process.poll() is not None:
            raise RuntimeError(f"the daemon exited ({daemon.process.returncode}):\n{daemon.tail()}")
        time.sleep(1)


def has_ticked(instance: dg.DagsterInstance, name: str, after: float | None = None) -> bool:
    """Whether sensor ``name`` has finished a tick (one that began after ``after``, if given)."""
    for state in instance.all_instigator_state():
        if state.name == name:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=after)
            return any(tick.status != TickStatus.STARTED for tick in ticks)
    return False


def in_flight(instance: dg.DagsterInstance) -> bool:
    return bool(instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=1))


def runs_of(instance: dg.DagsterInstance, **tags) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags=tags)))


def settled(instance: dg.DagsterInstance) -> bool:
    """No run in flight, and each launching sensor has finished a tick that began after the last run
    ended: every one of them has seen the world as it is now and asked for nothing more."""
    if in_flight(instance):
        return False
    last_end = max((r.end_time for r in instance.get_run_records() if r.end_time), default=0.0)
    if not all(has_ticked(instance, name, after=last_end) for name in LAUNCHING_SENSORS):
        return False
    return not in_flight(instance)  # nor launched by a tick that finished meanwhile


def close(daemon: Daemon) -> None:
    """Stop the daemon (time to spare for a busy machine), then nothing it started may outlive the test."""
    try:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop(timeout=STOP_SECONDS)
    finally:
        for group in daemon.groups:
            kill_group(group)


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
    landing = LandingZone(lake=LocalLake(root=env["KEEL_LAKE_ROOT"]))
    registry = ModelRegistry(lake=lake).of(fraud.MODEL_NAME)
    versions_before = {v.tag for v in registry.versions()}
    runs_before = {run.run_id for run in instance.get_runs()}  # the demo's
    trained_before = instance.fetch_materializations(FRAUD_MODEL, limit=1).records[0].run_id
    daemon = Daemon(env, tmp_path_factory.mktemp("daemon") / "daemon.log", REPO_ROOT)
    try:
        daemon.start()
        # Automation reacts to what changed since its previous evaluation: it must have evaluated
        # once before the day lands (a running deployment always has).
        wait_for(
            "a first automation tick", lambda: has_ticked(instance, "keel_automation"), daemon, TICK_SECONDS
        )

        day = landing.last_day()
        assert day == demo_world.last_day
        source = SimulatorSource(
            n_customers=2000,
            n_terminals=4000,
            malformed_rows_per_day=3,
            start_date=demo_world.first_day.isoformat(),
        )
        drifted = source.drifting_from(day, amount_scale=3.0, card_testing=True)
        landed_at = time.monotonic()
        landed = landing.deliver_day(drifted, day)

        ingestion = wait_for(
            "the landing sensor's two runs",
            lambda: (r := runs_of(instance, **{SENSOR_TAG: "landing_sensor"})) and len(r) >= 2 and r,
            daemon,
            TICK_SECONDS,
        )
        # A restart while ingestion runs: cursors and run keys are in the instance, not the daemon.
        assert daemon.stop(timeout=STOP_SECONDS) == 0, daemon.tail()
        daemon.start()

        wait_for(
            "a finished retraining run",
            lambda: [r for r in runs_of(instance, **{SENSOR_TAG: "fraud_retraining"}) if r.status in DONE],
            daemon,
            LOOP_SECONDS,
        )
        seconds = time.monotonic() - landed_at  # a figure to read in the output, never a bound
        # Nothing may be launched twice: wait until every launching sensor has ticked on the world as
        # the last run left it and launched nothing more, then the tests count what was launched.
        wait_for("a settled world", lambda: settled(instance), daemon, TICK_SECONDS)
        yield {
            "instance": instance,
            "day": day,
            "landed": landed,
            "ingestion": ingestion,
            "retrainings": runs_of(instance, **{SENSOR_TAG: "fraud_retraining"})[::-1],  # oldest first
            "trained_before": trained_before,
            "registry": registry,
            "versions_before": versions_before,
            "lake": lake,
            "runs_before": runs_before,
            "seconds": seconds,
            "daemon": daemon,
        }
    finally:
        close(daemon)


def test_each_landed_file_is_ingested_once_even_across_a_daemon_restart(loop):
    instance = loop["instance"]
    ingestion = runs_of(instance, **{SENSOR_TAG: "landing_sensor"})
    assert sorted(r.tags[RUN_KEY_TAG].split("@")[0] for r in ingestion) == sorted(
        f"landing/{feed}/date={loop['day']}/{feed}.parquet" for feed in ("fraud_labels", "transactions")
    ), loop["daemon"].tail()
    assert {r.status for r in ingestion} == {dg.DagsterRunStatus.SUCCESS}


def since_landing(loop, key: dg.AssetKey, day) -> list[dg.EventLogRecord]:
    """The materializations of ``key``'s partition ``day`` by the runs the landed files led to."""
    records = (
        loop["instance"]
        .fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]), limit=100
        )
        .records
    )
    return [record for record in records if record.run_id not in loop["runs_before"]]


def test_the_day_flows_by_itself_to_features_scores_and_a_drift_report_in_the_lake(loop):
    instance, day = loop["instance"], loop["day"].isoformat()
    for key in (fraud.FEATURES.path, fraud.SCORES.path, FEATURE_DRIFT.path):
        records = since_landing(loop, dg.AssetKey(key), loop["day"])
        assert len(records) == 1, (key, len(records))  # once: no run was launched twice
    (drift,) = since_landing(loop, FEATURE_DRIFT, loop["day"])
    metadata = drift.asset_materialization.metadata
    report = loop["lake"].read_file(f"{DRIFT_REPORTS}/date={day}/drift.html")
    assert report.lstrip().startswith(b"<!DOCTYPE html>") and len(report) > 100_000  # self-contained
    assert metadata["report_path"].value.endswith("drift.html")
    assert "amount" in metadata["drifted_features"].value  # the knob scaled every amount by 3
    evaluation = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(FEATURE_DRIFT, DRIFT_CHECK)
    )
    assert evaluation is not None and evaluation.partition == day


def test_the_retraining_sensor_asks_for_each_retraining_once_and_each_ends_with_a_judged_new_version(loop):
    """The day brings two triggers, its drift and its flags (one labelled day is enough here). Whether
    one retraining sees both depends on which reaches the sensor first, which a busy machine changes:
    if the drift comes first, the flags that arrive after that retraining are new evidence and ask for
    another. What never varies: each retraining follows the training before it (its run key names
    that training), so no evidence is acted on twice, and each ends with a judged new version."""
    retrainings = loop["retrainings"]
    assert retrainings, "no retraining"
    assert {r.job_name for r in retrainings} == {"fraud_train_and_promote"}
    assert {r.status for r in retrainings} == {dg.DagsterRunStatus.SUCCESS}
    # A chain: the first follows the training the world had, each next one the retraining before it.
    followed = [r.tags[TRIGGERING_TRAINING_TAG] for r in retrainings]
    assert followed == [loop["trained_before"], *(r.run_id for r in retrainings[:-1])], followed
    assert len({r.tags[RUN_KEY_TAG] for r in retrainings}) == len(retrainings)
    # One is about the landed day: its drift or its flags, whichever came first. (The demo's own
    # monitoring of its last day may have asked first: its drift check fails on ordinary days of
    # the simulated world while the 30-day windows fill, issue 21.)
    reasons = [r.tags[RETRAIN_REASONS_TAG] for r in retrainings]
    assert any(str(loop["day"]) in r for r in reasons), reasons
    assert all("newly labelled day" in r or "feature drift" in r for r in reasons), reasons
    new = [v for v in loop["registry"].versions() if v.tag not in loop["versions_before"]]
    assert len(new) == len(retrainings), [v.tag for v in new]
    for version in new:  # judged by the gate either way, with its reason on record
        assert version.stage in ("production", "refused", "archived"), version.stage
        assert version.verdict() is not None and version.verdict().reason
    trained = loop["instance"].fetch_materializations(FRAUD_MODEL, limit=1).records[0]
    assert trained.run_id == retrainings[-1].run_id
    print(f"landing -> first judged model: {loop['seconds']:.0f} s; {len(retrainings)} retraining(s)")


def test_the_second_use_case_follows_the_day_and_retrains_through_the_same_sensors(loop):
    """terminal_volume (a folder, keel.UseCase): the landed day reaches its features, scores and drift;
    the day before it is judged once its next-day volume is known; the new labelled day retrains it."""
    instance, day = loop["instance"], loop["day"]
    for asset, partition in (
        ("features", day),
        ("scores", day),
        ("drift", day),
        ("live_performance", day - timedelta(days=1)),
    ):
        records = since_landing(loop, dg.AssetKey(["terminal_volume", asset]), partition)
        assert len(records) == 1, (asset, partition, len(records))
    retrainings = runs_of(instance, **{SENSOR_TAG: "terminal_volume_retraining"})
    assert retrainings and {r.job_name for r in retrainings} == {"terminal_volume_train_and_promote"}
    assert {r.status for r in retrainings} == {dg.DagsterRunStatus.SUCCESS}
    assert "newly labelled day" in retrainings[-1].tags[RETRAIN_REASONS_TAG]
    assert len({r.tags[RUN_KEY_TAG] for r in retrainings}) == len(retrainings)


def test_the_landing_sensor_kept_its_cursor_across_the_restart(loop):
    (state,) = [s for s in loop["instance"].all_instigator_state() if s.name == "landing_sensor"]
    cursor = json.loads(state.instigator_data.cursor)
    assert cursor["newest"] >= max(Path(uri).stat().st_mtime for uri in loop["landed"])
