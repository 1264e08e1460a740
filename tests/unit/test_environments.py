import re
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_dbt import DbtCliResource

from keel_core import settings as keel_settings
from keel_core.settings import Settings
from platform_assets.defs.payments.system import SimulatorSource
from resources.alerts import LogAlerts, WebhookAlerts
from resources.dbt import REPO_ROOT
from resources.environments import resources_for, service_settings
from resources.lake import LocalLake
from resources.s3_lake import S3Lake
from resources.sources import LandingZone
from resources.warehouse import Warehouse

SMALL_SOURCE = SimulatorSource(n_customers=200, n_terminals=400, start_date="2026-01-01")
DEPLOYED = {
    "KEEL_LAKE_ROOT": "s3://bucket/some/prefix",
    "KEEL_ONLINE_STORE_URL": "redis://redis:6379/0",
    "KEEL_ALERT_WEBHOOK_URL": "https://hooks.example.com/keel",
    "KEEL_CALENDAR_START": "2026-01-01",
    "KEEL_MLFLOW_TRACKING_URI": "postgresql+psycopg2://keel@postgres:5432/mlflow",
    "KEEL_WAREHOUSE_CATALOG": "postgres:dbname=keel_warehouse host=postgres user=keel",
}


@pytest.fixture(autouse=True)
def _no_world_settings(monkeypatch):
    """Whatever a world fixture of the session set, these tests choose their own settings."""
    for name in (
        "KEEL_NAMESPACE",
        "KEEL_LAKE_ROOT",
        "KEEL_WAREHOUSE_DIR",
        "KEEL_ONLINE_STORE_URL",
        "KEEL_MLFLOW_TRACKING_URI",
        "KEEL_WAREHOUSE_CATALOG",
    ):
        monkeypatch.delenv(name, raising=False)


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


START = date.fromisoformat(SMALL_SOURCE.start_date)


def test_the_environment_defaults_to_local():
    assert settings().env == "local"


@pytest.mark.parametrize("name", ["local", "staging", "prod"])
def test_the_environment_is_read_from_keel_env(monkeypatch, name):
    for variable, value in DEPLOYED.items():
        if name != "local" or variable != "KEEL_WAREHOUSE_CATALOG":  # refused locally (test below)
            monkeypatch.setenv(variable, value)
    monkeypatch.setenv("KEEL_ENV", name)
    assert settings().env == name


def test_an_unknown_keel_env_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("KEEL_ENV", "production")
    with pytest.raises(ValueError, match="env\n  Input should be 'local', 'staging' or 'prod'"):
        settings()


