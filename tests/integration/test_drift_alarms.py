"""Drift alarms ring for drift only: on the default world, warm (the demo's training, every row with
its 30 days of history), fraud's drift check passes on each of the 28 undrifted days after the
training window, and fails (ERROR) on both drifted days `keel demo-drift` lands.

The world is built in a process of its own (``warm_world.py``: the world's size and calendar are
settings, read once per process): about two minutes on a quiet two-core machine."""

import json
import os
import shutil
import subprocess
import sys
from datetime import date, timedelta

import pytest
import warm_world

from resources.dbt import REPO_ROOT
from tests import fraud

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("warm_world")
    (root / "dagster").mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "local" / "dagster.yaml", root / "dagster" / "dagster.yaml")
    first = date.fromisoformat(os.environ["KEEL_CALENDAR_START"])  # the test worlds' (tests/conftest.py)
    days = warm_world.TRAIN_FROM + warm_world.TRAIN_DAYS + warm_world.UNDRIFTED_DAYS + warm_world.DRIFTED_DAYS
    env = {
        **os.environ,
        # The default world: the simulator's own size and seed (nothing set), the tests' calendar.
        "DAGSTER_HOME": str(root / "dagster"),
        "KEEL_NAMESPACE": "warm",
        "KEEL_LAKE_ROOT": str(root / "lake"),
        "KEEL_WAREHOUSE_DIR": str(root / "warehouse"),
        "KEEL_ONLINE_STORE_URL": f"sqlite:///{root / 'online.sqlite'}",
        "KEEL_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "KEEL_CALENDAR_END": (first + timedelta(days=days - 1)).isoformat(),
        "BENTOML_HOME": str(root / "bentoml"),
    }
    report = root / "report.json"
    built = subprocess.run(
        [sys.executable, warm_world.__file__, str(report)], env=env, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return json.loads(report.read_text())


def test_training_sees_full_windows(verdicts):
    first, train_start = (date.fromisoformat(verdicts[day]) for day in ("first_day", "train_start"))
    assert (train_start - first).days >= fraud.plan().history_days == 30


def test_no_alarm_on_28_undrifted_days(verdicts):
    undrifted = [v for v in verdicts["verdicts"] if not v["drifted_world"]]
    assert len(undrifted) == 28
    alarms = [(v["day"], v["severity"], v["drifted_features"]) for v in undrifted if not v["passed"]]
    assert alarms == []


def test_both_drifted_days_fail(verdicts):
    drifted = [v for v in verdicts["verdicts"] if v["drifted_world"]]
    assert len(drifted) == 2
    assert [(v["passed"], v["severity"]) for v in drifted] == [(False, "ERROR")] * 2
    assert all("amount" in v["drifted_features"] for v in drifted)  # amounts scaled by 3


def test_every_compared_feature_has_a_numeric_score(verdicts):
    names = set(fraud.plan().drift_columns.names)
    for v in verdicts["verdicts"]:
        assert set(v["scores"]) == names
        assert all(isinstance(score, float) for score in v["scores"].values())
