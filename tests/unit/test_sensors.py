"""Every sensor, evaluated with `build_sensor_context` against a test instance: what it requests,
what it skips, what it alerts, and that asking twice gives the same run keys."""

import json
import os
import time
from datetime import date

import dagster as dg
import pytest

from platform_assets.components.plan import DRIFT_CHECK
from platform_assets.defs.alerts import check_failure_alerts, freshness_alerts, run_failure_alerts
from platform_assets.defs.landing import landing_sensor
from platform_assets.retraining import RETRAIN_REASONS_TAG
from resources.alerts import Alert, Alerts
from resources.lake import LocalLake
from resources.retraining import Retraining
from resources.sources import LandingZone
from tests import fraud
from tests.payments import SimulatorSource, source

# The reference use case's retraining sensor, as its folder declares it (the platform's sensor code).
retraining_sensor = fraud.sensor("fraud_retraining")
FRAUD_MODEL, FEATURE_DRIFT, LABELS = fraud.MODEL, fraud.DRIFT, fraud.LABELS
DAY = date(2026, 1, 12)
RAW_TRANSACTIONS = dg.AssetKey(["lake", "raw_transactions"])
SOURCE = SimulatorSource(n_customers=200, n_terminals=400)


class RecordedAlerts(Alerts):
    """Alerts kept in a list the test can read."""

    def send(self, alert: Alert) -> None:
        SENT.append(alert)


SENT: list[Alert] = []


# The drift asset's key and check, for the sensor that reads the repository's checks.
@dg.asset(key=FEATURE_DRIFT, check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset=FEATURE_DRIFT)])
def drift_stand_in(): ...


# The payments source's tables as specs: the landing sensor reads their feed tags from the repository.
DEFINITIONS = dg.Definitions(assets=[drift_stand_in, *(spec for a in source().assets() for spec in a.specs)])


@pytest.fixture(autouse=True)
def no_alerts_yet():
    SENT.clear()


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def landing(tmp_path):
    return LandingZone(lake=LocalLake(root=str(tmp_path)))


def tick(sensor, instance, cursor=None, **resources):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, definitions=DEFINITIONS
    ) as context:
        return sensor(context), context.cursor


def landing_tick(instance, landing, cursor=None):
    return tick(landing_sensor, instance, cursor, landing=landing, alerts=RecordedAlerts())


# Landing ------------------------------------------------------------------------------------------


def test_each_landed_file_is_requested_for_its_assets_and_day_with_a_run_key(instance, landing):
    landing.deliver(SOURCE, [DAY])
    result, cursor = landing_tick(instance, landing)
    requests = {r.tags["keel/landed_file"]: r for r in result.run_requests}
    transactions = requests[f"landing/transactions/date={DAY}/transactions.parquet"]
    assert transactions.partition_key == DAY.isoformat() and transactions.job_name == "ingest_day"
    assert {k.to_user_string() for k in transactions.asset_selection} == {
        "lake/raw_transactions",
        "lake/quarantined_transactions",
    }
    assert requests["landing/customers/customers.parquet"].job_name == "ingest_reference"
    assert requests["landing/customers/customers.parquet"].partition_key is None
    assert len(requests) == 4
    assert json.loads(result.cursor)["newest"] == max(f.modified for f in landing.landed()[0])


def test_asking_again_gives_the_same_run_keys_so_the_daemon_launches_each_file_once(instance, landing):
    landing.deliver_day(SOURCE, DAY)
    first, _ = landing_tick(instance, landing)
    again, _ = landing_tick(instance, landing, cursor=first.cursor)
    assert {r.run_key for r in again.run_requests} == {r.run_key for r in first.run_requests}


def test_a_file_whose_partition_was_built_after_it_landed_is_not_requested(instance, landing):
    landing.deliver_day(SOURCE, DAY)
    instance.report_runless_asset_event(dg.AssetMaterialization(RAW_TRANSACTIONS, partition=DAY.isoformat()))
    result, _ = landing_tick(instance, landing)
    assert [r.tags["keel/landed_file"] for r in result.run_requests] == [
        f"landing/fraud_labels/date={DAY}/fraud_labels.parquet"
    ]


