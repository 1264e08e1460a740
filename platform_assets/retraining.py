"""Retraining, for any use case: a sensor that gathers the evidence since the model's last training
from the Dagster instance and asks ``keel_core.retraining`` whether it is reason to retrain.

The evidence: the days whose labels were materialized since, and the days whose drift or live
performance check failed (with ERROR severity; a warning does not retrain) since. The run it
requests is the use case's training job (train, gate, promote, Bento), keyed by the training it
follows, so that the same evidence never launches two runs, even across a daemon restart.
"""

from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from keel_core.retraining import Evidence, RetrainingPolicy, reasons
from resources.retraining import Retraining

RETRAIN_REASONS_TAG = "keel/retrain_reasons"
TRIGGERING_TRAINING_TAG = "keel/retrain_after"
_HISTORY = 200  # check evaluations read per check and tick: far more than a day produces
_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class Watched:
    """What a use case's retraining sensor reads."""

    trained: dg.AssetKey  # the model asset: its newest materialization is "the last training"
    labels: dg.AssetKey  # a daily asset: each new partition is a newly labelled day
    drift_check: dg.AssetCheckKey
    performance_check: dg.AssetCheckKey
    training_inputs: frozenset[dg.AssetKey]  # wait while a run updates these


def _failed_days(instance: dg.DagsterInstance, check: dg.AssetCheckKey, since: float) -> list[str]:
    """Partitions whose check failed with ERROR severity after ``since`` (warnings do not retrain)."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        check, limit=_HISTORY, status={AssetCheckExecutionRecordStatus.FAILED}
    )
    return sorted(
        {
            record.partition or "(no partition)"
            for record in records
            if record.event is not None
            and record.event.timestamp > since
            and record.evaluation is not None
            and record.evaluation.severity == dg.AssetCheckSeverity.ERROR
        }
    )


def _runs_updating(instance: dg.DagsterInstance, keys: frozenset[dg.AssetKey]) -> list[str]:
    """Ids of the runs in flight that materialize any of ``keys``."""
    return [
        run.run_id[:8]
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=_IN_FLIGHT), limit=100)
        if run.asset_selection and run.asset_selection & keys
    ]


def gather_evidence(
    instance: dg.DagsterInstance, watched: Watched
) -> tuple[Evidence, dg.EventLogRecord | None]:
    """What happened since the newest materialization of ``watched.trained`` (and that record)."""
    trained = instance.fetch_materializations(watched.trained, limit=1).records
    last = trained[0] if trained else None
    since = last.timestamp if last else 0.0
    labelled = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=watched.labels, after_storage_id=last.storage_id if last else None),
        limit=10_000,
    ).records
    return (
        Evidence(
            labelled_days=sorted({r.partition_key for r in labelled if r.partition_key}),
            drift_failures=_failed_days(instance, watched.drift_check, since),
            performance_failures=_failed_days(instance, watched.performance_check, since),
        ),
        last,
    )


def retraining_sensor(
    name: str, job, watched: Watched, labelled_days: int | None = None
) -> dg.SensorDefinition:
    """The sensor ``name`` asking for ``job`` when the evidence on ``watched`` is reason to retrain.
    ``labelled_days`` overrides the environment's policy (the ``retraining`` resource) for this model."""

    def policy(retraining: Retraining) -> RetrainingPolicy:
        return RetrainingPolicy(labelled_days) if labelled_days else retraining.policy()

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests a retraining ({job.name}: train, gate, promote, Bento) when enough days were "
        f"labelled since the last training of {watched.trained.to_user_string()}, or its drift or "
        "live-performance check failed since then.",
    )
    def _sensor(context: dg.SensorEvaluationContext, retraining: Retraining):
        evidence, last = gather_evidence(context.instance, watched)
        if last is None:
            trained = watched.trained.to_user_string()
            return dg.SkipReason(f"{trained} has never been trained: run keel_pipeline (make demo) first")
        why = reasons(evidence, policy(retraining))
        if why and (busy := _runs_updating(context.instance, watched.training_inputs)):
            # A day still on its way through the warehouse would be missing from the training data.
            return dg.SkipReason(f"waiting for runs that update the training data: {', '.join(busy)}")
        if not why:
            return dg.SkipReason(
                f"since the last training ({last.event_log_entry.run_id[:8]}): "
                f"{len(evidence.labelled_days)} labelled days, no failed drift or performance check"
            )
        # One retraining per training it follows: the key is the same on every tick (and after a
        # daemon restart) until a new model has been trained, so the daemon launches it once.
        run_key = f"retrain-after-{last.storage_id}"
        context.log.info(f"{run_key}: {'; '.join(why)}")
        return dg.RunRequest(
            run_key=run_key,
            tags={
                RETRAIN_REASONS_TAG: "; ".join(why)[:4_000],
                TRIGGERING_TRAINING_TAG: last.event_log_entry.run_id,
            },
        )

    return _sensor
