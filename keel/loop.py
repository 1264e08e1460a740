"""Keel's automation, one tick at a time in this process: what the Dagster daemon does, made visible.

The daemon ticks each sensor and the automation sensor on its own clock and launches what they
request in separate processes. ``Loop`` does the same work in order, in this process: tick a sensor
(with its cursor), execute its run requests (skipping run keys that already ran, as the daemon
does), evaluate the automation conditions, execute what they request, until nothing more is asked.
``keel demo-drift`` uses it to show the loop end to end; the definitions it runs are the daemon's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

SENSOR_TAG, RUN_KEY_TAG = "dagster/sensor_name", "dagster/run_key"


@dataclass
class Executed:
    """A run this loop executed: what asked for it, and its result."""

    requested_by: str
    label: str
    result: dg.ExecuteInProcessResult


@dataclass
class Loop:
    definitions: dg.Definitions
    instance: dg.DagsterInstance
    report: Callable[[str], None] = print
    cursors: dict[str, str | None] = field(default_factory=dict)
    _automation_cursor: object = None

    def tick(self, sensor_name: str) -> list[Executed]:
        """Evaluate one sensor once and execute the runs it requests."""
        sensor = self.definitions.resolve_sensor_def(sensor_name)
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(sensor_name),
            definitions=self.definitions,
            resources=self.definitions.resources,
        ) as context:
            data = sensor.evaluate_tick(context)
        self.cursors[sensor_name] = data.cursor
        if not data.run_requests:
            self.report(f"{sensor_name}: {data.skip_message or 'nothing requested'}")
        executed = []
        for request in data.run_requests:
            if request.run_key and self._already_ran(sensor_name, request.run_key):
                self.report(f"{sensor_name}: {request.run_key} already ran; skipped")
                continue
            job_name = request.job_name or sensor.job_name
            label = f"{job_name} {request.partition_key or ''}".strip()
            executed.append(
                Executed(
                    sensor_name,
                    label,
                    self._execute(
                        job_name,
                        request.asset_selection,
                        request.partition_key,
                        {**request.tags, SENSOR_TAG: sensor_name, RUN_KEY_TAG: request.run_key or ""},
                    ),
                )
            )
        return executed

    def start(self) -> None:
        """A first automation evaluation, with nothing executed: conditions react to updates since the
        previous evaluation, and a running daemon has always evaluated before the next file lands."""
        self._automation_cursor = dg.evaluate_automation_conditions(
            defs=self.definitions, instance=self.instance
        ).cursor

    def automate(self, max_ticks: int = 10) -> list[Executed]:
        """Evaluate the automation conditions and execute what they request, until they request nothing."""
        if self._automation_cursor is None:
            raise RuntimeError("call start() before anything lands: automation reacts to what changed since")
        executed = []
        for _ in range(max_ticks):
            evaluation = dg.evaluate_automation_conditions(
                defs=self.definitions, instance=self.instance, cursor=self._automation_cursor
            )
            self._automation_cursor = evaluation.cursor
            by_partition: dict[str | None, list[dg.AssetKey]] = defaultdict(list)
            for key in self.definitions.resolve_asset_graph().get_all_asset_keys():
                for partition in evaluation.get_requested_partitions(key):
                    by_partition[partition].append(key)
            if not by_partition:
                return executed
            for partition, keys in sorted(by_partition.items(), key=lambda item: item[0] or ""):
                label = f"{len(keys)} assets {partition or ''}".strip()
                executed.append(Executed("automation", label, self._execute(None, keys, partition, {})))
        raise RuntimeError(f"automation still requesting after {max_ticks} ticks: a condition loops")

    def _already_ran(self, sensor_name: str, run_key: str) -> bool:
        runs = self.instance.get_runs(
            filters=dg.RunsFilter(tags={SENSOR_TAG: sensor_name, RUN_KEY_TAG: run_key}), limit=1
        )
        return bool(runs)

    def _execute(self, job_name, asset_selection, partition_key, tags) -> dg.ExecuteInProcessResult:
        job = (
            self.definitions.resolve_job_def(job_name)
            if job_name
            else self.definitions.resolve_implicit_global_asset_job_def()
        )
        result = job.execute_in_process(
            instance=self.instance,
            asset_selection=list(asset_selection) if asset_selection else None,
            partition_key=partition_key,
            tags=tags,
            raise_on_error=False,
            # Step logs stay in the run (the UI); this process reports one line per run.
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
        self.report(
            f"  {'ran' if result.success else 'FAILED'}: {job.name}"
            f"{' ' + partition_key if partition_key else ''} "
            f"({', '.join(sorted(k.to_user_string() for k in asset_selection or []))[:200]})"
        )
        return result
