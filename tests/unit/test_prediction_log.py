"""The service's prediction log: off the request path, one file per flush and day, nothing lost."""

import time
import uuid
from datetime import date

import numpy as np
import pandas as pd
import pytest

from keel_core.prediction_log import PredictionLog

WAIT_SECONDS = 120  # a bound on waits for the background thread, never reached unless it is broken


def scored(n: int, day: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prediction_id": [uuid.uuid4().hex for _ in range(n)],
            "transaction_id": range(n),
            "transacted_at": pd.Timestamp(day) + pd.to_timedelta(range(n), unit="min"),
            "fraud_probability": 0.25,
        }
    )


def written(folder) -> pd.DataFrame:
    # Files still being written have a leading underscore: readers skip them, as the asset does.
    files = sorted(f for f in folder.rglob("*.parquet") if not f.name.startswith("_"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_close_writes_every_buffered_row_under_its_days_folder(tmp_path):
    log = PredictionLog(str(tmp_path), flush_seconds=3600)  # only close() writes
    log.append(scored(3, "2026-02-10 23:58"))  # two before midnight, one after
    log.append(scored(2, "2026-02-11 08:00"))
    assert log.pending == 5 and written(tmp_path).empty

    log.close()

    assert log.pending == 0
    assert len(written(tmp_path / "date=2026-02-10")) == 2
    assert len(written(tmp_path / "date=2026-02-11")) == 3
    assert not list(tmp_path.rglob("_*"))  # no half-written file left behind


def test_the_background_thread_writes_without_being_asked(tmp_path):
    log = PredictionLog(str(tmp_path), flush_seconds=0.05)
    log.append(scored(4, "2026-02-10 12:00"))
    try:
        deadline = time.monotonic() + WAIT_SECONDS  # polled: the thread writes when it gets the CPU
        while len(written(tmp_path)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(written(tmp_path)) == 4 and log.pending == 0  # before close() was called
    finally:
        log.close()


def test_rows_that_cannot_be_written_stay_queued_and_the_final_flush_fails_loudly(tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the log's folder should be")
    log = PredictionLog(str(blocked), flush_seconds=3600)
    log.append(scored(3, "2026-02-10 12:00"))

    with pytest.raises(OSError):
        log.flush()
    assert log.pending == 3

    with pytest.raises(OSError):
        log.close()
    assert log.pending == 3


def test_rows_given_as_columns_become_a_frame_with_the_scalars_repeated(tmp_path):
    log = PredictionLog(str(tmp_path), flush_seconds=3600)
    log.append(
        {
            "prediction_id": ["a", "b"],
            "transacted_at": np.array(["2026-02-10T08:00", "2026-02-11T09:00"], dtype="datetime64[ns]"),
            "fraud_probability": np.array([0.1, 0.9]),
            "model_version": "fraud_detector:v1",
            "feature_snapshot_date": date(2026, 2, 9),
            "threshold": 0.5,
            "scored_at": np.datetime64("2026-02-11T09:00:01", "ns"),
        }
    )
    log.append(
        {
            "prediction_id": ["c"],
            "transacted_at": np.array(["2026-02-11T10:00"], dtype="datetime64[ns]"),
            "fraud_probability": np.array([0.5]),
            "model_version": "fraud_detector:v2",
            "feature_snapshot_date": date(2026, 2, 9),
            "threshold": 0.5,
            "scored_at": np.datetime64("2026-02-11T10:00:01", "ns"),
        }
    )
    assert log.pending == 3
    log.close()
    rows = written(tmp_path).sort_values("prediction_id")
    assert rows["model_version"].tolist() == ["fraud_detector:v1"] * 2 + ["fraud_detector:v2"]
    assert rows["fraud_probability"].tolist() == [0.1, 0.9, 0.5]
    assert rows["threshold"].dtype == "float64" and rows["scored_at"].dtype.kind == "M"
    assert rows["feature_snapshot_date"].tolist() == [date(2026, 2, 9)] * 3
    assert {p.parent.name for p in tmp_path.rglob("*.parquet")} == {"date=2026-02-10", "date=2026-02-11"}
