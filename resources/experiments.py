"""Experiment tracking (MLflow) as a resource: where a use case's trainings and their model-selection
trials are recorded, for the namespace a run writes (``keel_core/tracking.py`` does the recording)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import dagster as dg

from keel_core.tracking import Tracker, TrainingRun


class ExperimentTracking(dg.ConfigurableResource):
    """MLflow: a tracking store (SQLite locally, PostgreSQL deployed) and the namespace's lake for
    artifacts; an experiment per namespace and use case."""

    tracking_uri: str
    artifact_root: str  # the namespace's lake folder for MLflow: <lake>/namespaces/<namespace>/mlflow
    namespace: str
    ui_url: str | None = None  # where people open the UI: the materializations link there

    @contextmanager
    def training(self, use_case: str, run_name: str, tags: Mapping[str, str]) -> Iterator[TrainingRun]:
        tracker = Tracker(self.tracking_uri, self.artifact_root, self.ui_url)
        with tracker.training(self.namespace, use_case, run_name, tags) as run:
            yield run
