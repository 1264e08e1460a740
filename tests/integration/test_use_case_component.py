"""keel.UseCase on its own: the scaffolded template, on a small synthetic warehouse, through the whole
lifecycle it generates (features -> model -> evaluation -> production model -> scores). No dbt."""

import importlib.util
from datetime import date, timedelta

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from platform_assets.components.scaffold import write_use_case
from platform_assets.components.use_case import UseCase, lifecycle
from resources.lake import LocalLake
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
    assert rows[0] == CUSTOMERS and 0 <= rows[1] <= rows[2] <= 1
