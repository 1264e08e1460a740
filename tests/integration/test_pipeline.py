"""The main job end to end: source -> lake (contract, quarantine) -> dbt warehouse."""

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from world_settings import NAMESPACE

from platform_assets.components.source import QUARANTINE_SHARE_WARNING
from platform_assets.defs.payments.simulator import LABEL_DELAY_DAYS, MALFORMED_KINDS, simulate_day
from resources.dbt import dbt_project

pytestmark = pytest.mark.slow


def counts_by_day(warehouse, table: str, day_column: str) -> dict[date, int]:
    with warehouse.connect() as connection:
        rows = connection.execute(
            f"select {day_column}, count(*) from {table} group by all order by all"
        ).fetchall()
    return dict(rows)


def test_a_backfill_builds_every_day_of_lake_and_warehouse_in_one_run_with_one_dbt_call_per_dbt_asset(
    backfill, instance, world
):
    assert backfill.success
    for key in (["lake", "raw_transactions"], ["warehouse", "transactions"], ["warehouse", "fraud_labels"]):
        materialized = {
            e.partition for e in backfill.get_asset_materialization_events() if e.asset_key.path == key
        }
        assert materialized == {d.isoformat() for d in world.days}, key
    dbt_commands = [
        record.user_message
        for record in instance.all_logs(backfill.run_id)
        if record.user_message.startswith("Finished dbt command")
    ]
    assert len(dbt_commands) == 2  # the unpartitioned models, and every day of the daily ones at once
    # The window goes to dbt in the environment: a change of --vars would make dbt parse everything again.
    assert not any("--vars" in command for command in dbt_commands)
    window = f"dbt builds the days {world.first_day} to {world.last_day}"
    assert sum(record.user_message.startswith(window) for record in instance.all_logs(backfill.run_id)) == 1