def test_a_file_delivered_again_after_ingestion_is_ingested_again(instance, landing, tmp_path):
    landing.deliver_day(SOURCE, DAY)
    instance.report_runless_asset_event(dg.AssetMaterialization(RAW_TRANSACTIONS, partition=DAY.isoformat()))
    first, _ = landing_tick(instance, landing)
    landing.deliver_day(SOURCE, DAY)  # a corrected extract
    path = tmp_path / "landing" / "transactions" / f"date={DAY}" / "transactions.parquet"
    os.utime(path, (path.stat().st_mtime + 5, path.stat().st_mtime + 5))
    again, _ = landing_tick(instance, landing, cursor=first.cursor)
    redelivered = [r for r in again.run_requests if r.tags["keel/landed_file"].startswith("landing/trans")]
    assert len(redelivered) == 1 and redelivered[0].run_key.endswith(f"@{path.stat().st_mtime:.6f}")


def test_a_file_outside_the_layout_is_alerted_once_and_never_ingested(instance, landing, tmp_path):
    (tmp_path / "landing" / "transactions").mkdir(parents=True)
    (tmp_path / "landing" / "transactions" / "2026-01-12.csv").write_text("id,amount\n")
    result, _ = landing_tick(instance, landing)
    assert result.run_requests == [] and "nothing new" in result.skip_reason.skip_message
    (alert,) = SENT
    assert "landing/transactions/2026-01-12.csv is not a file of a declared feed" in alert.text
    landing_tick(instance, landing, cursor=result.cursor)
    assert len(SENT) == 1


def test_a_file_of_a_feed_no_source_declares_is_alerted_and_never_ingested(instance, landing, tmp_path):
    folder = tmp_path / "landing" / "refunds" / "date=2026-01-12"
    folder.mkdir(parents=True)
    (folder / "refunds.parquet").write_bytes(b"PAR1")
    result, _ = landing_tick(instance, landing)
    assert result.run_requests == []
    (alert,) = SENT
    assert "landing/refunds/date=2026-01-12/refunds.parquet is not a file of a declared feed" in alert.text
    assert "customers, fraud_labels, terminals, transactions" in alert.text


# Retraining ---------------------------------------------------------------------------------------


def retraining_tick(instance, labelled_days=2):
    result, _ = tick(retraining_sensor, instance, retraining=Retraining(labelled_days=labelled_days))
    return result


def trained(instance):
    instance.report_runless_asset_event(dg.AssetMaterialization(FRAUD_MODEL))


def test_no_retraining_before_any_training(instance):
    assert "fraud/model has never been trained" in retraining_tick(instance).skip_message


def test_no_retraining_until_enough_days_are_labelled_since_the_last_training(instance):
    instance.report_runless_asset_event(dg.AssetMaterialization(LABELS, partition="2026-02-01"))
    trained(instance)  # the flags of 02-01 were there before: they do not count
    instance.report_runless_asset_event(dg.AssetMaterialization(LABELS, partition="2026-02-02"))
    assert "1 labelled days" in retraining_tick(instance).skip_message
    instance.report_runless_asset_event(dg.AssetMaterialization(LABELS, partition="2026-02-03"))
    request = retraining_tick(instance)
    assert isinstance(request, dg.RunRequest)
    assert request.tags[RETRAIN_REASONS_TAG].startswith("2 newly labelled days")


def test_one_trigger_is_one_run_key_until_a_new_model_is_trained(instance):
    trained(instance)
    for partition in ("2026-02-02", "2026-02-03"):
        instance.report_runless_asset_event(dg.AssetMaterialization(LABELS, partition=partition))
    first, again = retraining_tick(instance), retraining_tick(instance)
    assert first.run_key == again.run_key
    trained(instance)
    assert "0 labelled days" in retraining_tick(instance).skip_message


def failed_drift(instance, day: str, severity=dg.AssetCheckSeverity.ERROR):
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=FEATURE_DRIFT, check_name=DRIFT_CHECK, passed=False, severity=severity, partition=day
        )
    )


