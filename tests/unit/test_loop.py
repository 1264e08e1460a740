"""keel.loop: sensors and automation ticked in process, as the daemon would, on a tiny code location."""

import dagster as dg
import pytest

from keel.loop import Loop
from platform_assets.automation import follows_upstream

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01")
LANDED: list[str] = []  # the "files" the sensor sees


@dg.asset(partitions_def=DAYS)
def raw(context: dg.AssetExecutionContext) -> None:
    context.log.info(f"ingested {context.partition_key}")


@dg.asset(partitions_def=DAYS, deps=[raw], automation_condition=follows_upstream())
def cleaned() -> None: ...


@dg.asset(partitions_def=DAYS, deps=[cleaned], automation_condition=follows_upstream())
def report() -> None: ...


ingest = dg.define_asset_job("ingest", selection=[raw])


@dg.sensor(job=ingest)
def files(context: dg.SensorEvaluationContext):
    return [dg.RunRequest(run_key=f"file-{day}", partition_key=day) for day in LANDED]


@pytest.fixture
def loop():
    LANDED.clear()
    with dg.instance_for_test() as instance:
        definitions = dg.Definitions(assets=[raw, cleaned, report], jobs=[ingest], sensors=[files])
        lines: list[str] = []
        loop = Loop(definitions, instance, report=lines.append)
        loop.start()
        yield loop, lines


def materialized(loop, asset) -> set[str]:
    return loop.instance.get_materialized_partitions(asset.key)


def test_a_sensor_tick_executes_its_requests_and_a_run_key_runs_once(loop):
    loop, lines = loop
    LANDED.append("2026-01-05")
    (executed,) = loop.tick("files")
    assert executed.result.success and materialized(loop, raw) == {"2026-01-05"}
    assert loop.tick("files") == []
    assert "files: file-2026-01-05 already ran; skipped" in lines


def test_automation_carries_a_new_day_downstream_and_stops_when_nothing_is_left(loop):
    loop, _ = loop
    LANDED.append("2026-01-05")
    loop.tick("files")
    runs = loop.automate()
    assert [r.result.success for r in runs] == [True]  # cleaned and report of the day, in one run
    assert materialized(loop, report) == {"2026-01-05"}
    assert loop.automate() == []  # nothing changed since: nothing requested


def test_automation_must_see_the_world_before_it_changes(loop):
    loop, _ = loop
    fresh = Loop(loop.definitions, loop.instance)
    with pytest.raises(RuntimeError, match="call start"):
        fresh.automate()
