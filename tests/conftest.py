"""Shared test setup: tests choose their environment explicitly."""

import os
import shutil
import socket
import tempfile

import pytest

# The test worlds' calendar: their days are fixed (a world of 2026-01-01 on), not relative to today.
TEST_CALENDAR_START = "2026-01-01"

KEEL_SETTINGS = (
    "KEEL_ENV",
    "KEEL_TIME_ZONE",
    "KEEL_CALENDAR_END",
    "KEEL_LAKE_ROOT",
    "KEEL_NAMESPACE",
    "KEEL_WAREHOUSE_DIR",
    "AWS_ENDPOINT_URL_S3",
    "KEEL_SIMULATOR_MALFORMED_ROWS_PER_DAY",
    "KEEL_SIMULATOR_CUSTOMERS",
    "KEEL_SIMULATOR_SEED",
    "KEEL_SIMULATOR_TERMINALS",
    "KEEL_SIMULATOR_DRIFT_START",
    "KEEL_SIMULATOR_DRIFT_AMOUNT_SCALE",
    "KEEL_SIMULATOR_DRIFT_CARD_TESTING",
    "KEEL_LAKE_PUBLIC_URL",
    "KEEL_ALERT_WEBHOOK_URL",
    "KEEL_RETRAIN_AFTER_LABELLED_DAYS",
    "DAGSTER_WEBSERVER_URL",
    "KEEL_USER",
    "KEEL_ONLINE_STORE_URL",
    "KEEL_PREDICTION_LOG_URI",
    "KEEL_DECISION_THRESHOLD",
    "KEEL_ONLINE_STORE_TIMEOUT_SECONDS",
    "KEEL_ONLINE_STORE_RETRY_SECONDS",
    "KEEL_API_KEYS",
    "KEEL_API_KEYS_FILE",
    "BENTOML_CONFIG_OPTIONS",
    "KEEL_MLFLOW_TRACKING_URI",
    "KEEL_MLFLOW_UI_URL",
    "KEEL_WAREHOUSE_CATALOG",
)


# Test-process start-up, before any conftest below imports the code location (its partitions follow the
# calendar): a developer's shell settings must not leak into tests, and the calendar is the test worlds'.
for _name in KEEL_SETTINGS:
    os.environ.pop(_name, None)
os.environ["KEEL_CALENDAR_START"] = TEST_CALENDAR_START
# The tests' trainings are recorded in an MLflow store of their own, never in the repository's .keel/.
os.environ["KEEL_MLFLOW_TRACKING_URI"] = f"sqlite:///{tempfile.mkdtemp(prefix='keel-mlflow-')}/mlflow.db"


def require_service(name: str, host: str, port: int) -> None:
    """Skip unless ``name`` answers on host:port; under CI=true its absence is a failure instead."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError as error:
        reason = f"{name} is not reachable on {host}:{port} ({error})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI runs every service test")
    pytest.skip(reason)


def require_program(name: str) -> str:
    """The path of program ``name``; skips without it, and under CI=true its absence is a failure."""
    if path := shutil.which(name):
        return path
    reason = f"{name} is not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI runs every test")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _no_inherited_keel_settings(tmp_path_factory):
    """A developer's shell settings must not leak into tests (nor tests write into their .keel/).

    BentoML reads its home once per process, so the whole session shares one store in a temporary
    folder; each test's registry lives in its own lake, and the store is only a local copy.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name in KEEL_SETTINGS:
            patch.delenv(name, raising=False)
        patch.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml")))
        patch.setenv("DAGSTER_HOME", str(tmp_path_factory.mktemp("dagster_home")))
        patch.setenv("BENTOML_DO_NOT_TRACK", "true")
        yield


@pytest.fixture(scope="session")
def postgres_server() -> dict[str, object]:
    """The local PostgreSQL server (trust authentication); tests create and drop their own databases."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The local Redis server (database 15, which nothing else here uses); tests use their own prefixes."""
    require_service("Redis", "127.0.0.1", 6379)
    return "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def chromium_program() -> str:
    """Debian's Chromium, for the UI test (Playwright drives it; no browser is downloaded)."""
    return require_program("chromium")


@pytest.fixture(scope="session")
def redis_server_program() -> str:
    """The redis-server binary, for tests that need a Redis of their own to pause and kill."""
    return require_program("redis-server")
