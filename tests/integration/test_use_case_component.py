"""keel.UseCase on its own: the scaffolded template, on a small synthetic warehouse, through the whole
lifecycle it generates (features -> model -> evaluation -> production model -> scores -> drift and live
performance). No dbt."""

import importlib.util
import json
from contextlib import contextmanager
from datetime import date, timedelta

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from keel_core import learning
from keel_core.online_store import open_store
from keel_core.prediction_log import SPOOL, PredictionLog
from platform_assets.components.plan import Plan
from platform_assets.components.scaffold import write_use_case
from platform_assets.components.use_case import References, UseCase, lifecycle
from resources.experiments import ExperimentTracking
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
    return folder, spec, References(folder, load_module)


def load_module(path):
    """A folder's module, as the component's load context would (tests have no code location)."""
    module_spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_a_scaffold_refuses_to_overwrite_a_folder_and_a_name_that_cannot_name_tables(scaffolded, tmp_path):
    folder, _, _ = scaffolded
    with pytest.raises(FileExistsError, match="already has defs.yaml"):
        write_use_case(folder, "pays_tomorrow")
    with pytest.raises(ValueError, match="lowercase"):
        write_use_case(tmp_path / "x", "Churn-Model")


LAST = FIRST + timedelta(days=DAYS - 1)
WHOLE_WINDOW = {
    "dagster/asset_partition_range_start": FIRST.isoformat(),
    "dagster/asset_partition_range_end": LAST.isoformat(),
}


@contextmanager
def synthetic_world(tmp_path, spec, resolve):
    """The synthetic warehouse and a test instance: ``run(*steps, **options)`` materializes steps of
    ``spec``'s lifecycle there (failures are returned, not raised)."""
    warehouse = tmp_path / "warehouse.duckdb"
    synthetic_warehouse(warehouse)
    resources = world_resources(tmp_path, warehouse)
    assets = lifecycle(spec, resolve).assets
    with dg.instance_for_test() as instance:

        def run(*steps, **options):
            selection = [dg.AssetKey(["pays_tomorrow", step]) for step in steps]
            return dg.materialize(
                assets,
                selection=selection,
                resources=resources,
                instance=instance,
                raise_on_error=False,
                **options,
            )

        yield run, resources, warehouse


def step_failure(result) -> str:
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure.step_failure_data.user_failure_data.description


def world_resources(tmp_path, warehouse) -> dict:
    lake = LocalLake(root=str(tmp_path / "lake"))
    return {
        "warehouse": Warehouse(path=str(warehouse)),
        "lake": lake,
        "registry": ModelRegistry(lake=lake),
        "online_store": OnlineFeatureStore(url=f"sqlite:///{tmp_path / 'online.sqlite'}", namespace="test"),
        "namespace": Namespace(name="test", environment="local"),
        "experiments": ExperimentTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            artifact_root=str(tmp_path / "lake" / "mlflow"),
            namespace="test",
        ),
    }


def test_the_scaffolded_use_case_goes_through_the_whole_lifecycle(scaffolded, tmp_path):
    _, spec, resolve = scaffolded
    warehouse = tmp_path / "warehouse.duckdb"
    synthetic_warehouse(warehouse)
    resources = world_resources(tmp_path, warehouse)
    lake = resources["lake"]
    assets = lifecycle(spec, resolve).assets
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


def test_what_the_endpoint_answered_on_a_day_is_collected_into_the_lake_once_per_prediction(
    scaffolded, tmp_path
):
    _, spec, resolve = scaffolded
    resources = world_resources(tmp_path, tmp_path / "warehouse.duckdb")
    lake = resources["lake"]
    day = FIRST + timedelta(days=3)
    answers = pd.DataFrame(
        {
            "customer_id": [7, 3, 9],
            "probability": [0.2, 0.9, 0.4],
            "prediction_id": ["a", "b", "c"],
            "scored_at": pd.to_datetime([f"{day} 10:00:02", f"{day} 10:00:01", f"{day} 23:59:59"]),
        }
    )
    spool = PredictionLog(f"{lake.root}/{SPOOL}/pays_tomorrow", day_column="scored_at")
    spool.append(answers)
    spool.append(answers.iloc[[0]])  # a flush retried after a failure writes a prediction twice
    spool.close()

    collected = dg.materialize(
        lifecycle(spec, resolve).assets,
        selection=[dg.AssetKey(["pays_tomorrow", "prediction_log"])],
        resources=resources,
        partition_key=day.isoformat(),
    )

    assert collected.success
    table = lake.read_partition("pays_tomorrow_prediction_log", day)
    assert list(table["prediction_id"]) == ["b", "a", "c"]  # by time, each prediction once
    assert collected.get_asset_materialization_events()[0].materialization.metadata["rows"].value == 3


