"""`keel demo`, the command behind `make demo`, on a short window in a temporary folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_demo_runs_the_main_job_and_prints_rows_per_layer_quarantine_and_checks(tmp_path):
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "KEEL_LAKE_ROOT": str(tmp_path / "lake"),
        "KEEL_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
    }
    (tmp_path / "dagster_home").mkdir()
    keel = Path(sys.executable).with_name("keel")
    demo = subprocess.run([keel, "demo", "--days", "8"], env=env, capture_output=True, text=True)

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert "[6/6]" in out  # every step reported as it finished
    for table in ("raw_transactions", "quarantined_transactions", "terminal_daily_fraud_reports"):
        assert table in out
    assert "by rule:" in out  # 3 malformed rows a day by default, each with its rule
    assert "Checks: " in out and "failed" not in out
    assert str(tmp_path / "lake") in out
    assert (tmp_path / "lake" / "raw_transactions" / "date=2026-01-08" / "data.parquet").exists()


def test_the_demo_refuses_a_window_without_days():
    keel = Path(sys.executable).with_name("keel")
    refused = subprocess.run([keel, "demo", "--days", "0"], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "--days must be at least 1" in refused.stderr