def test_local_resources_follow_the_keel_variables_and_the_namespace(monkeypatch, tmp_path):
    monkeypatch.setenv("KEEL_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("KEEL_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    resources = resources_for(settings(namespace="alice"))
    assert isinstance(resources["lake"], LocalLake)
    assert resources["lake"].root == str(tmp_path / "lake" / "namespaces" / "alice")
    assert isinstance(resources["warehouse"], Warehouse)
    assert resources["warehouse"].path == str(tmp_path / "warehouse" / "alice.duckdb")
    assert isinstance(resources["dbt"], DbtCliResource)  # Keel's DbtCli, a DbtCliResource
    assert resources["dbt"].target == "local"
    # dbt is given the namespace's lake and warehouse; nothing is written into os.environ for it.
    assert resources["dbt"].environment == {
        "KEEL_ENV": "local",
        "KEEL_NAMESPACE": "alice",
        "KEEL_LAKE_ROOT": str(tmp_path / "lake"),
        "KEEL_WAREHOUSE_DIR": str(tmp_path / "warehouse"),
    }
    assert isinstance(resources["landing"], LandingZone)
    # The landing zone is the environment's, shared: every namespace ingests the same deliveries.
    assert resources["landing"].lake.root == str(tmp_path / "lake")
    assert resources["online_store"].namespace == "alice"
    assert resources["namespace"].name == "alice"


def test_local_state_defaults_to_the_keel_folder_of_the_repository():
    assert keel_settings.STATE_DIR == REPO_ROOT / ".keel"
    local = settings(namespace="alice")
    assert Path(local.lake_uri) == REPO_ROOT / ".keel" / "lake"
    assert Path(local.warehouse_path) == REPO_ROOT / ".keel" / "warehouse" / "alice.duckdb"
    assert local.online_store.endswith("/.keel/online_features/alice.sqlite")


def test_the_namespace_is_the_login_name_locally_and_prod_when_deployed(monkeypatch):
    monkeypatch.setenv("USER", "alice")
    assert settings().namespace == "alice"
    assert settings(env="staging", **_deployed()).namespace == "prod"
    monkeypatch.setenv("KEEL_NAMESPACE", "churn_experiment")
    assert settings().namespace == settings(env="prod", **_deployed()).namespace == "churn_experiment"


def _deployed() -> dict:
    return {
        "lake_root": DEPLOYED["KEEL_LAKE_ROOT"],
        "online_store_url": DEPLOYED["KEEL_ONLINE_STORE_URL"],
        "alert_webhook_configured": True,
        "calendar_start": DEPLOYED["KEEL_CALENDAR_START"],
        "mlflow_tracking_uri": DEPLOYED["KEEL_MLFLOW_TRACKING_URI"],
    }


@pytest.mark.parametrize("name", ["Alice", "john.doe", "1st", "a" * 33, "x-y"])
def test_a_namespace_that_cannot_name_folders_keys_and_bentos_is_refused_by_name(monkeypatch, name):
    monkeypatch.setenv("KEEL_NAMESPACE", name)
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        settings()


def test_the_malformed_row_rate_of_the_source_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("KEEL_SIMULATOR_MALFORMED_ROWS_PER_DAY", "0")
    assert SimulatorSource.from_settings(settings(namespace="alice")).malformed_rows_per_day == 0


def test_the_calendar_is_the_configured_one_or_a_rolling_window_ending_yesterday(monkeypatch):
    monkeypatch.setenv("KEEL_CALENDAR_START", "2018-04-01")
    assert settings().first_day == date(2018, 4, 1)
    # The source's world starts with the calendar: there is no history before the first partition.
    assert SimulatorSource.from_settings(settings(namespace="alice")).start_date == "2018-04-01"
    monkeypatch.delenv("KEEL_CALENDAR_START")
    rolling = settings()
    assert rolling.first_day == rolling.today() - timedelta(days=keel_settings.DEFAULT_CALENDAR_DAYS)
    assert rolling.last_day == rolling.today() - timedelta(days=1) and rolling.calendar_end is None


def test_a_calendar_that_ends_has_its_last_day_and_no_end_before_its_start(monkeypatch):
    monkeypatch.setenv("KEEL_CALENDAR_START", "2018-04-01")
    monkeypatch.setenv("KEEL_CALENDAR_END", "2018-09-30")
    assert settings().last_day == date(2018, 9, 30)  # a replayed world: its days, not eight years
    monkeypatch.setenv("KEEL_CALENDAR_END", "2018-03-31")
    with pytest.raises(ValueError, match="KEEL_CALENDAR_END=2018-03-31 is before the calendar's first day"):
        settings()


def test_settings_chosen_at_start_up_are_the_process_s_and_cannot_change_afterwards(monkeypatch):
    monkeypatch.setattr(keel_settings, "_current", None)
    chosen = keel_settings.use(settings(namespace="alice"))
    assert keel_settings.current() is chosen
    # Another namespace is fine (a client, a command run in the same process); another calendar is not.
    assert keel_settings.use(settings(namespace="bob")).namespace == "bob"
    with pytest.raises(RuntimeError, match="already built its calendar"):
        keel_settings.use(settings(calendar_start="2018-04-01"))


@pytest.mark.parametrize("name", ["staging", "prod"])
def test_deployed_environments_keep_the_lake_on_s3(monkeypatch, name):
    for variable, value in DEPLOYED.items():
        monkeypatch.setenv(variable, value)
    deployed = settings(env=name)
    resources = resources_for(deployed)
    assert isinstance(resources["lake"], S3Lake)
    # The webhook's URL is a secret: Dagster reads it from the environment, the UI shows its name.
    assert isinstance(resources["alerts"], WebhookAlerts)
    assert resources["alerts"].url == dg.EnvVar("KEEL_ALERT_WEBHOOK_URL")
    assert (resources["lake"].bucket, resources["lake"].prefix) == ("bucket", "some/prefix/namespaces/prod")
    assert resources["lake"].uri == "s3://bucket/some/prefix/namespaces/prod"
    assert resources["landing"].lake.uri == "s3://bucket/some/prefix"
    assert resources["dbt"].target == name
    assert resources["online_store"].url == "redis://redis:6379/0"
    service = service_settings(deployed)
    assert (
        service["KEEL_PREDICTION_LOG_URI"] == "s3://bucket/some/prefix/namespaces/prod/prediction_log_spool"
    )
    assert service["KEEL_NAMESPACE"] == "prod"
    # The warehouse: a DuckLake in the catalog database, the namespace's schema, data in its lake folder.
    warehouse = resources["warehouse"].location
    assert (warehouse.catalog, warehouse.metadata_schema) == (DEPLOYED["KEEL_WAREHOUSE_CATALOG"], "keel_prod")
    assert warehouse.data_path == "s3://bucket/some/prefix/namespaces/prod/warehouse/"
    assert (
        resources["dbt"].environment
        | {
            "KEEL_WAREHOUSE_CATALOG": warehouse.catalog,
            "KEEL_WAREHOUSE_DATA_PATH": warehouse.data_path,
            "KEEL_WAREHOUSE_METADATA_SCHEMA": "keel_prod",
        }
        == resources["dbt"].environment
    )


@pytest.mark.parametrize("name", ["staging", "prod"])
@pytest.mark.parametrize(
    "missing",
    ["KEEL_ONLINE_STORE_URL", "KEEL_ALERT_WEBHOOK_URL", "KEEL_CALENDAR_START", "KEEL_WAREHOUSE_CATALOG"],
)
def test_deployed_environments_refuse_to_guess_a_setting_they_need(monkeypatch, name, missing):
    for variable, value in DEPLOYED.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv(missing)
    with pytest.raises(ValueError, match=missing):
        resources_for(settings(env=name))


def test_local_alerts_go_to_the_log_and_the_retraining_policy_to_the_environment(monkeypatch):
    monkeypatch.setenv("KEEL_RETRAIN_AFTER_LABELLED_DAYS", "3")
    resources = resources_for(settings(namespace="alice"))
    assert isinstance(resources["alerts"], LogAlerts)
    assert resources["retraining"].policy().labelled_days == 3


@pytest.mark.parametrize("lake_root", [None, "/data/lake"])
def test_prod_refuses_a_lake_that_is_not_on_s3(monkeypatch, lake_root):
    for variable, value in DEPLOYED.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("KEEL_LAKE_ROOT")
    if lake_root is not None:
        monkeypatch.setenv("KEEL_LAKE_ROOT", lake_root)
    with pytest.raises(ValueError, match="KEEL_LAKE_ROOT"):
        settings(env="prod")


def test_an_unknown_environment_has_no_settings():
    with pytest.raises(ValueError, match="env"):
        settings(env="dev")


def test_a_refused_setting_is_named_and_its_value_never_repeated(monkeypatch):
    monkeypatch.setenv("KEEL_SIMULATOR_CUSTOMERS", "secret-looking-value")
    with pytest.raises(ValueError, match="simulator_customers") as refused:
        settings()
    assert "secret-looking-value" not in str(refused.value)


def test_a_missing_warehouse_is_named_in_the_error(tmp_path):
    path = tmp_path / "missing.duckdb"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        Warehouse(path=str(path)).row_count("x")
    assert not path.exists()


def test_the_warehouse_counts_the_rows_of_a_relation(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("create table x as select * from range(3)")
    assert Warehouse(path=str(path)).row_count("x") == 3


def test_fraud_labels_are_those_of_the_transactions_a_label_delay_earlier():
    day = START + timedelta(days=10)
    labels = SMALL_SOURCE.fraud_labels(day)
    transactions = SMALL_SOURCE.transactions(day - timedelta(days=SMALL_SOURCE.label_delay_days))
    assert SMALL_SOURCE.label_delay_days == 7
    assert not labels.empty
    assert labels["transaction_id"].tolist() == transactions["transaction_id"].tolist()


@pytest.mark.parametrize("offset, has_labels", [(0, False), (6, False), (7, True)])
def test_no_labels_are_known_before_a_label_delay_after_the_start(offset, has_labels):
    assert SMALL_SOURCE.fraud_labels(START + timedelta(days=offset)).empty is not has_labels


def test_source_customers_do_not_expose_the_simulator_internals():
    customers = SMALL_SOURCE.customers()
    assert "nearby_terminal_count" not in customers.columns
    assert len(customers) == SMALL_SOURCE.n_customers


@pytest.mark.parametrize("name", ["KEEL_LAKE_ROOT", "KEEL_WAREHOUSE_DIR"])
def test_a_relative_path_setting_is_refused_because_dagster_and_dbt_would_resolve_it_differently(
    monkeypatch, name
):
    monkeypatch.setenv(name, "data/somewhere")
    with pytest.raises(ValueError, match=f"{name}='data/somewhere' must be an absolute path"):
        settings()


def test_a_warehouse_catalog_is_refused_locally_where_dbt_builds_the_duckdb_file(monkeypatch):
    monkeypatch.setenv("KEEL_WAREHOUSE_CATALOG", "postgres:dbname=keel_warehouse host=localhost")
    with pytest.raises(ValueError, match="KEEL_WAREHOUSE_CATALOG is for staging and prod"):
        settings()


def test_a_warehouse_catalog_holding_a_password_is_refused_without_repeating_it(monkeypatch):
    monkeypatch.setenv("KEEL_ENV", "prod")
    for variable, value in DEPLOYED.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("KEEL_WAREHOUSE_CATALOG", "postgres:dbname=w host=h password=hunter2")
    with pytest.raises(ValueError, match="must not hold a password") as refused:
        settings()
    assert "hunter2" not in str(refused.value)