SNAPSHOT_MODULE = """
import pandas as pd
import pandera.pandas as pa
from keel_core.online_store import Entity, FeatureView

CUSTOMER = Entity("customer", "customer_id", ("spend_7d",))
VIEW = FeatureView("pays_tomorrow", (CUSTOMER, Entity("day", "weekday", ("customers",))), "1")


def snapshot(connection, closed_day):
    customers = connection.execute(
        "select customer_id, sum(amount_sum) as spend_7d from customer_daily_activity "
        "where activity_date between ? - interval 6 day and ? group by customer_id order by customer_id",
        [closed_day, closed_day],
    ).df()
    days = pd.DataFrame({"weekday": [closed_day.weekday()], "customers": [len(customers)]})
    if closed_day.day == 13:  # a day whose snapshot breaks the contract
        customers.loc[0, "spend_7d"] = -1.0
    return {"customer": customers, "day": days.astype("int64")}


def schema(entity):
    if entity == "customer":
        spend = pa.Column(float, pa.Check.ge(0))
        return pa.DataFrameSchema({"customer_id": pa.Column("int64"), "spend_7d": spend})
    return pa.DataFrameSchema({"weekday": pa.Column("int64"), "customers": pa.Column("int64")})
"""


@pytest.fixture
def own_service(scaffolded, tmp_path):
    """The scaffolded use case served by a service of its folder, whose snapshot it computes."""
    import shutil

    folder, spec, _ = scaffolded
    served = tmp_path / "served"
    shutil.copytree(folder, served)
    (served / "snap.py").write_text(SNAPSHOT_MODULE)
    (served / "bentofile.yaml").write_text("service: 'service:Payers'\n")
    serving = {
        "service": {"name": "payer_scorer", "bentofile": "bentofile.yaml"},
        "snapshot": {
            "function": "snap:snapshot",
            "view": "snap:VIEW",
            "contract": "snap:schema",
            "reads": [{"asset": "warehouse/customer_daily_activity", "lookback_days": 6}],
        },
    }
    changed = UseCase.model_validate({**spec.model_dump(), "serving": serving})
    return changed, References(served, load_module)


def test_a_folder_serves_with_its_own_service_and_publishes_its_own_snapshot(own_service, tmp_path):
    spec, resolve = own_service
    plan = Plan.of(spec, resolve)
    assert plan.endpoint is None and plan.serving.service == "payer_scorer"
    assert plan.serving.bentofile == resolve.folder / "bentofile.yaml"
    assets = {a.key.path[-1]: a for a in lifecycle(spec, resolve).assets}
    online = assets["online_features"]
    mapping = online.get_partition_mapping(dg.AssetKey(["warehouse", "customer_daily_activity"]))
    assert (mapping.start_offset, mapping.end_offset) == (-6, 0)
    assert "payer_scorer" in assets["bento"].descriptions_by_key[dg.AssetKey(["pays_tomorrow", "bento"])]
    with synthetic_world(tmp_path, spec, resolve) as (run, resources, _):
        published = run("online_features", partition_key=LAST.isoformat())
        broken = run("online_features", partition_key="2026-01-13")
    metadata = published.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["customer_rows"].value > CUSTOMERS / 2 and metadata["day_rows"].value == 1
    store = open_store(resources["online_store"].url, "test", plan.serving.view)
    found = store.lookup({"customer": [0, 10**9], "day": [LAST.weekday(), LAST.weekday()]})
    store.close()
    assert found.snapshot.closed_day == LAST and pd.isna(found.values[1][0])
    assert "breaks its contract, nothing was published" in step_failure(broken)
    assert "spend_7d" in step_failure(broken)


