"""keel.UseCase on its own: the scaffolded template, on a small synthetic warehouse, through the whole
lifecycle it generates (features -> model -> evaluation -> production model -> scores -> drift and live
performance). No dbt."""

import importlib.util
from datetime import date, timedelta

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from keel_core.online_store import open_store
from platform_assets.components.scaffold import write_use_case
from platform_assets.components.use_case import UseCase, lifecycle
from resources.lake import LocalLake
from resources.namespace import Namespace
from resources.online_store import OnlineFeatureStore
from resources.registry import ModelRegistry
from resources.warehouse import Warehouse

FIRST, DAYS, CUSTOMERS = date(2026, 1, 1), 40, 400


def synthetic_warehouse(path) -> None:
    """Customers who pay on a day with their own probability: what the template's question needs."""
    rng = np.random.default_rng(7)
    rates = rng.uniform(0.05, 0.9, CUSTOMERS)
    rows = [
        (customer, FIRST + timedelta(days=day), int(rng.integers(1, 4)), float(rng.uniform(5, 100)))
        for day in range(DAYS)
        for customer in range(CUSTOMERS)
        if rng.random() < rates[customer]
    ]
    activity = pd.DataFrame(rows, columns=["customer_id", "activity_date", "transaction_count", "amount_sum"])
    with duckdb.connect(str(path)) as connection:
        connection.execute(f"create table customers as select range as customer_id from range({CUSTOMERS})")
        connection.register("activity", activity)
        connection.execute("create table customer_daily_activity as select * from activity")


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("defs") / "pays_tomorrow"
    write_use_case(folder, "pays_tomorrow")
    spec = UseCase.model_validate(yaml.safe_load((folder / "defs.yaml").read_text())["attributes"])
    module_spec = importlib.util.spec_from_file_location("pays_tomorrow_features", folder / "features.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return folder, spec, module


def test_a_scaffold_refuses_to_overwrite_a_folder_and_a_name_that_cannot_name_tables(scaffolded, tmp_path):
    folder, _, _ = scaffolded
    with pytest.raises(FileExistsError, match="already has defs.yaml"):
        write_use_case(folder, "pays_tomorrow")
    with pytest.raises(ValueError, match="lowercase"):
        write_use_case(tmp_path / "x", "Churn-Model")


def test_the_scaffolded_use_case_goes_through_the_whole_lifecycle(scaffolded, tmp_path):
    _, spec, module = scaffolded
    warehouse = tmp_path / "warehouse.duckdb"
    synthetic_warehouse(warehouse)
    lake = LocalLake(root=str(tmp_path / "lake"))
    resources = {
        "warehouse": Warehouse(path=str(warehouse)),
        "lake": lake,
        "registry": ModelRegistry(lake=lake),
        "online_store": OnlineFeatureStore(url=f"sqlite:///{tmp_path / 'online.sqlite'}", namespace="test"),
        "namespace": Namespace(name="test", environment="local"),
    }
    assets = lifecycle(spec, module.features, module.labels).assets
    last = FIRST + timedelta(days=DAYS - 1)
    with dg.instance_for_test() as instance:
        built = dg.materialize(
            assets,
            selection=[dg.AssetKey(["pays_tomorrow", "features"])],
            resources=resources,
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": FIRST.isoformat(),
                "dagster/asset_partition_range_end": last.isoformat(),
            },
        )
        assert built.success
        trained = dg.materialize(
            assets,
            selection=[
                dg.AssetKey(["pays_tomorrow", step]) for step in ("model", "evaluation", "production_model")
            ],
            resources=resources,
            instance=instance,
        )
        assert trained.success
        scored = dg.materialize(
            assets,
            selection=[dg.AssetKey(["pays_tomorrow", "scores"])],
            resources=resources,
            instance=instance,
            partition_key=last.isoformat(),
        )
        assert scored.success
        yesterday = last - timedelta(days=1)

        def materialize(step: str, day: date):
            return dg.materialize(
                assets,
                selection=[dg.AssetKey(["pays_tomorrow", step])],
                resources=resources,
                instance=instance,
                partition_key=day.isoformat(),
            )

        # Live performance judges a day's scores: none were made for the day before the last yet.
        with pytest.raises(dg.Failure, match=f"no scores for {yesterday}"):
            materialize("live_performance", yesterday)
        assert materialize("scores", yesterday).success
        assert materialize("online_features", last).success
        monitored = {
            "drift": materialize("drift", last),
            "live_performance": materialize("live_performance", yesterday),
        }
    for step, check in (
        ("drift", "features_have_not_drifted"),
        ("live_performance", "performance_within_limits"),
    ):
        (evaluation,) = monitored[step].get_asset_check_evaluations()
        assert evaluation.check_name == check, evaluation
    performance = monitored["live_performance"]
    assert performance.get_asset_check_evaluations()[0].passed
    judged = performance.get_asset_materialization_events()[0].materialization.metadata
    assert judged["roc_auc"].value > 0.6 and judged["labelled_rows"].value > CUSTOMERS / 2
    # The synthetic world starts on its first day: on its last day the 28-day windows are fuller than
    # in the training days, and drift says so; a day's own payments are the same world.
    drift = monitored["drift"].get_asset_materialization_events()[0].materialization.metadata
    assert "payments_1d" not in drift["drifted_features"].value
    assert "payments_28d" in drift["drifted_features"].value
    report = f"monitoring/pays_tomorrow_drift_reports/date={last.isoformat()}/drift.html"
    assert lake.read_file(report).lstrip().startswith(b"<!DOCTYPE html>")
    # Served online: the last day's rows, by customer, under the view the model version records.
    endpoint = ModelRegistry(lake=lake).of("pays_tomorrow").versions()[-1].record.served_endpoint()
    store = open_store(resources["online_store"].url, "test", endpoint.view())
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        (known,) = connection.execute(
            "select min(customer_id) from ml.pays_tomorrow_features where as_of_date = ?", [last]
        ).fetchone()
    found = store.lookup({"customer": [known, 10**9]})
    store.close()
    assert found.snapshot.closed_day == last and found.snapshot.rows["customer"] > CUSTOMERS / 2
    assert not pd.isna(found.values[0]).any() and pd.isna(found.values[1]).all()
    events = {
        e.asset_key.path[-1]: e.materialization.metadata for e in trained.get_asset_materialization_events()
    }
    model = events["model"]
    assert model["roc_auc"].value > 0.6
    assert events["evaluation"]["challenger"].value == model["model_tag"].value
    assert events["production_model"]["promoted"].value is True
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        rows = connection.execute(
            "select count(*), min(prediction), max(prediction) from ml.pays_tomorrow_scores"
        ).fetchone()
    assert rows[0] == 2 * CUSTOMERS and 0 <= rows[1] <= rows[2] <= 1


def test_the_spec_is_checked_before_any_asset_exists(scaffolded):
    _, spec, module = scaffolded
    for change, message in (
        (
            {"monitoring": {"drift": {"numerical": ["nope"]}}},
            "drift names columns that are not features: nope",
        ),
        ({"monitoring": {"limits": {"rmse": 1.0}}}, "monitoring limits name unmeasured metrics: rmse"),
        ({"retraining": {"labelled_days": 0}}, "labelled_days must be at least 1"),
    ):
        changed = UseCase.model_validate({**spec.model_dump(), **change})
        with pytest.raises(ValueError, match=message):
            lifecycle(changed, module.features, module.labels)


def test_the_use_case_has_its_retraining_job_and_sensor(scaffolded):
    _, spec, module = scaffolded
    definitions = lifecycle(spec, module.features, module.labels)
    (job,) = definitions.jobs
    (sensor,) = definitions.sensors
    assert job.name == "pays_tomorrow_train_and_promote" and sensor.name == "pays_tomorrow_retraining"
    assert sensor.job_name == job.name
