"""The prod environment on S3 and PostgreSQL, against moto's S3 server and the local PostgreSQL.

moto's standalone server plays S3; a database of its own on the local PostgreSQL is the warehouse's
DuckLake catalog. With ``KEEL_ENV=prod`` the code location binds its prod resources: the lake and
landing zone on S3 through dagster-aws, the warehouse a DuckLake whose data are Parquet files on S3,
dbt's prod target reading the lake's Parquet from S3 through DuckDB's httpfs, the registry exporting
models to S3. Days land, are ingested, built through dbt into features; a model is exported to S3 and
imported back from it. Nothing is written to local disk but temporary files.
"""

import os
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import boto3
import dagster as dg
import numpy as np
import pytest
from bento_server import default_signals, free_port, wait_for_port
from model_records import training_record
from sklearn.linear_model import LogisticRegression

from keel.demo import days_needed
from platform_assets.defs.fraud import transaction_features as features
from tests.databases import count, temporary_database

FEATURE_TABLE = "ml.transaction_features"  # the fraud use case's (its defs.yaml)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BUCKET, ROOT = "keel-lake-test", "lake"
PREFIX = f"{ROOT}/namespaces/prod"  # the prod namespace's lake
# The shortest world fraud's training accepts, the size of the local test world (tests/integration/
# conftest.py): smaller, the model has too few frauds to pass the gate, and nothing would be scored.
FIRST_DAY, N_DAYS = date(2026, 1, 1), days_needed()
DAYS = [FIRST_DAY + timedelta(days=i) for i in range(N_DAYS)]
CUSTOMERS, TERMINALS = 2_000, 4_000
# The fraud use case end to end; the other use case and the serving steps (Bento, online features) are
# the local world's to test.
FRAUD_LIFECYCLE = {"features", "model", "evaluation", "production_model", "scores"}
SCORE_TABLE = "ml.transaction_scores"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server in its own process group, stopped by pid."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [Path(sys.executable).with_name("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_signals,
        )
    try:
        wait_for_port(port, server, timeout=30, what="moto_server", log=log)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def catalog(postgres_server):
    """The warehouse's DuckLake catalog: a database of its own on the local PostgreSQL."""
    with temporary_database(postgres_server, "catalog") as name:
        yield name


@pytest.fixture(scope="module")
def mlflow_database(postgres_server):
    """MLflow's tracking store, as deployed: a PostgreSQL database (its artifacts go to the lake on S3)."""
    with temporary_database(postgres_server, "mlflow") as name:
        yield name


@pytest.fixture(scope="module")
def prod_on_s3(s3_endpoint, catalog, mlflow_database, postgres_server, tmp_path_factory):
    """The prod definitions, bound to the S3 server and the catalog; the bucket created as a platform
    engineer would."""
    root = tmp_path_factory.mktemp("prod")
    server = postgres_server
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEEL_ENV", "prod")
        # The production pipeline's namespace (a world fixture of the session may have set another).
        patch.setenv("KEEL_NAMESPACE", "prod")
        patch.setenv("KEEL_LAKE_ROOT", f"s3://{BUCKET}/{ROOT}")
        patch.setenv(
            "KEEL_WAREHOUSE_CATALOG",
            f"postgres:dbname={catalog} host={server['host']} port={server['port']} user={server['user']}",
        )
        patch.chdir(root)  # anything written to the working folder would show in `root`
        patch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
        patch.setenv("AWS_ACCESS_KEY_ID", "keel-test")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "keel-test")
        patch.setenv("AWS_REGION", "us-east-1")
        # Bound by the prod environment but not used by these assets: nothing connects to them.
        patch.setenv("KEEL_ONLINE_STORE_URL", "redis://127.0.0.1:6379/15")
        patch.setenv("KEEL_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/unused")
        patch.setenv(
            "KEEL_MLFLOW_TRACKING_URI",
            f"postgresql+psycopg2://{server['user']}@{server['host']}:{server['port']}/{mlflow_database}",
        )
        patch.setenv("KEEL_SIMULATOR_CUSTOMERS", str(CUSTOMERS))
        patch.setenv("KEEL_SIMULATOR_TERMINALS", str(TERMINALS))
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        from platform_assets.definitions import defs

        yield defs(), root


def s3_keys(prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="module")
def built(prod_on_s3):
    """Days landed on S3, then in one run ingested, built by dbt, turned into features, a model
    trained, gated, promoted and the days scored."""
    definitions, root = prod_on_s3
    definitions.resources["landing"].deliver(definitions.resources["upstream"], DAYS)
    selection = [
        key
        for key in definitions.resolve_job_def("keel_pipeline").asset_layer.executable_asset_keys
        if key.path[0] in ("lake", "warehouse")
        or (key.path[0] == "fraud" and key.path[-1] in FRAUD_LIFECYCLE)
    ]
    with dg.instance_for_test() as instance:
        result = definitions.resolve_job_def("keel_pipeline").execute_in_process(
            instance=instance,
            asset_selection=selection,
            tags={
                "dagster/asset_partition_range_start": DAYS[0].isoformat(),
                "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
            },
            raise_on_error=False,
        )
    return definitions, root, result