def test_a_snapshot_view_is_named_and_versioned_as_its_use_case(own_service):
    spec, resolve = own_service
    for view, message in (
        ("FeatureView('payers', (CUSTOMER,), '1')", "a view is named as its use case"),
        (
            "FeatureView('pays_tomorrow', (CUSTOMER,), '2')",
            "the store would serve features the model was not",
        ),
    ):
        (resolve.folder / "other_view.py").write_text(
            "from keel_core.online_store import Entity, FeatureView\n"
            "CUSTOMER = Entity('customer', 'customer_id', ('spend_7d',))\n"
            f"VIEW = {view}\n"
        )
        serving = spec.serving.model_dump()
        changed = UseCase.model_validate(
            {
                **spec.model_dump(),
                "serving": {**serving, "snapshot": {**serving["snapshot"], "view": "other_view:VIEW"}},
            }
        )
        with pytest.raises(ValueError, match=message):
            Plan.of(changed, References(resolve.folder, load_module))


def test_drift_compares_what_was_served_when_the_log_holds_the_features(own_service, tmp_path):
    spec, resolve = own_service
    with synthetic_world(tmp_path, spec, resolve) as (run, resources, _):
        assert run("features", tags=WHOLE_WINDOW).success
        assert run("model", "evaluation", "production_model").success
        built = run("drift", partition_key=LAST.isoformat())
        with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as connection:
            rows = connection.execute(
                "select * from ml.pays_tomorrow_features where as_of_date = ?", [LAST]
            ).df()
        # What a service that logs its features served on the day: a few test calls, then the day.
        lake = resources["lake"]
        lake.write_partition("pays_tomorrow_prediction_log", LAST, rows.head(3))
        a_few = run("drift", partition_key=LAST.isoformat())
        lake.write_partition("pays_tomorrow_prediction_log", LAST, rows.head(len(rows) - 5))
        served = run("drift", partition_key=LAST.isoformat())

    def compared(result) -> tuple[str, int]:
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        return metadata["current"].value, metadata["dagster/row_count"].value

    assert compared(built)[0].startswith("feature table ml.pays_tomorrow_features (nothing was served")
    assert "the prediction log holds 3 rows" in compared(a_few)[0]
    source, rows_compared = compared(served)
    assert source.startswith("prediction log") and rows_compared == compared(built)[1] - 5


def test_the_spec_is_checked_before_any_asset_exists(scaffolded):
    _, spec, resolve = scaffolded
    for change, message in (
        (
            {"monitoring": {"drift": {"numerical": ["nope"]}}},
            "drift names columns that are not features: nope",
        ),
        ({"monitoring": {"limits": {"rmse": 1.0}}}, "monitoring limits name unmeasured metrics: rmse"),
        ({"retraining": {"labelled_days": 0}}, "labelled_days must be at least 1"),
        (
            {"attributes": ["payments_7d"]},
            r"attributes are columns besides keys and features: \['payments_7d'\]",
        ),
        ({"metrics": [{"name": "features:nope", "higher_is_better": True}]}, "defines no nope"),
        (
            {"reads": [{"asset": "warehouse/customers", "until_days_before": 1}]},
            "reads until 1 days before, which needs a daily asset",
        ),
        ({"storage": {"feature_table": "payer_rows"}}, "storage table 'payer_rows' is not schema.table"),
        ({"storage": {"score_table": "ml.pays_tomorrow_features"}}, "cannot share the table"),
        (
            {"storage": {"prediction_column": "customer_id"}},
            "'customer_id' is already a column of the scores",
        ),
        ({"serving": {"response": "probability"}}, "either entity .* or service"),
        (
            {"serving": {"entity": "customer", "service": {"name": "own", "bentofile": "defs.yaml"}}},
            "either entity .* or service",
        ),
        (
            {"serving": {"service": {"name": "own", "bentofile": "nope.yaml"}}},
            "bentofile .*nope.yaml is not a file",
        ),
        (
            {"serving": {"service": {"name": "own", "bentofile": "defs.yaml"}}},
            "needs the snapshot it reads",
        ),
        (
            {
                "serving": {
                    "entity": "customer",
                    "snapshot": {"function": "features:features", "view": "features:features", "reads": []},
                }
            },
            "a snapshot is for a folder's own service",
        ),
        ({"storage": {"prediction_log_table": "logs/served"}}, "is not a lake table name"),
        (
            {"monitoring": {"drift": {"numerical": ["payments_1d"], "fail_features": ["payments_7d"]}}},
            "fail_features that drift does not compare: payments_7d",
        ),
    ):
        changed = UseCase.model_validate({**spec.model_dump(), **change})
        with pytest.raises(ValueError, match=message):
            lifecycle(changed, resolve)


