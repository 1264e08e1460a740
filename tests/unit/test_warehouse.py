"""The warehouse's tables written by Keel's assets: a window replaced exactly, and a table that gains
a column keeps its history."""

from datetime import date

import pandas as pd
import pytest

from resources.warehouse import Warehouse


def rows(day: str, **columns) -> pd.DataFrame:
    return pd.DataFrame({"day": pd.to_datetime([day]), **{k: [v] for k, v in columns.items()}})


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    return Warehouse(path=str(tmp_path / "warehouse.duckdb"))


def test_rerunning_a_day_replaces_exactly_that_day(warehouse):
    for day, score in (("2026-01-01", 0.1), ("2026-01-02", 0.2), ("2026-01-01", 0.3)):
        warehouse.replace_days(
            "ml.scores", "day", date.fromisoformat(day), date.fromisoformat(day), rows(day, p=score)
        )
    with warehouse.connect() as connection:
        stored = connection.execute(
            "select cast(day as date) as day, p from ml.scores order by day"
        ).fetchall()
    assert stored == [(date(2026, 1, 1), 0.3), (date(2026, 1, 2), 0.2)]


def test_a_new_column_is_added_and_the_older_rows_keep_their_values(warehouse):
    warehouse.replace_days("ml.scores", "day", date(2026, 1, 1), date(2026, 1, 1), rows("2026-01-01", p=0.1))
    warehouse.replace_days(
        "ml.scores", "day", date(2026, 1, 2), date(2026, 1, 2), rows("2026-01-02", is_new=True, p=0.2)
    )
    with warehouse.connect() as connection:
        stored = connection.execute("select p, is_new from ml.scores order by day").fetchall()
    assert stored == [(0.1, None), (0.2, True)]


def test_rows_outside_the_window_are_refused_by_name(warehouse):
    with pytest.raises(ValueError, match="outside 2026-01-02 .. 2026-01-02"):
        warehouse.replace_days(
            "ml.scores", "day", date(2026, 1, 2), date(2026, 1, 2), rows("2026-01-01", p=1.0)
        )
