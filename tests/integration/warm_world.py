"""The default world, warm: what `keel demo` trains on, then four undrifted weeks and two drifted days
judged by fraud's drift asset. Run in a process of its own (the calendar and the world's size are
settings, read once per process): ``python warm_world.py <report.json>``, with the environment the
test gives it.

The demo's world is 66 days of the default simulator (5,000 cards, 10,000 terminals); the demo
trains on its days 31..44, so every training row has 30 full days of history behind it, and drift
compares later days with those rows. Here the same training (the declared estimator: drift's
reference does not depend on which estimator wins), then the drift asset and its check for each of
the 28 days after the training window (not one of them drifted: the world goes on as it was), then
for two days of ``keel demo-drift``'s drift (amounts scaled by 3, card testing at night).
"""

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

TRAIN_FROM = 31  # the demo's training window, in days from the world's first day
TRAIN_DAYS = 14
UNDRIFTED_DAYS = 28
DRIFTED_DAYS = 2  # as `keel demo-drift` lands them
AMOUNT_SCALE = 3.0


def main(report: str) -> int:
    import dagster as dg

    from keel_core.settings import Settings
    from platform_assets.components.plan import DRIFT_CHECK
    from platform_assets.definitions import build
    from platform_assets.partitions import daily_partitions

    settings = Settings()
    first = settings.first_day
    train_end = first + timedelta(days=TRAIN_FROM + TRAIN_DAYS - 1)
    monitored = [train_end + timedelta(days=i + 1) for i in range(UNDRIFTED_DAYS + DRIFTED_DAYS)]
    drift_start = monitored[UNDRIFTED_DAYS]
    days = [first + timedelta(days=i) for i in range((monitored[-1] - first).days + 1)]
    definitions = build(settings)
    landing, source = definitions.resources["landing"], definitions.resources["upstream"]
    began = time.perf_counter()
    landing.deliver(source, [d for d in days if d < drift_start])
    drifted = source.drifting_from(drift_start, AMOUNT_SCALE, card_testing=True)
    landing.deliver(drifted, monitored[-DRIFTED_DAYS:])

    production = dg.AssetKey(["fraud", "production_model"])
    job = dg.define_asset_job(
        "warm_world",
        selection=dg.AssetSelection.groups("lake", "warehouse")
        | dg.AssetSelection.assets(production).upstream().required_multi_asset_neighbors(),
        partitions_def=daily_partitions,
    )
    definitions = dg.Definitions.merge(definitions, dg.Definitions(jobs=[job]))
    instance = dg.DagsterInstance.get()
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    # The demo's window: tested on the week ending a label delay before the last day of a 66-day world.
    last_labelled = first + timedelta(days=TRAIN_FROM + TRAIN_DAYS + 7 + 7 - 1)
    built = definitions.resolve_job_def("warm_world").execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat(),
        },
        raise_on_error=False,
        run_config={
            **quiet,
            "ops": {"fraud__model": {"config": {"last_labelled_day": str(last_labelled), "trials": 1}}},
        },
    )
    _raise_on_failure(built)
    (trained,) = [
        e.materialization.metadata
        for e in built.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["fraud", "model"])
    ]
    built_seconds = time.perf_counter() - began

    drift_key = dg.AssetKey(["fraud", "drift"])
    assets = definitions.resolve_implicit_global_asset_job_def()
    verdicts = []
    for day in monitored:
        result = assets.execute_in_process(
            instance=instance,
            asset_selection=[drift_key],
            partition_key=day.isoformat(),
            raise_on_error=False,
            run_config=quiet,
        )
        _raise_on_failure(result)
        (materialization,) = result.get_asset_materialization_events()
        (check,) = [
            e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert check.check_name == DRIFT_CHECK
        metadata = materialization.materialization.metadata
        verdicts.append(
            {
                "day": day.isoformat(),
                "drifted_world": day >= drift_start,
                "passed": check.passed,
                "severity": check.severity.value,
                "description": check.description,
                "drifted_features": metadata["drifted_features"].value,
                "scores": {
                    k.removeprefix("drift_score/"): v.value
                    for k, v in metadata.items()
                    if k.startswith("drift_score/")
                },
            }
        )
    Path(report).write_text(
        json.dumps(
            {
                "first_day": first.isoformat(),
                "train_start": trained["train_start"].value,
                "train_end": trained["train_end"].value,
                "built_seconds": round(built_seconds, 1),
                "drift_seconds": round(time.perf_counter() - began - built_seconds, 1),
                "verdicts": verdicts,
            },
            indent=1,
        )
    )
    return 0


def _raise_on_failure(result) -> None:
    if not result.success:
        failures = [
            f"{event.step_key}: {event.event_specific_data.error.message}"
            for event in result.all_events
            if event.event_type_value == "STEP_FAILURE"
        ]
        raise RuntimeError(f"the run failed: {failures}")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
