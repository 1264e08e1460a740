"""The notebook client and `keel reproduce` on the test world the backfill built (namespace ``test``)."""

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from world_settings import NAMESPACE

from keel import client
from keel_core.settings import Settings
from platform_assets.components import reproduce
from platform_assets.defs.fraud.transaction_features import FEATURE_NAMES
from platform_assets.provenance import DBT_MANIFEST, GIT_COMMIT, LOCKFILE
from tests import fraud

pytestmark = pytest.mark.slow

FRAUD_MODEL = fraud.MODEL
FEATURE_TABLE = "ml.transaction_features"


@pytest.fixture(scope="module")
def keel(backfill, instance):
    assert backfill.success
    return client.Client(Settings(namespace=NAMESPACE), instance.root_directory)


@pytest.fixture(scope="module")
def first_tag(backfill):
    (event,) = [e for e in backfill.get_asset_materialization_events() if e.asset_key == FRAUD_MODEL]
    return event.materialization.metadata["model_tag"].value


def test_assets_lists_every_group_and_where_each_value_is(keel):
    assets = keel.assets().set_index("asset")
    assert set(assets["group"]) == {"lake", "warehouse", "fraud", "terminal_volume"}
    assert assets.loc["lake/raw_transactions", "stored_in"] == "lake: raw_transactions"
    assert assets.loc["fraud/features", "stored_in"] == f"warehouse: {FEATURE_TABLE}"
    assert assets.loc["warehouse/transactions", "stored_in"] == "warehouse: main.transactions"
    assert assets.loc["fraud/model", "stored_in"] == "materialization metadata"
    assert bool(assets.loc["fraud/features", "daily"])


def test_load_gives_a_day_of_a_table_from_the_lake_or_the_warehouse(keel, definitions, world):
    day = world.last_day
    lake = keel.load("lake/raw_transactions", partition=day.isoformat())
    assert len(lake) == len(definitions.resources["lake"].read_partition("raw_transactions", day)) > 0
    features = keel.load("fraud/features", partition=day)
    assert len(features) == len(lake) and set(FEATURE_NAMES) <= set(features.columns)
    assert set(features["transaction_date"].dt.date) == {day}
    assert len(keel.load("lake/customers")) == world.source.n_customers


def test_load_of_an_asset_without_a_table_is_what_its_materialization_recorded(keel, first_tag):
    recorded = keel.load("fraud/model")
    assert recorded["model_tag"].startswith("fraud_detector:")
    assert 0.5 < recorded["roc_auc"] <= 1
    # ... and every materialization says which code, lockfile and dbt manifest made it
    for name in (GIT_COMMIT, LOCKFILE, DBT_MANIFEST):
        assert recorded[name], name
    # ... and Dagster records the data version of each input it was computed from
    inputs = keel.materialization("fraud/model").tags
    assert any(tag.startswith("dagster/input_data_version/fraud/features") for tag in inputs), inputs


def test_load_names_what_is_wrong_with_a_request(keel):
    with pytest.raises(client.ClientError, match="no asset 'lake/nothing'"):
        keel.load("lake/nothing")
    with pytest.raises(client.ClientError, match="is daily: give partition"):
        keel.load("fraud/features")
    with pytest.raises(client.ClientError, match="'yesterday'"):
        keel.load("fraud/features", partition="yesterday")


def test_models_lists_versions_with_stages_and_the_production_model_loads_and_scores(keel, world):
    models = keel.models("fraud_detector")
    assert "production" in set(models["stage"])
    assert models["roc_auc"].between(0.5, 1).all()
    assert {"fraud_detector", "terminal_volume"} <= set(keel.models()["model"])  # every use case's
    with pytest.raises(client.ClientError, match="give model="):
        keel.load_model(stage="production")
    model = keel.load_model(stage="production", model="fraud_detector")
    rows = keel.load("fraud/features", partition=world.last_day)
    probabilities = model.predict_proba(rows[FEATURE_NAMES])[:, 1]
    assert len(probabilities) == len(rows) and ((probabilities >= 0) & (probabilities <= 1)).all()
    with pytest.raises(client.ClientError, match="give either"):
        keel.load_model()