def test_the_prod_lake_is_s3(prod_on_s3):
    definitions, _ = prod_on_s3
    assert definitions.resources["lake"].uri == f"s3://{BUCKET}/{PREFIX}"


def test_landed_days_are_ingested_into_daily_partitions_on_s3(built):
    _, _, result = built
    assert result.success, [event.message for event in result.all_events if event.is_failure]
    for day in DAYS:
        partition = f"{PREFIX}/raw_transactions/date={day.isoformat()}/data.parquet"
        assert partition in s3_keys(f"{PREFIX}/raw_transactions/")
        assert f"{PREFIX}/quarantined_transactions/date={day.isoformat()}/data.parquet" in s3_keys(PREFIX)


def test_the_lake_on_s3_answers_which_day_already_holds_an_id(built):
    """Ingestion's cross-day uniqueness reads the partitions' id columns from S3 (pyarrow)."""
    definitions, _, result = built
    assert result.success
    lake = definitions.resources["lake"]
    first = lake.read_partition("raw_transactions", DAYS[0])["transaction_id"].head(3)
    held = lake.days_holding("raw_transactions", "transaction_id", first, other_than=DAYS[1])
    assert held.to_dict() == dict.fromkeys(first.tolist(), DAYS[0].isoformat())
    assert lake.days_holding("raw_transactions", "transaction_id", first, other_than=DAYS[0]).empty


def test_dbt_builds_the_warehouse_and_features_from_the_lake_on_s3_and_nothing_is_local(built):
    definitions, root, result = built
    assert result.success
    lake, warehouse = definitions.resources["lake"], definitions.resources["warehouse"]
    ingested = sum(len(lake.read_partition("raw_transactions", day)) for day in DAYS)
    assert ingested > 1_000
    assert warehouse.row_count("main.transactions") == ingested  # dbt's mart, read from S3
    assert warehouse.row_count(FEATURE_TABLE) == ingested
    assert list(root.iterdir()) == []  # no lake, no warehouse, no tracking store on disk


def test_a_model_is_trained_from_the_ducklake_promoted_and_the_days_scored(
    built, mlflow_database, postgres_server
):
    definitions, _, result = built
    assert result.success
    materialized = {
        event.asset_key: event.materialization.metadata for event in result.get_asset_materialization_events()
    }
    model = materialized[dg.AssetKey(["fraud", "model"])]
    snapshot = model["warehouse_snapshot"].value  # what `keel reproduce` reads
    assert 0 < snapshot <= definitions.resources["warehouse"].snapshot()
    tag = model["model_tag"].value
    version = tag.partition(":")[2]
    assert f"{PREFIX}/registry/fraud_detector/versions/{version}/model.bentomodel" in s3_keys(PREFIX)
    assert definitions.resources["registry"].of_tag(tag).version(tag).record.warehouse_snapshot == snapshot
    assert materialized[dg.AssetKey(["fraud", "production_model"])]["model_tag"].value == tag
    warehouse = definitions.resources["warehouse"]
    with warehouse.connect() as connection:
        scored = connection.execute(
            f"select count(*), count(distinct model_version), min(transaction_date), max(transaction_date) "
            f"from {SCORE_TABLE}"
        ).fetchone()
    assert scored[0] == warehouse.row_count(FEATURE_TABLE) and scored[1] == 1
    assert (scored[2].date(), scored[3].date()) == (DAYS[0], DAYS[-1])
    runs = count(postgres_server, mlflow_database, "select count(*) from runs")
    assert runs > 1  # the training and its selection's trials, in PostgreSQL


def test_the_warehouse_is_a_ducklake_cataloged_in_postgresql_with_its_data_on_s3(
    built, catalog, postgres_server
):
    definitions, _, result = built
    assert result.success
    assert definitions.resources["warehouse"].location.is_lake
    data = s3_keys(f"{PREFIX}/warehouse/")
    # dbt's marts and Keel's feature table, each day in files of its own (DuckLake's partitions).
    for day in DAYS:
        assert any(f"/transactions/transaction_date={day.isoformat()}/" in key for key in data), data[:5]
        assert any(f"/transaction_features/transaction_date={day.isoformat()}" in key for key in data)
    tables = "select count(*) from keel_prod.ducklake_table where end_snapshot is null"
    assert count(postgres_server, catalog, tables) >= 8
    assert definitions.resources["warehouse"].snapshot() > 0


def test_a_model_is_exported_to_s3_and_imported_back_from_it(built):
    import bentoml

    definitions, _, result = built
    assert result.success
    warehouse, registry = (
        definitions.resources["warehouse"],
        definitions.resources["registry"].of("fraud_detector"),
    )
    with warehouse.connect() as connection:
        table = connection.execute(f"select * from {FEATURE_TABLE}").df()
    inputs = table[features.FEATURE_NAMES].to_numpy(dtype=float)
    model = LogisticRegression(max_iter=500).fit(inputs, np.arange(len(inputs)) % 2)

    tag = registry.register(model, training_record())
    version = tag.partition(":")[2]
    assert f"{PREFIX}/registry/fraud_detector/versions/{version}/model.bentomodel" in s3_keys(PREFIX)

    bentoml.models.delete(tag)  # as on a fresh pod: only S3 has it
    imported = registry.load(tag)
    assert np.array_equal(imported.predict_proba(inputs), model.predict_proba(inputs))
    assert registry.latest().tag == tag


