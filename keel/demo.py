"""`keel demo`: run Keel's main job over a window of days and say what it made.

The run goes through the Dagster instance in ``$DAGSTER_HOME``, so it shows up in the UI
afterwards (``make dev``) exactly like a run launched from there.
"""

import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from keel_core.settings import Settings

JOB_NAME = "keel_pipeline"


def source_system(settings):
    """The demo world's source system, as the deployment's settings configure it: the simulator of
    the payments source (``platform_assets/defs/payments``), which the code location binds as its
    ``upstream`` resource too."""
    from platform_assets.defs.payments.system import SimulatorSource

    return SimulatorSource.from_settings(settings)


def days_needed(train_days: int | None = None) -> int:
    """The shortest window every declared use case can train on (with ``train_days``, if given)."""
    from keel_core.windows import TrainingWindow
    from platform_assets.components.use_case import declared

    return max(
        TrainingWindow.days_needed(
            train_days or spec.windows.train_days,
            spec.label_delay_days,
            spec.windows.test_days,
            spec.label_delay_days,
        )
        for spec, _ in declared().values()
    )


@dataclass(frozen=True)
class Window:
    start: date
    days: int

    @classmethod
    def chosen(cls, settings, start: date | None, days: int | None) -> "Window":
        """``days`` from ``start``; by default from the calendar's first day to its last (yesterday,
        unless the calendar ends before)."""
        start = start or settings.first_day
        if days is None:
            days = (settings.last_day - start).days + 1
        return cls(start, days)

    @property
    def end(self) -> date:
        return self.start + timedelta(days=self.days - 1)

    def run_tags(self) -> dict[str, str]:
        return {
            "dagster/asset_partition_range_start": self.start.isoformat(),
            "dagster/asset_partition_range_end": self.end.isoformat(),
        }


