"""`keel demo-drift`: the monitoring loop end to end, after `keel demo`.

The source system's drift knob changes the world from the next day on (the simulator: amounts
scaled, card testing at night); those days land in the landing zone, and Keel's own sensors and
automation, ticked in this process (``keel.loop``), take it from there for every use case:
ingestion -> warehouse -> features -> scores -> drift report and check -> retraining sensor ->
train, gate, promote or refuse -> Bento.
"""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

DRIFT_DAYS = 2  # a day's own features drift at once; its windows over past days from the next day on
AMOUNT_SCALE = 3.0


def run(settings, console: Console, days: int = DRIFT_DAYS, amount_scale: float = AMOUNT_SCALE) -> int:

    from keel.local import dagster_instance
    from keel.loop import Loop
    from platform_assets.components.plan import key
    from platform_assets.components.use_case import declared
    from platform_assets.definitions import build

    began = time.monotonic()
    definitions = build(settings)
    registry, landing = definitions.resources["registry"], definitions.resources["landing"]
    use_cases = declared()
    champions = {
        name: registry.of(spec.model_name or name).champion() for name, (spec, _) in use_cases.items()
    }
    last = landing.last_day()
    if last is None or not any(champions.values()):
        console.print("[red]No model in production or nothing landed yet: run `make demo` first.[/]")
        return 2
    for name in [name for name, champion in champions.items() if champion is None]:
        console.print(f"[yellow]{name} has no model in production: its drift and retraining are left out.[/]")
        del use_cases[name], champions[name]
    upstream = definitions.resources["upstream"]
    if not hasattr(upstream, "drifting_from"):
        console.print(f"[red]The source system {type(upstream).__name__} cannot simulate drift.[/]")
        return 2
    instance = dagster_instance(settings)
    loop = Loop(definitions, instance, report=lambda line: console.print(f"  {line}", highlight=False))
    loop.start()
    first = last + timedelta(days=1)
    if first + timedelta(days=days - 1) > settings.last_day:
        # The days after the last have not ended (or are past the calendar's end): the source delivers
        # its newest days again, drifted
        # (a re-delivered file is a new arrival; its partitions are replaced).
        first = last - timedelta(days=days - 1)
    drifted = upstream.drifting_from(first, amount_scale, card_testing=True)
    new_days = [first + timedelta(days=i) for i in range(days)]
    for day in new_days:
        landing.deliver_day(drifted, day)
    console.print(
        f"[bold]Keel drift demo[/]: in production {', '.join(c.tag for c in champions.values())}. Landed "
        f"{new_days[0]} .. {new_days[-1]} with drift (amounts x{amount_scale}, card testing at night) in "
        f"{landing.lake.uri}/{landing.prefix}/"
    )

    # dbt's own output goes to a log file; the terminal shows one line per run.
    log_path = Path(instance.root_directory, "demo_logs", f"drift-{int(time.time())}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"Step output (dbt): {log_path}")
    with log_path.open("w") as log, contextlib.redirect_stdout(log):
        console.print("[bold]1. landing_sensor[/] ingests what landed")
        runs = loop.tick("landing_sensor")
        console.print(
            "[bold]2. automation[/]: warehouse, features, scores, online features, drift, live performance"
        )
        runs += loop.automate()
    failed = [r for r in runs if not r.result.success]
    if failed:
        console.print(
            f"[red]{len(failed)} runs failed[/] (make dev, then Runs): " + ", ".join(r.label for r in failed)
        )
        return 1

    drift_table = Table(title="Drift against each production model's training rows", title_justify="left")
    for column in ("use case", "day", "drifted features", "share", "check", "report"):
        drift_table.add_column(column)
    for run in runs:
        for event in run.result.get_asset_materialization_events():
            use_case, asset = event.asset_key.path[0], event.asset_key.path[-1]
            if use_case not in use_cases:
                continue
            if asset == "drift":
                m = _values(event)
                drift_table.add_row(
                    use_case,
                    event.partition,
                    ", ".join(m["drifted_features"]),
                    f"{m['drift_share']:.0%}",
                    _check(run.result, event.asset_key),
                    m["report_path"],
                )
            if asset == "live_performance":
                m = _values(event)
                measured = ", ".join(
                    f"{name} {m[name]:.4f}"
                    for metric in use_cases[use_case][0].metrics
                    if (name := metric.name.rpartition(":")[2]) in m
                )
                console.print(
                    f"  {use_case}: live performance of {event.partition} (labels known now): {measured} "
                    f"({_check(run.result, event.asset_key)})"
                )
    console.print(drift_table)

    console.print("[bold]3. retraining sensors[/] weigh the evidence since the last training")
    for name in use_cases:
        with log_path.open("a") as log, contextlib.redirect_stdout(log):
            retrained = loop.tick(f"{name}_retraining")
        for run in retrained:
            console.print(
                f"  {name}: requested because: {run.result.dagster_run.tags.get('keel/retrain_reasons')}"
            )
            evaluation = _metadata(run.result, key(name, "evaluation"))
            promoted = _metadata(run.result, key(name, "production_model"))
            console.print(f"  {name}: promotion gate: {evaluation.get('decision', 'not reached')}")
            if promoted.get("promoted"):
                console.print(
                    f"[bold green]Promoted[/] {promoted['model_tag']} (replaces {promoted['replaces']})"
                )
            else:
                models = registry.of(use_cases[name][0].model_name or name)
                console.print(f"[bold yellow]Refused[/]: {models.champion().tag} stays in production")
    console.print(f"Elapsed: {time.monotonic() - began:.1f} s. The same runs are in the UI (make dev).")
    return 0


def _values(event) -> dict:
    return {name: value.value for name, value in event.materialization.metadata.items()}


def _metadata(result, key) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key == key:
            return _values(event)
    return {}


def _check(result, key) -> str:
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and event.event_specific_data.asset_key == key:
            evaluation = event.event_specific_data
            return "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"
    return "not run"