def test_a_window_with_a_day_missing_from_the_features_fails_naming_the_day(scaffolded, tmp_path):
    _, spec, resolve = scaffolded
    hole = LAST - timedelta(days=10)  # inside the training window
    with synthetic_world(tmp_path, spec, resolve) as (run, _, warehouse):
        assert run("features", tags=WHOLE_WINDOW).success
        with duckdb.connect(str(warehouse)) as connection:
            connection.execute("delete from ml.pays_tomorrow_features where as_of_date = ?", [hole])
        for step, options in (("model", {}), ("scores", {"partition_key": hole.isoformat()})):
            result = run(step, **options)
            assert not result.success, step
            message = step_failure(result)
            assert "has no rows for 1 of the days" in message and hole.isoformat() in message, message


def test_a_use_case_keeps_its_tables_where_its_storage_says(scaffolded, tmp_path):
    _, spec, resolve = scaffolded
    stored = UseCase.model_validate(
        {
            **spec.model_dump(),
            "storage": {
                "feature_table": "ml.payer_rows",
                "score_table": "ml.payer_scores",
                "prediction_column": "p_pay",
            },
        }
    )
    yesterday = LAST - timedelta(days=1)
    with synthetic_world(tmp_path, stored, resolve) as (run, resources, warehouse):
        for steps, options in (
            (["features"], {"tags": WHOLE_WINDOW}),
            (["model", "evaluation", "production_model"], {}),
            (["scores"], {"partition_key": yesterday.isoformat()}),
            (["live_performance"], {"partition_key": yesterday.isoformat()}),
        ):
            judged = run(*steps, **options)
            assert judged.success, steps
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        tables = {name for (name,) in connection.execute("select table_name from duckdb_tables()").fetchall()}
        columns = {
            c
            for (c,) in connection.execute(
                "select column_name from duckdb_columns() where table_name = 'payer_scores'"
            ).fetchall()
        }
    assert {"payer_rows", "payer_scores"} <= tables and not {
        "pays_tomorrow_features",
        "pays_tomorrow_scores",
    } & tables
    assert "p_pay" in columns and "prediction" not in columns
    assert len(resources["lake"].read_partition("payer_scores", yesterday)) > 0
    assert judged.get_asset_materialization_events()[0].materialization.metadata["roc_auc"].value > 0.6


def test_the_record_counts_the_rows_whose_label_never_arrived(scaffolded, tmp_path):
    folder, spec, _ = scaffolded

    class LossyLabels(References):
        """The folder's labels, less those of odd customers (say, their flags were quarantined)."""

        def __call__(self, reference):
            found = super().__call__(reference)
            if reference != spec.labels:
                return found
            return lambda *window: (rows := found(*window))[rows["customer_id"] % 2 == 0]

    with synthetic_world(tmp_path, spec, LossyLabels(folder, load_module)) as (run, resources, warehouse):
        assert run("features", tags=WHOLE_WINDOW).success
        model = run("model")
        assert model.success
    metadata = model.get_asset_materialization_events()[0].materialization.metadata
    record = resources["registry"].of("pays_tomorrow").version(metadata["model_tag"].value).record
    window = record.training_window
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        (odd,) = connection.execute(
            "select count(*) from ml.pays_tomorrow_features where customer_id % 2 = 1 "
            "and (as_of_date between ? and ? or as_of_date between ? and ?)",
            [window.train_start, window.train_end, window.test_start, window.test_end],
        ).fetchone()
    assert record.unlabelled_rows == odd > 0
    assert metadata["unlabelled_rows"].value == odd


