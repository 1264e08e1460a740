"""A second use case, built only from its folder (platform_assets/defs/terminal_volume/): a regression
at terminal-day grain goes through the same lifecycle as the reference use case, in the main job."""

import dagster as dg
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

USE_CASE = "terminal_volume"


def metadata(run, asset: str) -> dict:
    key = dg.AssetKey([USE_CASE, asset])
    (event,) = [e for e in run.get_asset_materialization_events() if e.asset_key == key]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def test_the_forecast_is_trained_judged_against_the_seasonal_naive_baseline_and_promoted(
    backfill, definitions
):
    assert backfill.success
    trained = metadata(backfill, "model")
    # Tomorrow's payments at a terminal: the model beats "the same weekday last week".
    assert trained["mae"] < trained["baseline_mae"]
    assert trained["test_start"] > trained["train_end"]  # time-based, with the one-day label delay as a gap
    judged = metadata(backfill, "evaluation")
    assert judged["challenger"] == trained["model_tag"] and judged["approved"] is True
    promoted = metadata(backfill, "production_model")
    assert promoted["promoted"] is True and promoted["model_tag"] == trained["model_tag"]
    registry = definitions.resources["registry"].of(USE_CASE)
    assert registry.champion().tag == trained["model_tag"]
    card = registry.card(trained["model_tag"])
    assert "Next-day payment volume per terminal" in card and "| MAE |" in card


def test_every_terminal_gets_a_forecast_for_every_day(backfill, definitions, world):
    with definitions.resources["warehouse"].connect() as connection:
        per_day = connection.execute(
            f"select as_of_date, count(*), count(distinct model_version), min(prediction) "
            f"from ml.{USE_CASE}_scores group by all order by all"
        ).fetchall()
    assert [pd.Timestamp(day).date() for day, *_ in per_day] == world.days
    assert {count for _, count, _, _ in per_day} == {world.source.n_terminals}
    assert {versions for _, _, versions, _ in per_day} == {1}
    assert min(low for *_, low in per_day) >= 0  # a Poisson model never forecasts fewer than no payments
