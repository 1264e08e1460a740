"""Experiment records (keel_core.tracking): a training and its trials as MLflow runs, in SQLite as
locally and in PostgreSQL as deployed."""

import uuid
from contextlib import closing

import pytest

from keel_core.tracking import Tracker


def admin(server: dict):
    import psycopg2

    connection = psycopg2.connect(
        host=server["host"], port=server["port"], user=server["user"], dbname="postgres"
    )
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    return connection


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def tracker(request, tmp_path):
    artifacts = str(tmp_path / "lake" / "namespaces" / "alice" / "mlflow")
    if request.param == "sqlite":
        yield Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifacts, "http://127.0.0.1:5000")
        return
    server = request.getfixturevalue("postgres_server")
    name = f"keel_mlflow_{uuid.uuid4().hex[:12]}"
    with closing(admin(server)) as connection, connection.cursor() as cursor:
        cursor.execute(f'create database "{name}"')
    try:
        yield Tracker(
            f"postgresql+psycopg2://{server['user']}@{server['host']}:{server['port']}/{name}", artifacts
        )
    finally:
        with closing(admin(server)) as connection, connection.cursor() as cursor:
            cursor.execute(f'drop database if exists "{name}" with (force)')


def runs_of(tracker: Tracker, namespace: str, use_case: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    experiment = client.get_experiment_by_name(f"{namespace}/{use_case}")
    return experiment, client.search_runs([experiment.experiment_id])


def test_a_training_is_a_run_and_each_trial_a_child_run_of_it(tracker):
    with tracker.training(
        "alice", "fraud", "fraud_detector (run 1234abcd)", {"dagster.run_id": "1234abcd"}
    ) as run:
        run.trial(0, "HistGradientBoostingClassifier", {"max_depth": 3}, "average_precision", 0.61, 1.5)
        run.trial(
            1,
            "RandomForestClassifier",
            {"max_depth": 10, "class_weight": None},
            "average_precision",
            0.67,
            2.0,
        )
        run.record(
            {"average_precision": 0.7, "baseline_average_precision": 0.6},
            {"estimator": "x"},
            {"keel.model_tag": "t:1"},
        )
        run.attach("selection.json", {"trials": 2})

    experiment, runs = runs_of(tracker, "alice", "fraud")
    assert experiment.tags["keel.namespace"] == "alice" and experiment.artifact_location.endswith(
        "alice/mlflow/fraud"
    )
    (parent,) = [r for r in runs if r.info.run_id == run.run_id]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.run_id]
    assert parent.info.status == "FINISHED" and parent.data.metrics["average_precision"] == 0.7
    assert parent.data.tags["dagster.run_id"] == "1234abcd" and parent.data.tags["keel.model_tag"] == "t:1"
    assert sorted(c.data.metrics["validation_average_precision"] for c in children) == [0.61, 0.67]
    assert {c.data.params["estimator"] for c in children} == {
        "HistGradientBoostingClassifier",
        "RandomForestClassifier",
    }
    assert all(c.info.status == "FINISHED" for c in children)
    if tracker.ui_url:
        assert run.url == f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/{run.run_id}"


def test_a_training_that_fails_leaves_a_failed_run(tracker):
    with pytest.raises(RuntimeError, match="boom"), tracker.training("alice", "fraud", "failing", {}) as run:
        raise RuntimeError("boom")
    _, runs = runs_of(tracker, "alice", "fraud")
    assert [r.info.status for r in runs if r.info.run_id == run.run_id] == ["FAILED"]


def test_namespaces_have_their_own_experiments(tracker):
    for namespace in ("alice", "prod"):
        with tracker.training(namespace, "fraud", "a training", {}):
            pass
    alice, alice_runs = runs_of(tracker, "alice", "fraud")
    prod, prod_runs = runs_of(tracker, "prod", "fraud")
    assert alice.experiment_id != prod.experiment_id and len(alice_runs) == len(prod_runs) == 1