@pytest.mark.parametrize(("ceiling", "passed"), [(10_000, True), (0, False)], ids=["kept", "broken"])
def test_the_folders_schema_of_the_stored_features_is_a_blocking_check(scaffolded, tmp_path, ceiling, passed):
    import pandera.pandas as pa

    folder, spec, _ = scaffolded

    class WithSchema(References):
        def __call__(self, reference):
            if reference == "features:schema":
                return lambda: pa.DataFrameSchema({"payments_28d": pa.Column(checks=pa.Check.le(ceiling))})
            return super().__call__(reference)

    checked = UseCase.model_validate({**spec.model_dump(), "feature_schema": "features:schema"})
    warehouse = tmp_path / "warehouse.duckdb"
    synthetic_warehouse(warehouse)
    features = next(
        a
        for a in lifecycle(checked, WithSchema(folder, load_module)).assets
        if a.key == dg.AssetKey(["pays_tomorrow", "features"])
    )
    day = FIRST + timedelta(days=DAYS - 1)
    result = dg.materialize(
        [features],
        resources=world_resources(tmp_path, warehouse),
        partition_key=day.isoformat(),
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "matches_feature_schema" and evaluation.passed is passed
    assert (evaluation.metadata["failures"].value > 0) is not passed
    assert result.success is passed  # blocking: the step fails, and nothing downstream runs


def test_the_launchpad_judges_with_its_own_gate_and_refuses_a_metric_not_measured(scaffolded, tmp_path):
    _, spec, resolve = scaffolded

    def gate(config: dict):
        return {"ops": {"pays_tomorrow__evaluation": {"config": config}}}

    with synthetic_world(tmp_path, spec, resolve) as (run, _, _):
        assert run("features", tags=WHOLE_WINDOW).success
        strict = run(
            "model", "evaluation", run_config=gate({"limits": {"roc_auc": 0.999}, "evaluation_days": 3})
        )
        misspelt = run("model", "evaluation", run_config=gate({"tolerance": {"rocauc": 0.1}}))
    judged = next(
        e.materialization.metadata
        for e in strict.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["pays_tomorrow", "evaluation"])
    )
    assert judged["approved"].value is False and "vs floor 0.999" in judged["decision"].value
    assert (
        date.fromisoformat(judged["evaluation_last_day"].value)
        - date.fromisoformat(judged["evaluation_first_day"].value)
    ).days == 2
    assert not misspelt.success and "does not measure: rocauc" in step_failure(misspelt)


def test_the_launchpad_sets_drift_thresholds_and_live_limits_over_the_spec(scaffolded, tmp_path):
    _, spec, resolve = scaffolded
    yesterday = LAST - timedelta(days=1)

    def config(step: str, values: dict) -> dict:
        return {"ops": {f"pays_tomorrow__{step}": {"config": values}}}

    with synthetic_world(tmp_path, spec, resolve) as (run, _, _):
        assert run("features", tags=WHOLE_WINDOW).success
        assert run("model", "evaluation", "production_model").success
        assert run("scores", partition_key=yesterday.isoformat()).success
        on_last = {"partition_key": LAST.isoformat()}
        lenient = run("drift", run_config=config("drift", {"warn_share": 0.99, "fail_share": 1.0}), **on_last)
        named = run("drift", run_config=config("drift", {"fail_features": ["payments_28d"]}), **on_last)
        unknown = run("drift", run_config=config("drift", {"fail_features": ["nope"]}), **on_last)
        upside_down = run(
            "drift", run_config=config("drift", {"warn_share": 0.9, "fail_share": 0.1}), **on_last
        )
        on_yesterday = {"partition_key": yesterday.isoformat()}
        strict = run(
            "live_performance",
            run_config=config("live_performance", {"limits": {"roc_auc": 0.999}}),
            **on_yesterday,
        )
        misspelt = run(
            "live_performance",
            run_config=config("live_performance", {"limits": {"rocauc": 0.5}}),
            **on_yesterday,
        )
    # payments_28d drifts on the last day (the windows fill up), one of few features: under the shares.
    (lenient_check,) = lenient.get_asset_check_evaluations()
    (named_check,) = named.get_asset_check_evaluations()
    assert lenient_check.passed and not named_check.passed
    assert (
        named_check.severity == dg.AssetCheckSeverity.ERROR
        and "payments_28d drifts" in named_check.description
    )
    assert "not features: nope" in step_failure(unknown)
    assert "warn_share" in step_failure(upside_down)
    (strict_check,) = strict.get_asset_check_evaluations()
    assert not strict_check.passed and "0.999" in strict_check.description
    assert "does not measure: rocauc" in step_failure(misspelt)


