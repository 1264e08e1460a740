"""Alerts: every failed asset check and every failed run, whatever the use case, to the ``alerts``
resource (a webhook in production, the log locally).

- ``check_failure_alerts``: every failed asset check (drift, performance, contracts, dbt tests),
  once each, from the moment the sensor first runs.
- ``freshness_alerts``: every asset that turns late by its freshness policy (Dagster's freshness
  daemon judges; a source table, a use case's features or its prediction log declare one).
- ``run_failure_alerts``: every failed run, with its job, failed steps and error.
"""

import os

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from resources.alerts import Alert, Alerts

_HISTORY = 200  # check evaluations read per check and tick: far more than a day produces


def _dagster_url(path: str) -> str:
    """A link into the Dagster UI, where it is known (DAGSTER_WEBSERVER_URL), else the path alone."""
    base = os.environ.get("DAGSTER_WEBSERVER_URL", "").rstrip("/")
    return f"{base}{path}" if base else path


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends every failed asset check (drift, live performance, data contracts, dbt "
    "tests) to the alerts resource: a webhook in production, the log locally.",
)
def check_failure_alerts(context: dg.SensorEvaluationContext, alerts: Alerts):
    # Read per check from the table of check executions (its ids are global on SQLite and
    # PostgreSQL alike); the cursor is the newest execution already looked at.
    storage = context.instance.event_log_storage
    check_keys = context.repository_def.asset_graph.asset_check_keys
    seen = int(context.cursor) if context.cursor else None
    executions = sorted(
        (
            record
            for key in check_keys
            for record in storage.get_asset_check_execution_history(key, limit=_HISTORY)
            if seen is None or record.id > seen
        ),
        key=lambda record: record.id,
    )
    if seen is None:
        # From now on: a new deployment does not page for the whole history.
        context.update_cursor(str(max((r.id for r in executions), default=0)))
        return dg.SkipReason("started: check failures from now on are sent")
    failed = [r for r in executions if r.status == AssetCheckExecutionRecordStatus.FAILED and r.evaluation]
    for record in failed:
        evaluation, key = record.evaluation, record.key
        partition = record.partition or evaluation.partition
        where = f" for {partition}" if partition else ""
        alerts.send(
            Alert(
                title=f"check {key.name} failed on {key.asset_key.to_user_string()}{where}",
                text=evaluation.description or "no description",
                severity="error" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "warning",
                link=_dagster_url(f"/runs/{record.run_id}"),
                details={"run_id": record.run_id, "partition": partition},
            )
        )
        # Advanced per alert: a send that raises leaves the rest for the next tick, none twice.
        context.update_cursor(str(record.id))
    # Executions still planned (a run in progress) are not final: look at them again next tick.
    pending = [r.id for r in executions if r.status == AssetCheckExecutionRecordStatus.PLANNED]
    done = [r.id for r in executions if not pending or r.id < min(pending)]
    if done:
        context.update_cursor(str(max(done)))
    if not failed:
        return dg.SkipReason(f"{len(executions)} new check executions, none failed")


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends every asset that turns late by its freshness policy (a source that stopped "
    "delivering, a stuck automation, a silent scoring service) to the alerts resource.",
)
def freshness_alerts(context: dg.SensorEvaluationContext, alerts: Alerts):
    # The freshness daemon records each change of an asset's state; the cursor is the time of the
    # newest change already looked at, so each turn to late is sent once.
    graph = context.repository_def.asset_graph
    declared = [key for key in graph.get_all_asset_keys() if graph.get(key).freshness_policy is not None]
    records = context.instance.get_freshness_state_records(declared)
    newest = max((r.updated_at.timestamp() for r in records.values()), default=0.0)
    if not context.cursor:
        context.update_cursor(str(newest))
        return dg.SkipReason(
            f"started: {len(declared)} assets with a freshness policy, late ones from now on"
        )
    seen = float(context.cursor)
    late = sorted(
        (
            r
            for r in records.values()
            if r.updated_at.timestamp() > seen
            and r.freshness_state in (FreshnessState.WARN, FreshnessState.FAIL)
        ),
        key=lambda r: r.updated_at,
    )
    for record in late:
        key = record.entity_key.to_user_string()
        policy = graph.get(record.entity_key).freshness_policy
        window = getattr(policy, "fail_window", None)  # a time window; a cron policy has a deadline
        expected = f"updated within {window.to_timedelta()}" if window else "updated by its deadline"
        alerts.send(
            Alert(
                title=f"{key} is late",
                text=f"expected to be {expected}; {record.freshness_state.value} since "
                f"{record.updated_at:%Y-%m-%d %H:%M} UTC",
                severity="error" if record.freshness_state == FreshnessState.FAIL else "warning",
                link=_dagster_url(f"/assets/{key}"),
                details={"asset": key, "state": record.freshness_state.value},
            )
        )
        context.update_cursor(str(record.updated_at.timestamp()))  # none twice if a send raises
    context.update_cursor(str(max(newest, seen)))
    if not late:
        return dg.SkipReason(f"{len(declared)} assets with a freshness policy, none newly late")


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Sends every failed run (its job, the failed step and the error) to the alerts resource.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, alerts: Alerts):
    run = context.dagster_run
    failure = context.failure_event.message or "no message"
    steps = [event.step_key for event in context.get_step_failure_events()]
    alerts.send(
        Alert(
            title=f"run {run.run_id[:8]} of {run.job_name} failed",
            text=(f"failed steps: {', '.join(steps)}\n" if steps else "") + failure,
            link=_dagster_url(f"/runs/{run.run_id}"),
            details={"run_id": run.run_id, "job": run.job_name, "tags": dict(run.tags)},
        )
    )