def run(settings, window: Window, console: Console, train_days: int | None = None) -> int:

    from keel.local import dagster_instance
    from platform_assets.definitions import build

    began = time.monotonic()
    console.print(
        f"[bold]Keel demo[/]: {JOB_NAME} for {window.start} .. {window.end} ({window.days} days), "
        f"environment [bold]{settings.env}[/], namespace [bold]{settings.namespace}[/]"
    )
    if settings.calendar_start and settings.calendar_start != Settings().calendar_start:
        console.print(
            f"The calendar starts on {settings.calendar_start} for this demo: to see its days in the UI, "
            f"set KEEL_CALENDAR_START={settings.calendar_start}"
            + (f" and KEEL_CALENDAR_END={settings.calendar_end}" if settings.calendar_end else "")
            + " (in .env) before `make dev`."
        )
    definitions = build(settings)
    landing, upstream = definitions.resources["landing"], definitions.resources["upstream"]
    delivered = landing.deliver_missing(
        upstream, [window.start + timedelta(days=i) for i in range(window.days)]
    )
    console.print(
        f"Landed {len(delivered)} days from the source system in {landing.lake.uri}/{landing.prefix}/"
        + (f" ({window.days - len(delivered)} had landed already)" if len(delivered) < window.days else "")
    )
    job = definitions.resolve_job_def(JOB_NAME)
    instance = dagster_instance(settings)
    run_id = str(uuid.uuid4())  # chosen here so the watcher can follow the run while it runs

    # dbt's own output goes to a log file; the terminal shows progress and the summary.
    log_path = Path(instance.root_directory, "demo_logs", f"{run_id[:8]}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"Step output (dbt): {log_path}")

    steps = sorted(job.graph.node_dict)
    watcher = _StepWatcher(instance, run_id, steps, console)
    watcher.start()
    try:
        with log_path.open("w") as log, contextlib.redirect_stdout(log):
            result = job.execute_in_process(
                instance=instance,
                run_id=run_id,
                tags=window.run_tags(),
                raise_on_error=False,
                # Dagster's log lines (dbt's warnings too) stay in the run's logs, in the UI;
                # failures are reported below from the run's events.
                run_config={
                    "loggers": {"console": {"config": {"log_level": "ERROR"}}},
                    # The training window asked for, for every use case's model.
                    **(
                        {
                            "ops": {
                                f"{name}__model": {"config": {"train_days": train_days}}
                                for name in _use_cases(definitions)
                            }
                        }
                        if train_days
                        else {}
                    ),
                },
            )
    finally:
        watcher.stop()

    if not result.success:
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                console.print(
                    f"[red]step {event.step_key} failed[/]\n{event.event_specific_data.error.message}"
                )
        console.print(f"[red]The run failed.[/] Its full logs: make dev, then Runs -> {run_id[:8]}")
        return 1
    _summary(definitions, result, window, time.monotonic() - began, run_id, console)
    return 0 if _monitor(definitions, instance, window.end, console) else 1


def _monitor(definitions, instance, last_day: date, console: Console) -> bool:
    """Run every monitoring asset (drift, live performance) for the newest day it can judge: the last
    day for drift, a label delay earlier for live performance. One run per day; True if all succeed."""
    from platform_assets.components.plan import LABEL_DELAY, MONITORING_TAG

    graph = definitions.resolve_asset_graph()
    by_day: dict[date, list] = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        if node.tags.get(MONITORING_TAG) == "true":
            day = last_day - timedelta(days=int(node.metadata[LABEL_DELAY]))
            by_day.setdefault(day, []).append(key)
    job = definitions.resolve_implicit_global_asset_job_def()
    succeeded = True
    for day, keys in sorted(by_day.items(), reverse=True):
        started = time.monotonic()
        with console.status(f"monitoring {day}: {', '.join(k.to_user_string() for k in keys)}"):
            result = job.execute_in_process(
                instance=instance,
                asset_selection=keys,
                partition_key=day.isoformat(),
                raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
            )
        checks = {
            e.event_specific_data.asset_key: e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        }
        for key in keys:
            check = checks.get(key)
            verdict = (
                "[red]not run[/]"
                if check is None
                else ("[green]passed[/]" if check.passed else f"[yellow]{check.severity.value}[/]")
                + f": {check.description}"
            )
            console.print(f"Monitoring {key.to_user_string()} for {day}: {verdict}")
        if not result.success:
            succeeded = False
            console.print(f"[red]The monitoring run for {day} failed[/] (run {result.run_id[:8]})")
        console.print(f"  ({time.monotonic() - started:.1f} s)")
    return succeeded


class _StepWatcher:
    """Shows the run's progress step by step, reading the run's events as they are written."""

    def __init__(self, instance, run_id: str, steps: list[str], console: Console):
        self._instance, self._run_id, self._steps, self._console = instance, run_id, steps, console
        self._read = 0  # events already reported (the run's event log only grows)
        self._started: dict[str, float] = {}
        self._finished: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._report()  # whatever arrived after the last poll

    def _watch(self):
        with self._console.status("starting…") as status:
            while not self._stop.wait(0.5):
                self._report()
                running = ", ".join(s for s in self._started if s not in self._finished) or "…"
                status.update(f"[{len(self._finished)}/{len(self._steps)} steps] running: {running}")

    def _report(self):
        from dagster import DagsterEventType

        records = self._instance.all_logs(self._run_id)
        for record in records[self._read :]:
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                self._started[event.step_key] = record.timestamp
            elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                self._finished.add(event.step_key)
                took = record.timestamp - self._started.get(event.step_key, record.timestamp)
                ok = event.event_type == DagsterEventType.STEP_SUCCESS
                self._console.print(
                    f"  [{len(self._finished)}/{len(self._steps)}] {event.step_key:<31} "
                    f"{'[green]done[/]' if ok else '[red]FAILED[/]'} in {took:5.1f} s"
                )
        self._read = len(records)


def _use_cases(definitions) -> list[str]:
    """The use cases of the code location (keel.UseCase): the groups of the assets it tags."""
    from platform_assets.components.plan import PIPELINE_TAG

    graph = definitions.resolve_asset_graph()
    return sorted(
        {key.path[0] for key in graph.get_all_asset_keys() if graph.get(key).tags.get(PIPELINE_TAG) == "true"}
    )


def _summary(definitions, result, window: Window, elapsed: float, run_id: str, console: Console):
    from platform_assets.components.source import FEED_TAG, INGESTS_TAG, QUARANTINE_TAG

    metadata = {}
    for event in result.get_asset_materialization_events():
        key = event.asset_key.to_user_string()
        metadata[key] = {k: v.value for k, v in event.materialization.metadata.items()}
    checks = [
        e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    failed_checks = [c for c in checks if not c.passed]
    graph = definitions.resolve_asset_graph()
    nodes = [graph.get(key) for key in sorted(graph.get_all_asset_keys())]
    use_cases = _use_cases(definitions)

    table = Table(title=f"Keel: {window.start} .. {window.end}", title_justify="left")
    table.add_column("layer")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("notes")
    quarantines = {node.tags[QUARANTINE_TAG]: node.key for node in nodes if QUARANTINE_TAG in node.tags}
    for node in nodes:  # the sources' tables, as ingested
        name, ingests = node.key.path[-1], node.tags.get(INGESTS_TAG)
        if ingests == "reference":
            rows = metadata[node.key.to_user_string()]["dagster/row_count"]
            table.add_row("lake", name, f"{rows:,}", "reference table")
        elif ingests == "daily" and FEED_TAG in node.tags:
            m = metadata[node.key.to_user_string()]
            table.add_row("lake", name, f"{m['window_valid_rows']:,}", f"of {m['window_rows_in']:,} rows in")
            quarantine = quarantines[node.tags[FEED_TAG]].path[-1]
            table.add_row(
                "lake", quarantine, f"{m['window_quarantined_rows']:,}", "rows failing the contract"
            )
    warehouse = definitions.resources["warehouse"]
    for node in nodes:  # dbt's marts (staging and intermediate models are steps towards them)
        name = node.key.path[-1]
        if node.group_name == "warehouse" and not name.startswith(("stg_", "int_")):
            table.add_row("warehouse", name, f"{warehouse.row_count(name):,}", "dbt mart")
    for use_case in use_cases:
        features = metadata[f"{use_case}/features"]
        rows = warehouse.row_count(features["table"])
        table.add_row(use_case, features["table"], f"{rows:,}", "features")
        # No scores when the gate refused the first model: nothing is in production to score with.
        if scores := metadata.get(f"{use_case}/scores"):
            table.add_row(
                use_case,
                scores["warehouse_table"],
                f"{warehouse.row_count(scores['warehouse_table']):,}",
                f"scores, {scores['rows_per_second']:,} rows/s, model {scores['model_version']}",
            )
        if online := metadata.get(f"{use_case}/online_features"):
            counts = {k.removesuffix("_rows"): v for k, v in online.items() if k.endswith("_rows")}
            table.add_row(
                use_case,
                "online features",
                f"{sum(counts.values()):,}",
                f"{' and '.join(counts)} at the close of {online['store_holds']}",
            )
    console.print(table)
    for use_case in use_cases:
        _use_case_summary(use_case, metadata, console)
        _serving_summary(use_case, metadata, warehouse, console)
    for node in nodes:
        if QUARANTINE_TAG in node.tags and (reasons := metadata[node.key.to_user_string()]["reasons"]):
            console.print(f"{node.key.path[-1]}, by rule:")
            for rule, count in reasons.items():
                console.print(f"  {count:>5}  {rule}")

    console.print(
        f"Checks: {len(checks) - len(failed_checks)} of {len(checks)} passed"
        + "".join(
            f"\n  [yellow]{c.asset_key.to_user_string()} {c.check_name}: failed ({c.severity.value})[/]"
            for c in failed_checks
        )
    )
    console.print(f"Elapsed: {elapsed:.1f} s (run {run_id[:8]})")
    console.print(
        f"Registry:  {definitions.resources['registry'].lake.uri}/registry   (uv run keel models list)"
    )
    console.print(f"Lake:      {definitions.resources['lake'].uri}")
    console.print(f"Warehouse: {warehouse.path}")
    query = "select * from {{ ref('transactions') }}"
    console.print(f'           cd dbt_project && uv run dbt show --inline "{query}"')
    console.print(
        "UI:        make dev, then open http://127.0.0.1:3000 "
        f"(Lineage: lake -> warehouse -> {', '.join(use_cases)})"
    )


def _use_case_summary(use_case: str, metadata, console: Console) -> None:
    """A use case's challenger against its baseline on its test days, the gate's verdict, and what is
    in production."""
    trained, evaluation = metadata[f"{use_case}/model"], metadata[f"{use_case}/evaluation"]
    names = [name for name in trained if f"baseline_{name}" in trained]
    table = Table(
        title=f"{use_case}: {trained['model_tag']} trained {trained['train_start']} .. "
        f"{trained['train_end']} ({trained['train_rows']:,} rows), tested {trained['test_start']} .. "
        f"{trained['test_end']}",
        title_justify="left",
    )
    table.add_column("model")
    for name in names:
        table.add_column(name, justify="right")
    for label, prefix in (("challenger", ""), ("baseline", "baseline_")):
        table.add_row(label, *(f"{trained[prefix + name]:.4f}" for name in names))
    console.print(table)
    if not trained["full_windows"]:
        console.print(
            f"[yellow]Trained on windows still filling[/]: only {trained['history_days_before_training']} "
            "days of data before the first training day (see the run's warning)"
        )
    if "excluded_known_positive_test_rows" in trained:
        console.print(
            f"Judged as the field judges: {trained['test_rows']:,} test rows, after leaving out "
            f"{trained['excluded_known_positive_test_rows']:,} already known positive before their day"
        )
    if "selection_trials" in trained:
        metric = trained["selection_metric"]
        console.print(
            f"Selected {trained['estimator'].rpartition('.')[2]} (trial {trained['selected_trial']} of "
            f"{trained['selection_trials']}, {metric} {trained[f'validation_{metric}']:.4f} on "
            f"{trained['validated_on']}, fitted on {trained['fitted_on']}; "
            f"{trained['selection_seconds']:.0f} s)"
        )
    console.print(
        f"Training took {trained['training_seconds']:.1f} s. Promotion gate: {evaluation['decision']}"
    )
    if run := trained.get("mlflow_run"):
        console.print(f"MLflow:    {run}   (make mlflow)")
    promoted = metadata.get(f"{use_case}/production_model")
    if promoted and not promoted["promoted"]:
        console.print(f"[bold yellow]Not promoted[/]: {promoted['model_tag']} stays in production")
    elif promoted:
        console.print(
            f"[bold green]In production:[/] {promoted['model_tag']} (replaced {promoted['replaces']}); "
            f"model card: {promoted['model_card_path']}"
        )


def _serving_summary(use_case: str, metadata, warehouse, console: Console) -> None:
    """A served use case's Bento, and a request to try once it is served (the folder's example, or
    for the platform's endpoint the first entity of the day)."""
    from platform_assets.components.plan import Plan
    from platform_assets.components.use_case import declared

    bento, online = metadata.get(f"{use_case}/bento"), metadata.get(f"{use_case}/online_features")
    if not (bento and online):
        return
    spec, references = declared()[use_case]
    plan = Plan.of(spec, references)
    example = plan.serving.example
    if example is None and plan.endpoint is not None:
        key, table, day = plan.endpoint.key, plan.feature_table, spec.day_column

        def example(connection, closed_day):
            (first,) = connection.execute(
                f"select min({key}) from {table} where {day} = ?", [closed_day]
            ).fetchone()
            return "/predict", {key: int(first)}

    console.print(
        f"[bold green]Bento:[/] {bento['bento']} ({'unchanged' if bento['reused'] else 'built'} in "
        f"{bento['build_seconds']:.1f} s); online features of {online['store_holds']} in {online['store']}\n"
        f"Serve:     make serve SERVICE={plan.serving.service}   (then, in another shell)"
    )
    if example is not None:
        with warehouse.connect() as connection:
            route, body = example(connection, date.fromisoformat(online["closed_day"]))
        console.print(
            f"           curl -s -X POST http://127.0.0.1:3000{route} -H 'content-type: application/json' "
            f"-d '{json.dumps(body)}'"
        )