def test_rows_of_a_customer_known_positive_before_their_day_are_not_judged(scaffolded, tmp_path):
    _, spec, resolve = scaffolded
    judging = {"judging": {"exclude_known_positives": "customer_id"}}
    strict = UseCase.model_validate({**spec.model_dump(), **judging})
    # A training window shorter than the spec's: the handbook's rule counts the cards known
    # compromised from the experiment's first training day, not from a spec-long window before.
    shorter = {"ops": {"pays_tomorrow__model": {"config": {"train_days": 5}}}}
    with synthetic_world(tmp_path, strict, resolve) as (run, _, warehouse):
        assert run("features", tags=WHOLE_WINDOW).success
        trained = run("model", "evaluation", run_config=shorter)
        plan = Plan.of(strict, resolve)
        with duckdb.connect(str(warehouse), read_only=True) as connection:
            events = {
                e.asset_key.path[-1]: e.materialization.metadata
                for e in trained.get_asset_materialization_events()
            }
            model = events["model"]
            train_start, test_start, test_end = (
                date.fromisoformat(model[name].value) for name in ("train_start", "test_start", "test_end")
            )
            labelled = plan.labelled_rows(connection, test_start, test_end)
            earlier = plan.labelled_rows(connection, train_start - timedelta(days=9), test_end)
    excluded = model["excluded_known_positive_test_rows"].value
    assert 0 < excluded < len(labelled) and model["test_rows"].value == len(labelled) - excluded

    def judged_from(first: date) -> int:
        positives = earlier[earlier[plan.rows.label] == 1]
        positives = positives[pd.to_datetime(positives[plan.rows.day]) >= pd.Timestamp(first)]
        return len(learning.without_known_positives(plan.rows, labelled, positives, "customer_id", 1))

    # More cards known from an earlier start, fewer rows judged: the start is the training window's.
    assert judged_from(train_start - timedelta(days=9)) < judged_from(train_start) == model["test_rows"].value
    evaluation = events["evaluation"]
    assert evaluation["excluded_known_positive_rows"].value > 0
    assert evaluation["judged_rows"].value > 0
    for refused in ({**judging, "task": "regression"}, {"judging": {"exclude_known_positives": "card"}}):
        with pytest.raises(ValueError, match="exclude_known_positives"):
            Plan.of(UseCase.model_validate({**spec.model_dump(), **refused}), resolve)


def test_a_read_can_end_the_day_before_the_features_day(scaffolded):
    _, spec, resolve = scaffolded
    changed = UseCase.model_validate(
        {
            **spec.model_dump(),
            "reads": [
                {"asset": "warehouse/customer_daily_activity", "lookback_days": 28, "until_days_before": 1},
                {"asset": "warehouse/customers"},
            ],
        }
    )
    features = next(
        a for a in lifecycle(changed, resolve).assets if a.key == dg.AssetKey(["pays_tomorrow", "features"])
    )
    mapping = features.get_partition_mapping(dg.AssetKey(["warehouse", "customer_daily_activity"]))
    assert (mapping.start_offset, mapping.end_offset) == (-28, -1)


def test_a_use_case_registers_under_its_model_name_or_its_own(scaffolded, tmp_path):
    _, spec, resolve = scaffolded
    registry = ModelRegistry(lake=LocalLake(root=str(tmp_path)))
    assert Plan.of(spec, resolve).registry_of(registry).model_name == "pays_tomorrow"
    named = UseCase.model_validate({**spec.model_dump(), "model_name": "payer_model"})
    assert Plan.of(named, resolve).registry_of(registry).model_name == "payer_model"
    with pytest.raises(ValueError, match="model_name"):
        UseCase.model_validate({**spec.model_dump(), "model_name": "Payer Model:1"})


