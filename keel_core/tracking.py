"""Experiment records in MLflow: every training, and every trial of its model selection, is a run.

An experiment per namespace and use case (``<namespace>/<use case>``), so that a data scientist's
own trainings sit beside each other and apart from production's. A training is a parent run (its
window, the estimator and parameters it fitted, its test metrics beside the baseline's, the Dagster
run and asset that made it); each selection trial is a child run (the candidate, its parameters, its
validation score). Locally the tracking store is a SQLite file under ``.keel/`` and the artifacts a
folder of the lake; deployed, a PostgreSQL database and the lake's bucket.

Pure module (MLflow's client, imported when a training starts: it takes seconds), no Dagster.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_LENGTH]


@dataclass
class TrainingRun:
    """A training's MLflow run, open while it trains."""

    client: Any
    experiment_id: str
    run_id: str
    url: str | None  # where a person opens it, if the UI's address is known

    def _log(self, run_id: str, metrics: Mapping[str, float] = {}, params: Mapping[str, Any] = {}, tags=None):
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(name, float(value), now, 0) for name, value in metrics.items()],
            params=[Param(name, _text(value)) for name, value in params.items()],
            tags=[RunTag(name, _text(value)) for name, value in (tags or {}).items()],
        )

    def trial(
        self,
        number: int,
        candidate: str,
        params: Mapping[str, Any],
        metric: str,
        score: float,
        seconds: float,
    ):
        """A selection trial, as a child run of the training."""
        child = self.client.create_run(
            self.experiment_id,
            run_name=f"trial {number}: {candidate}",
            tags={"mlflow.parentRunId": self.run_id, "keel.trial": str(number)},
        )
        self._log(
            child.info.run_id,
            {f"validation_{metric}": score, "fit_seconds": seconds},
            {"estimator": candidate, **params},
        )
        self.client.set_terminated(child.info.run_id, "FINISHED")

    def record(self, metrics: Mapping[str, float] = {}, params: Mapping[str, Any] = {}, tags=None) -> None:
        self._log(self.run_id, metrics, params, tags)

    def attach(self, name: str, content: Mapping[str, Any]) -> None:
        """A JSON artifact of the run (in the experiment's artifact location: the lake)."""
        self.client.log_dict(self.run_id, dict(content), name)


@dataclass(frozen=True)
class Tracker:
    tracking_uri: str  # sqlite:////abs/path/mlflow.db, postgresql+psycopg2://...
    artifact_root: str  # the namespace's folder or s3://bucket/prefix: a use case's artifacts below it
    ui_url: str | None = None

    def _client(self):
        from mlflow.tracking import MlflowClient

        # MLflow announces its database migrations at INFO on a store's first use: not news to a user.
        # (After the import: importing MLflow sets its loggers' levels.)
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        return MlflowClient(tracking_uri=self.tracking_uri)

    def experiment_name(self, namespace: str, use_case: str) -> str:
        return f"{namespace}/{use_case}"

    def _experiment(self, client, namespace: str, use_case: str) -> str:
        name = self.experiment_name(namespace, use_case)
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        from mlflow.exceptions import MlflowException

        location = f"{self.artifact_root.rstrip('/')}/{use_case}"
        if "://" not in location:
            location = f"file://{location}"
        try:
            return client.create_experiment(
                name,
                artifact_location=location,
                tags={"keel.namespace": namespace, "keel.use_case": use_case},
            )
        except MlflowException:  # created meanwhile by another run
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    @contextmanager
    def training(
        self, namespace: str, use_case: str, run_name: str, tags: Mapping[str, str]
    ) -> Iterator[TrainingRun]:
        """An MLflow run for one training: FINISHED when the block ends, FAILED if it raises."""
        client = self._client()
        experiment_id = self._experiment(client, namespace, use_case)
        run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
        run_id = run.info.run_id
        url = (
            f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if self.ui_url else None
        )
        try:
            yield TrainingRun(client, experiment_id, run_id, url)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