def test_run_gives_status_tags_timing_and_what_the_run_materialized(keel, backfill):
    run = keel.run(backfill.run_id)
    assert run.status == "SUCCESS" and run.job == "keel_pipeline"
    assert run.tags["dagster/asset_partition_range_start"]
    assert run.started is not None and run.ended >= run.started  # a finished run has both times
    assert {"lake/raw_transactions", "fraud/features", "fraud/model"} <= {
        m.asset for m in run.materializations
    }
    with pytest.raises(client.ClientError, match="no run nope"):
        keel.run("nope")


def test_a_model_trained_again_from_its_record_has_the_same_metrics(definitions, first_tag):
    version = definitions.resources["registry"].of_tag(first_tag).version(first_tag)
    with definitions.resources["warehouse"].connect() as connection:
        result = reproduce.reproduce(fraud.plan(), first_tag, version.record, connection)
    assert result.reproduced == result.recorded  # exactly: same rows, seed and library versions
    assert result.reproduced_exactly, result.differences


def test_reproduce_names_the_data_that_changed_since_training(definitions, first_tag, tmp_path):
    version = definitions.resources["registry"].of_tag(first_tag).version(first_tag)
    copy = tmp_path / "changed.duckdb"
    shutil.copy(definitions.resources["warehouse"].path, copy)
    first_test_day = version.record.training_window.test_start
    with duckdb.connect(str(copy)) as connection:
        # One payment of the test week re-labelled: the rows differ, and so may the metrics.
        connection.execute(
            f"update fraud_labels set is_fraud = not is_fraud where transaction_id = "
            f"(select min(transaction_id) from {FEATURE_TABLE} where transaction_date = ?)",
            [first_test_day],
        )
        result = reproduce.reproduce(fraud.plan(), first_tag, version.record, connection)
    assert not result.reproduced_exactly
    assert any(d.startswith("data: the test rows") for d in result.differences), result.differences


def test_keel_reproduce_prints_the_comparison_and_exits_0_when_reproduced(definitions, first_tag, keel_state):
    import os

    keel_command = Path(sys.executable).with_name("keel")
    done = subprocess.run(
        [keel_command, "--namespace", NAMESPACE, "reproduce", first_tag],
        env={**os.environ, "DAGSTER_HOME": str(keel_state / "unused_dagster_home")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{first_tag} reproduced: same data, same metrics." in done.stdout
    assert "roc_auc" in done.stdout


def test_reproduce_reads_the_ducklake_snapshot_it_was_trained_at_and_names_a_later_change(
    definitions, first_tag, tmp_path
):
    """The test world's warehouse copied into a DuckLake, the version's record pointing at that
    snapshot; then a day of features re-ingested with one row changed. Read at the snapshot, the
    version reproduces exactly; read now, the changed row is named."""
    from datetime import date

    from keel_core.warehouse_engine import WarehouseLocation
    from resources.warehouse import Warehouse

    lake = Warehouse.at(
        WarehouseLocation(catalog=str(tmp_path / "catalog.ducklake"), data_path=str(tmp_path / "data"))
    )
    with lake.connect(read_only=False) as connection:
        connection.execute(f"attach '{definitions.resources['warehouse'].path}' as source (read_only)")
        tables = connection.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = 'source'"
        ).fetchall()
        for schema, table in tables:
            connection.execute(f"create schema if not exists {schema}")
            connection.execute(f"create table {schema}.{table} as select * from source.{schema}.{table}")
    version = definitions.resources["registry"].of_tag(first_tag).version(first_tag)
    record = version.record.model_copy(update={"warehouse_snapshot": lake.snapshot()})

    day: date = record.training_window.test_start
    with lake.connect() as connection:
        rows = connection.execute(f"select * from {FEATURE_TABLE} where transaction_date = ?", [day]).df()
    changed = rows["transaction_id"].min()
    rows.loc[rows["transaction_id"] == changed, "amount"] += 1.0  # re-ingested, one amount corrected
    lake.replace_days(FEATURE_TABLE, "transaction_date", day, day, rows)

    with lake.connect(snapshot=record.warehouse_snapshot) as connection:
        as_trained = reproduce.reproduce(fraud.plan(), first_tag, record, connection)
    assert as_trained.reproduced == as_trained.recorded
    assert as_trained.reproduced_exactly, as_trained.differences

    with lake.connect() as connection:
        now = reproduce.reproduce(fraud.plan(), first_tag, record, connection)
    assert not now.reproduced_exactly
    named = [d for d in now.differences if FEATURE_TABLE in d]
    assert named and f"transaction_id {changed}" in named[0], now.differences
    assert "1 rows as they were are gone or changed, 1 rows are new or changed" in named[0]