def test_the_spec_sizes_each_kind_of_step_and_the_rest_keep_the_platform_defaults(scaffolded):
    from platform_assets.steps import FEATURES, K8S_CONFIG_TAG

    _, spec, references = scaffolded
    compute = {"training": {"memory_gib": 16, "gpus": 1, "deadline_seconds": 600}}
    changed = UseCase.model_validate({**spec.model_dump(), "compute": compute})
    assets = {a.key.path[-1]: a for a in lifecycle(changed, references).assets}

    def pod(asset: str) -> dict:
        return json.loads(assets[asset].op.tags[K8S_CONFIG_TAG])  # Dagster keeps tags as text

    training = pod("model")
    assert training["container_config"]["resources"]["limits"]["memory"] == "16384Mi"
    assert training["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert training["job_spec_config"]["active_deadline_seconds"] == 600
    assert pod("features") == FEATURES.op_tags("pays_tomorrow_features")[K8S_CONFIG_TAG]
    nothing = UseCase.model_validate({**spec.model_dump(), "compute": {"scoring": {"cpu": 0}}})
    with pytest.raises(ValueError, match="must be positive"):
        lifecycle(nothing, references)


def test_the_use_case_has_its_retraining_job_and_sensor(scaffolded):
    _, spec, resolve = scaffolded
    definitions = lifecycle(spec, resolve)
    (job,) = definitions.jobs
    (sensor,) = definitions.sensors
    assert job.name == "pays_tomorrow_train_and_promote" and sensor.name == "pays_tomorrow_retraining"
    assert sensor.job_name == job.name


YARDSTICKS = """
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def scaled_logistic_regression(**params):
    return make_pipeline(StandardScaler(), LogisticRegression(**params))


def worst_half_average_precision(scored: pd.DataFrame) -> float:
    from sklearn.metrics import average_precision_score

    odd = scored[scored["customer_parity"] == 1]
    return float(average_precision_score(odd["label"], odd["prediction"]))
"""


def test_a_folder_brings_its_own_metric_estimator_and_attributes_and_the_launchpad_overrides_the_spec(
    scaffolded, tmp_path
):
    """What fraud needs from the component: a metric that groups rows by a column the model does
    not learn from (an attribute), a baseline that is a pipeline built by the folder, and an
    experiment's hyper-parameters and window from the launchpad."""
    scaffold, spec, _ = scaffolded
    folder = tmp_path / "pays_tomorrow"
    folder.mkdir()
    (folder / "yardsticks.py").write_text(YARDSTICKS)
    template = (scaffold / "features.py").read_text().replace("def features(", "def template_features(")
    (folder / "features.py").write_text(
        template
        + "\n\ndef features(connection, first, last):  # the template's rows, with an attribute\n"
        + "    rows = template_features(connection, first, last)\n"
        + "    return rows.assign(customer_parity=rows['customer_id'] % 2)\n"
    )

    changed = UseCase.model_validate(
        {
            **spec.model_dump(),
            "attributes": ["customer_parity"],
            "baseline": {"class_path": "yardsticks:scaled_logistic_regression", "params": {"C": 0.5}},
            "gate": {"limits": {"roc_auc": 0.55}},  # a 20-tree model need not beat the baseline here
            "metrics": [
                {"name": "roc_auc"},
                {"name": "average_precision"},
                {"name": "yardsticks:worst_half_average_precision", "higher_is_better": True},
            ],
        }
    )
    model = {"ops": {"pays_tomorrow__model": {"config": {}}}}
    with synthetic_world(tmp_path, changed, References(folder, load_module)) as (run, resources, _):
        assert run("features", tags=WHOLE_WINDOW).success
        model["ops"]["pays_tomorrow__model"]["config"] = {
            "train_days": 10,
            "seed": 7,
            "hyper_parameters": {"max_iter": 20},
        }
        trained = run("model", run_config=model)
        assert trained.success
        model["ops"]["pays_tomorrow__model"]["config"] = {"hyper_parameters": {"max_iters": 20}}
        refused = run("model", run_config=model)
        # The attribute travels with the scores: live performance measures the metric that needs it.
        assert run("evaluation", "production_model").success
        yesterday = LAST - timedelta(days=1)
        assert run("scores", partition_key=yesterday.isoformat()).success
        live = run("live_performance", partition_key=yesterday.isoformat())
        assert live.success
    judged = live.get_asset_materialization_events()[0].materialization.metadata
    assert 0 < judged["worst_half_average_precision"].value <= 1
    assert not refused.success
    failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
    assert "has no parameter max_iters" in failure.event_specific_data.error.message

    metadata = trained.asset_materializations_for_node("pays_tomorrow__model")[0].metadata
    record = resources["registry"].of("pays_tomorrow").version(metadata["model_tag"].value).record
    assert set(record.metrics) == {"roc_auc", "average_precision", "worst_half_average_precision"}
    assert 0 < record.metrics["worst_half_average_precision"] <= 1
    assert record.hyper_parameters["max_iter"] == 20 and record.hyper_parameters["max_depth"] == 3
    assert record.seed == 7 and record.hyper_parameters["random_state"] == 7  # the seed is the model's
    window = record.training_window
    assert (window.train_end - window.train_start).days + 1 == 10
    assert record.baseline == "scaled_logistic_regression (baseline)"
    assert metadata["precision_recall_png"].value.endswith("precision_recall.png")