def _checks(run):
    return [e.event_specific_data for e in run.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def test_every_blocking_check_passes_including_the_dbt_tests_and_the_row_reconciliation(backfill):
    checks = _checks(backfill)
    assert [c.check_name for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR] == []
    names = {c.check_name for c in checks}
    assert "rows_reconcile" in names
    assert any(name.startswith("unique_") for name in names)  # dbt data tests arrive as checks
    assert len(checks) > 20


def test_the_quarantine_warning_fires_exactly_when_a_day_quarantines_more_than_one_percent(
    backfill, definitions, world
):
    lake = definitions.resources["lake"]
    shares = [
        len(lake.read_partition("quarantined_transactions", day))
        / len(simulate_day(world.source.simulation(), day).transactions)
        for day in world.days
    ]
    (warning,) = [
        c
        for c in _checks(backfill)
        if c.check_name == "quarantine_share_is_small" and c.asset_key.path == ["lake", "raw_transactions"]
    ]
    assert warning.severity == dg.AssetCheckSeverity.WARN
    assert warning.passed == (max(shares) <= QUARANTINE_SHARE_WARNING)
    assert warning.metadata["worst_share"].value == pytest.approx(max(shares))


def test_every_injected_bad_row_is_in_quarantine_with_its_reason_and_the_counts_add_up(
    backfill, definitions, world
):
    lake = definitions.resources["lake"]
    for day in world.days:
        simulated = simulate_day(world.source.simulation(), day)
        quarantined = lake.read_partition("quarantined_transactions", day).set_index("source_row")
        valid = lake.read_partition("raw_transactions", day)
        assert len(valid) + len(quarantined) == len(simulated.transactions)
        assert set(quarantined.index) == set(simulated.malformed["source_row"])
        for row in simulated.malformed.itertuples():
            assert quarantined.loc[row.source_row, "reason"].startswith(f"{MALFORMED_KINDS[row.kind]}: "), row


def test_the_warehouse_holds_exactly_the_valid_lake_rows(backfill, definitions, world):
    lake, warehouse = definitions.resources["lake"], definitions.resources["warehouse"]
    lake_rows = {day: len(lake.read_partition("raw_transactions", day)) for day in world.days}
    assert counts_by_day(warehouse, "transactions", "transaction_date") == lake_rows
    with warehouse.connect() as connection:
        activity = connection.execute(
            "select sum(transaction_count) from customer_daily_activity"
        ).fetchone()[0]
    assert activity == sum(lake_rows.values())


def test_fraud_labels_arrive_only_after_the_label_delay(backfill, definitions, world):
    warehouse = definitions.resources["warehouse"]
    with warehouse.connect() as connection:
        first_reported, delays = connection.execute(
            "select min(reported_date), list(distinct label_delay_days) from fraud_labels"
        ).fetchone()
        leaks = connection.execute(
            "select count(*) from fraud_labels where reported_date < transaction_date + 7"
        ).fetchone()[0]
    assert first_reported == world.first_day + timedelta(days=LABEL_DELAY_DAYS)
    assert delays == [LABEL_DELAY_DAYS]
    assert leaks == 0


def test_rematerializing_a_day_leaves_every_count_the_same(backfill, definitions, instance, world):
    lake, warehouse = definitions.resources["lake"], definitions.resources["warehouse"]
    day = date(2026, 1, 8)  # a day with transactions and with flags
    tables = {
        "transactions": "transaction_date",
        "fraud_labels": "reported_date",
        "customer_daily_activity": "activity_date",
        "terminal_daily_activity": "activity_date",
        "terminal_daily_fraud_reports": "reported_date",
        "ml.transaction_features": "transaction_date",
    }
    before = {table: counts_by_day(warehouse, table, column) for table, column in tables.items()}
    lake_before = lake.read_partition("raw_transactions", day)
    data_layers = dg.AssetSelection.groups("lake", "warehouse") | dg.AssetSelection.assets(
        ["fraud", "features"]
    )

    again = definitions.resolve_job_def("keel_pipeline").execute_in_process(
        instance=instance,
        partition_key=day.isoformat(),
        asset_selection=list(data_layers.resolve(definitions.resolve_asset_graph())),
    )

    assert again.success
    assert {table: counts_by_day(warehouse, table, column) for table, column in tables.items()} == before
    pd.testing.assert_frame_equal(lake.read_partition("raw_transactions", day), lake_before)


def test_a_days_dbt_run_replaces_that_day_and_leaves_every_other_day_alone(backfill, definitions, instance):
    """The day reaches dbt's incremental models through KEEL_MIN_DATE/KEEL_MAX_DATE: a stray row on
    the run's day is deleted with the day, one on the next day is not touched."""
    from platform_assets.defs.warehouse.assets import warehouse_daily_models

    warehouse = definitions.resources["warehouse"]
    day, next_day = date(2026, 1, 9), date(2026, 1, 10)
    stray = {day: -1, next_day: -2}  # transaction ids no payment has
    with warehouse.connect(read_only=False) as connection:
        for when, transaction_id in stray.items():
            connection.execute(
                "insert into transactions select ? as transaction_id, * exclude (transaction_id) "
                "from transactions where transaction_date = ? limit 1",
                [transaction_id, when],
            )
    try:
        run = definitions.resolve_job_def("keel_pipeline").execute_in_process(
            instance=instance,
            partition_key=day.isoformat(),
            asset_selection=list(warehouse_daily_models.keys),
        )
        with warehouse.connect() as connection:
            left = connection.execute(
                "select transaction_id from transactions where transaction_id < 0"
            ).fetchall()
    finally:
        with warehouse.connect(read_only=False) as connection:
            connection.execute("delete from transactions where transaction_id < 0")  # as the world was

    assert run.success
    assert left == [(stray[next_day],)]


def test_dbt_build_works_standalone_from_the_dbt_project_folder(backfill, keel_state, tmp_path):
    """What an analyst does: `cd dbt_project && dbt build`, no Dagster, a fresh warehouse file."""
    warehouse_file = tmp_path / f"{NAMESPACE}.duckdb"
    env = {
        **os.environ,
        "KEEL_NAMESPACE": NAMESPACE,
        "KEEL_LAKE_ROOT": str(keel_state / "lake"),
        "KEEL_WAREHOUSE_DIR": str(tmp_path),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
    }
    dbt = Path(sys.executable).with_name("dbt")
    build = subprocess.run(
        [dbt, "build"], cwd=dbt_project.project_dir, env=env, capture_output=True, text=True
    )

    assert build.returncode == 0, build.stdout[-3000:]
    assert "ERROR=0" in build.stdout
    import duckdb

    with duckdb.connect(str(warehouse_file), read_only=True) as connection:
        analyst_rows = connection.execute("select count(*) from transactions").fetchone()[0]
    with duckdb.connect(str(keel_state / "warehouse" / f"{NAMESPACE}.duckdb"), read_only=True) as connection:
        dagster_rows = connection.execute("select count(*) from transactions").fetchone()[0]
    assert analyst_rows == dagster_rows > 0