# One partition run, as one pod runs it: the day's dbt models and features, started when its twin is
# ready too (a barrier of files), so that both write the same tables at the same time.
PARTITION_RUN = """
import sys, time
from pathlib import Path
import dagster as dg
from platform_assets.definitions import defs

day, barrier = sys.argv[1], Path(sys.argv[2])
definitions = defs()
job = definitions.resolve_job_def("keel_pipeline")
selection = [
    key
    for key in job.asset_layer.executable_asset_keys
    if (key.path[0] == "warehouse" and definitions.resolve_assets_def(key).partitions_def is not None)
    or key == dg.AssetKey(["fraud", "features"])
]
(barrier / day).touch()
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.05)
with dg.instance_for_test() as instance:
    result = job.execute_in_process(
        instance=instance, asset_selection=selection, partition_key=day, raise_on_error=False
    )
for event in result.all_events:
    if event.is_step_failure or event.event_type_value in ("STEP_UP_FOR_RETRY", "STEP_RESTARTED"):
        print("KEEL-RUN", event.step_key, event.event_type_value, event.message, flush=True)
sys.exit(0 if result.success else 1)
"""


def test_two_runs_write_different_days_of_the_same_tables_at_the_same_time(built, tmp_path):
    """Two processes (two pods) rebuild days 2 and 3 of the marts and the feature table at once; both
    succeed and each day holds exactly the lake's payments, once."""
    definitions, _, result = built
    assert result.success
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    runs = {
        day: subprocess.Popen(
            [sys.executable, "-c", PARTITION_RUN, day.isoformat(), str(barrier)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for day in DAYS[1:3]
    }
    outputs = {day: run.communicate(timeout=1800) for day, run in runs.items()}
    for day, run in runs.items():
        out, log = outputs[day]
        retries = [line for line in out.splitlines() if line.startswith("KEEL-RUN")]
        print(f"the run of {day}: failed or retried steps: {retries or 'none'}")
        assert run.returncode == 0, "\n".join(retries) + log[-4000:]
    lake, warehouse = definitions.resources["lake"], definitions.resources["warehouse"]
    with warehouse.connect() as connection:
        for day in DAYS:
            landed = lake.read_partition("raw_transactions", day)[["transaction_id", "amount"]]
            marts = connection.execute(
                "select transaction_id, amount from main.transactions where transaction_date = ?", [day]
            ).df()
            features = connection.execute(
                f"select transaction_id from {FEATURE_TABLE} where cast(transaction_date as date) = ?", [day]
            ).df()
            expected = landed.sort_values("transaction_id", ignore_index=True)
            assert marts.sort_values("transaction_id", ignore_index=True).equals(expected), day
            assert sorted(features["transaction_id"]) == expected["transaction_id"].tolist(), day


def test_keel_reproduce_reads_the_snapshot_it_was_trained_at_after_a_day_was_rewritten(built, tmp_path):
    """`keel reproduce` on the prod DuckLake, after a test day's features were rewritten with one
    amount corrected: at the recorded snapshot the version is reproduced exactly (exit 0); with
    --current-data the corrected row is named (exit 1)."""
    definitions, _, result = built
    assert result.success
    materialized = {
        event.asset_key: event.materialization.metadata for event in result.get_asset_materialization_events()
    }
    tag = materialized[dg.AssetKey(["fraud", "model"])]["model_tag"].value
    record = definitions.resources["registry"].of_tag(tag).version(tag).record
    warehouse = definitions.resources["warehouse"]
    day = record.training_window.test_start
    with warehouse.connect() as connection:
        rows = connection.execute(
            f"select * from {FEATURE_TABLE} where cast(transaction_date as date) = ?", [day]
        ).df()
    changed = rows["transaction_id"].min()
    rows.loc[rows["transaction_id"] == changed, "amount"] += 1.0
    warehouse.replace_days(FEATURE_TABLE, "transaction_date", day, day, rows)

    keel = [Path(sys.executable).with_name("keel"), "--namespace", "prod", "reproduce", tag]
    # A wide console: rich wraps at 80 columns when its output is not a terminal.
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster"), "COLUMNS": "400"}
    as_trained = subprocess.run(keel, env=env, capture_output=True, text=True, timeout=1800)
    assert as_trained.returncode == 0, as_trained.stdout + as_trained.stderr[-4000:]
    assert f"Reading the warehouse at snapshot {record.warehouse_snapshot}" in as_trained.stdout
    assert f"{tag} reproduced: same data, same metrics." in as_trained.stdout

    now = subprocess.run([*keel, "--current-data"], env=env, capture_output=True, text=True, timeout=1800)
    assert now.returncode == 1, now.stdout + now.stderr[-4000:]
    assert f"transaction_id {changed}" in now.stdout, now.stdout
    assert f"{tag} was not reproduced" in now.stdout