def test_a_failed_drift_check_since_the_last_training_asks_for_a_retraining(instance):
    failed_drift(instance, "2026-02-01")  # before the training: already answered
    trained(instance)
    assert isinstance(retraining_tick(instance), dg.SkipReason)
    failed_drift(instance, "2026-02-05", severity=dg.AssetCheckSeverity.WARN)  # a warning does not
    assert isinstance(retraining_tick(instance), dg.SkipReason)
    failed_drift(instance, "2026-02-06")
    request = retraining_tick(instance)
    assert request.tags[RETRAIN_REASONS_TAG] == "feature drift above the failure threshold on 2026-02-06"


# Alerts -------------------------------------------------------------------------------------------


def test_failed_checks_are_alerted_once_from_the_moment_the_sensor_starts(instance):
    failed_drift(instance, "2026-02-01")  # before the sensor started: history, not news
    started, cursor = tick(check_failure_alerts, instance, alerts=RecordedAlerts())
    assert "from now on" in started.skip_message and SENT == []
    failed_drift(instance, "2026-02-06")
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=FEATURE_DRIFT, check_name=DRIFT_CHECK, passed=True, partition="x")
    )
    _, cursor = tick(check_failure_alerts, instance, cursor, alerts=RecordedAlerts())
    (alert,) = SENT
    assert alert.title == f"check {DRIFT_CHECK} failed on fraud/drift for 2026-02-06"
    assert alert.severity == "error"
    tick(check_failure_alerts, instance, cursor, alerts=RecordedAlerts())
    assert len(SENT) == 1


def freshness_changed(instance, key, state):
    # What Dagster's freshness daemon records when an asset's state changes.
    from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

    instance._report_runless_asset_event(  # noqa: SLF001 (the daemon's own call)
        FreshnessStateChange(
            key=key,
            previous_state=FreshnessState.UNKNOWN,
            new_state=FreshnessState(state),
            state_change_timestamp=time.time(),
        )
    )


def test_a_table_turning_late_by_its_freshness_policy_is_alerted_once(instance):
    # The payments source declares raw_transactions fresh within 26 hours (defs/payments/defs.yaml).
    freshness_changed(instance, RAW_TRANSACTIONS, "FAIL")  # before the sensor started: not news
    started, cursor = tick(freshness_alerts, instance, alerts=RecordedAlerts())
    assert "from now on" in started.skip_message and SENT == []
    freshness_changed(instance, RAW_TRANSACTIONS, "PASS")
    _, cursor = tick(freshness_alerts, instance, cursor, alerts=RecordedAlerts())
    assert SENT == []
    freshness_changed(instance, RAW_TRANSACTIONS, "FAIL")
    _, cursor = tick(freshness_alerts, instance, cursor, alerts=RecordedAlerts())
    (alert,) = SENT
    assert alert.title == "lake/raw_transactions is late" and alert.severity == "error"
    assert "updated within 1 day, 2:00:00" in alert.text
    tick(freshness_alerts, instance, cursor, alerts=RecordedAlerts())
    assert len(SENT) == 1


def test_a_failed_run_is_alerted_with_its_job_step_and_error(instance):
    @dg.op
    def breaks():
        raise ValueError("the warehouse file is locked")

    @dg.job
    def nightly():
        breaks()

    result = nightly.execute_in_process(instance=instance, raise_on_error=False)
    failure = next(
        entry.dagster_event
        for entry in instance.all_logs(result.run_id)
        if entry.dagster_event and entry.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
    )
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"alerts": RecordedAlerts()},
    ).for_run_failure()
    run_failure_alerts(context)
    (alert,) = SENT
    assert alert.title == f"run {result.run_id[:8]} of nightly failed"
    assert "failed steps: breaks" in alert.text and alert.link.endswith(result.run_id)


def test_a_retraining_waits_for_runs_still_building_the_training_data(instance):
    trained(instance)
    failed_drift(instance, "2026-02-06")
    instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            run_id="5e771e5a-0000-0000-0000-000000000000",
            status=dg.DagsterRunStatus.STARTED,
            asset_selection=frozenset({LABELS}),
        )
    )
    assert (
        retraining_tick(instance).skip_message == "waiting for runs that update the training data: 5e771e5a"
    )
