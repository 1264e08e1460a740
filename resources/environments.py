"""The one place that knows which environment and namespace this is, and binds the resources.

``KEEL_ENV`` is one of ``local`` (default), ``staging`` or ``prod``: the same names are the dbt
targets in ``dbt_project/profiles.yml`` and the Helm values files in ``deploy/``.

``KEEL_NAMESPACE`` says whose data a run writes: ``prod`` for the production pipeline (the default
in staging and prod), a person's own (the login name, the default locally), or any name for an
experiment. The environment's landing zone (what the source system delivered) is shared; everything
Keel writes is the namespace's own::

    <KEEL_LAKE_ROOT>/landing/                  deliveries, read by every namespace
    <KEEL_LAKE_ROOT>/namespaces/<namespace>/   its lake tables, registry, reports, Bento archives, log
    <KEEL_WAREHOUSE_DIR>/<namespace>.duckdb    its warehouse (dbt and Keel's ``ml`` schema)
    online store keys under ``{keel:<namespace>}``, Bentos named ``fraud_scorer_<namespace>``

so a data scientist runs the whole pipeline on production's deliveries without touching what
production built, and a model reaches production only through the gate of a ``prod`` run. Assets
never ask which environment or namespace they run in; they receive resources.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from keel import parsing
from resources.alerts import Alerts, LogAlerts, WebhookAlerts
from resources.calendar import Calendar
from resources.dbt import REPO_ROOT, DbtCli, dbt_project
from resources.lake import Lake, LocalLake
from resources.namespace import Namespace
from resources.online_store import OnlineFeatureStore
from resources.registry import ModelRegistry
from resources.retraining import Retraining
from resources.sources import LandingZone, SimulatorSource
from resources.warehouse import Warehouse
from serving.prediction_log import SPOOL as PREDICTION_LOG_SPOOL

ENVIRONMENTS = ("local", "staging", "prod")
STATE_DIR = REPO_ROOT / ".keel"  # generated state of the local environment (git-ignored)
PRODUCTION_NAMESPACE = "prod"
# A namespace becomes a path segment, a DuckDB file name, a Redis key part and a Bento name.
NAMESPACE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
LANDING_PREFIX = "landing"


def current_environment() -> str:
    environment = os.environ.get("KEEL_ENV", "local")
    if environment not in ENVIRONMENTS:
        raise ValueError(f"KEEL_ENV={environment!r}: expected one of {', '.join(ENVIRONMENTS)}")
    return environment


def current_namespace(environment: str | None = None) -> str:
    """``KEEL_NAMESPACE``; otherwise ``prod`` when deployed, and the login name on a laptop."""
    environment = environment or current_environment()
    name = os.environ.get("KEEL_NAMESPACE") or (
        PRODUCTION_NAMESPACE if environment != "local" else os.environ.get("USER") or getpass.getuser()
    )
    return check_namespace(name)


def check_namespace(name: str) -> str:
    if not NAMESPACE_PATTERN.fullmatch(name):
        raise ValueError(
            f"namespace {name!r}: expected a lowercase letter then up to 31 lowercase letters, digits "
            "or underscores (it names folders, a DuckDB file, Redis keys and Bentos); "
            "set KEEL_NAMESPACE to choose one"
        )
    return name


def _absolute_path_setting(name: str, default: Path) -> str:
    value = os.environ.get(name)
    if value is None:
        return str(default)
    if not Path(value).is_absolute():
        # dbt would resolve it from dbt_project/ and Dagster from its working folder: two places.
        raise ValueError(
            f"{name}={value!r} must be an absolute path (Dagster and dbt resolve relative "
            "paths from different folders)"
        )
    return value


def local_lake_root() -> str:
    return _absolute_path_setting("KEEL_LAKE_ROOT", STATE_DIR / "lake")


def warehouse_path(namespace: str) -> str:
    """The namespace's DuckDB file, ``<KEEL_WAREHOUSE_DIR>/<namespace>.duckdb`` (dbt's profile agrees)."""
    folder = Path(_absolute_path_setting("KEEL_WAREHOUSE_DIR", STATE_DIR / "warehouse"))
    folder.mkdir(parents=True, exist_ok=True)  # DuckDB (and so dbt) creates the file, not its folder
    return str(folder / f"{check_namespace(namespace)}.duckdb")


def online_store_url(environment: str, namespace: str) -> str:
    """Where the online features live: ``KEEL_ONLINE_STORE_URL`` (a Redis shared by namespaces, each
    under its own keys), or locally one SQLite file per namespace in .keel/."""
    _check(environment)
    url = os.environ.get("KEEL_ONLINE_STORE_URL")
    if url:
        return url
    if environment != "local":
        raise ValueError(
            f"KEEL_ENV={environment} serves features from Redis: set KEEL_ONLINE_STORE_URL=redis://..."
        )
    return f"sqlite:///{STATE_DIR / 'online_features' / f'{check_namespace(namespace)}.sqlite'}"


def platform_time_zone() -> str:
    """``KEEL_TIME_ZONE``: the IANA zone the lake's timestamps are wall times of (default UTC)."""
    name = os.environ.get("KEEL_TIME_ZONE") or parsing.DEFAULT_TIME_ZONE
    try:
        parsing.time_zone(name)
    except ValueError as error:
        raise ValueError(f"KEEL_TIME_ZONE={name!r}: {error}") from None
    return name


def service_settings(environment: str, namespace: str) -> dict[str, str]:
    """The settings the scoring service reads (serving/service.py), for ``keel serve`` and the tests."""
    lake = lake_for(environment, namespace)
    return {
        "KEEL_ENV": environment,  # staging and prod refuse to serve without API keys (serving/auth.py)
        "KEEL_NAMESPACE": namespace,  # the online store's keys
        "KEEL_TIME_ZONE": platform_time_zone(),  # timestamps are judged as the lake judges them
        "KEEL_ONLINE_STORE_URL": online_store_url(environment, namespace),
        "KEEL_PREDICTION_LOG_URI": f"{lake.uri}/{PREDICTION_LOG_SPOOL}",
    }


def _check(environment: str) -> None:
    if environment not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {environment!r}: expected one of {', '.join(ENVIRONMENTS)}")


def lake_for(environment: str, namespace: str) -> Lake:
    """The namespace's own lake: ``<KEEL_LAKE_ROOT>/namespaces/<namespace>``."""
    return _lake(environment, f"namespaces/{check_namespace(namespace)}")


def landing_lake_for(environment: str) -> Lake:
    """The root of the environment's lake, where the landing zone is: shared by every namespace."""
    return _lake(environment, "")


def _lake(environment: str, below: str) -> Lake:
    _check(environment)
    # Where people open the lake's reports in a browser (optional; `make dev` sets it locally).
    public_base_url = os.environ.get("KEEL_LAKE_PUBLIC_URL") or None
    if public_base_url and below:
        public_base_url = f"{public_base_url.rstrip('/')}/{below}"
    if environment == "local":
        return LocalLake(root=str(Path(local_lake_root(), below)), public_base_url=public_base_url)
    else:
        lake_root = os.environ.get("KEEL_LAKE_ROOT", "")
        if not lake_root.startswith("s3://"):
            raise ValueError(
                f"KEEL_ENV={environment} keeps the lake on S3: set KEEL_LAKE_ROOT=s3://bucket/prefix"
            )
        # Here, not at the top: dagster-aws takes seconds to import and the local environment never needs it.
        from dagster_aws.s3 import S3Resource

        from resources.s3_lake import S3Lake

        bucket, _, prefix = lake_root.removeprefix("s3://").partition("/")
        return S3Lake(
            public_base_url=public_base_url,
            bucket=bucket,
            prefix="/".join(part for part in (prefix.strip("/"), below) if part),
            # Endpoint and credentials from the AWS chain (AWS_ENDPOINT_URL_S3 for any S3-compatible
            # server): boto3 here, s3fs in dbt and pyarrow in the service read the same variables.
            s3=S3Resource(),
        )


def registry_for(environment: str, namespace: str) -> ModelRegistry:
    """The model registry alone (what `keel models` needs, without dbt or the warehouse)."""
    return ModelRegistry(lake=lake_for(environment, namespace))


def resources_for(environment: str, namespace: str) -> dict[str, Any]:
    """The resources of ``environment`` for ``namespace``, keyed by the parameter names assets use."""
    lake = lake_for(environment, namespace)
    return {
        "namespace": Namespace(name=namespace, environment=environment),
        "calendar": Calendar(time_zone=platform_time_zone()),
        "lake": lake,
        "warehouse": Warehouse(path=warehouse_path(namespace)),
        "registry": ModelRegistry(lake=lake),
        "online_store": OnlineFeatureStore(url=online_store_url(environment, namespace), namespace=namespace),
        # The dbt of this Python environment, found without relying on PATH (a bare `.venv/bin/keel`).
        "dbt": DbtCli(
            project_dir=dbt_project,
            target=environment,
            dbt_executable=str(Path(sys.executable).with_name("dbt")),
        ),
        # Ingestion reads what landed in the environment's landing zone; the source system delivers there.
        "landing": LandingZone(lake=landing_lake_for(environment)),
        "upstream": upstream_source(),
        "alerts": alerts_for(environment),
        "retraining": Retraining(
            labelled_days=int(os.environ.get("KEEL_RETRAIN_AFTER_LABELLED_DAYS", Retraining().labelled_days))
        ),
    }


def alerts_for(environment: str) -> Alerts:
    """A webhook (``KEEL_ALERT_WEBHOOK_URL``), required outside ``local``; locally the log unless set."""
    url = os.environ.get("KEEL_ALERT_WEBHOOK_URL")
    if url:
        return WebhookAlerts(url=url)
    if environment != "local":
        raise ValueError(f"KEEL_ENV={environment} sends alerts to a webhook: set KEEL_ALERT_WEBHOOK_URL")
    return LogAlerts()


def upstream_source() -> SimulatorSource:
    """The source system that delivers into the landing zone: the simulator, with its knobs from
    ``KEEL_SIMULATOR_*`` (drift: ``KEEL_SIMULATOR_DRIFT_START`` and what changes from then on)."""
    return SimulatorSource(
        n_customers=int(os.environ.get("KEEL_SIMULATOR_CUSTOMERS", "5000")),
        n_terminals=int(os.environ.get("KEEL_SIMULATOR_TERMINALS", "10000")),
        malformed_rows_per_day=int(os.environ.get("KEEL_SIMULATOR_MALFORMED_ROWS_PER_DAY", "3")),
        drift_start=os.environ.get("KEEL_SIMULATOR_DRIFT_START") or None,
        drift_amount_scale=float(os.environ.get("KEEL_SIMULATOR_DRIFT_AMOUNT_SCALE", "1.0")),
        drift_card_testing=os.environ.get("KEEL_SIMULATOR_DRIFT_CARD_TESTING", "false").lower() == "true",
    )


def executor_for(environment: str) -> dg.ExecutorDefinition:
    """Locally a run executes its steps in one process: a process per step would import the code
    location again each time (5-8 s on two cores, more than most steps take), and DuckDB allows
    one writer anyway. Deployed, one Kubernetes pod per step (``k8s_job_executor``), sized by the
    step's own op tags (``platform_assets/defs/steps.py``) and labelled with the environment."""
    _check(environment)
    if environment == "local":
        return dg.in_process_executor
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config(environment), name="k8s")


def k8s_executor_config(environment: str) -> dict[str, Any]:
    """What the Kubernetes executor adds to every step pod of ``environment``; the rest (image,
    secrets, volumes, namespace) comes from the Helm release's run launcher (deploy/helm)."""
    return {"labels": {"app.kubernetes.io/part-of": "keel", "keel.dev/environment": environment}}


def environment_definitions() -> dg.Definitions:
    environment = current_environment()
    namespace = current_namespace(environment)
    # dbt runs as a child process and finds the namespace's lake and warehouse from this variable
    # (dbt_project/profiles.yml): pin the namespace resolved here, so both always agree.
    os.environ["KEEL_NAMESPACE"] = namespace
    return dg.Definitions(resources=resources_for(environment, namespace), executor=executor_for(environment))


def dagster_home_for(namespace: str) -> str:
    """The folder of ``namespace``'s Dagster instance: DAGSTER_HOME for this shell's namespace (or
    when deployed, where the instance is the deployment's), else its folder in .keel/."""
    home = os.environ.get("DAGSTER_HOME")
    if home and (namespace == current_namespace() or current_environment() != "local"):
        return home
    return str(STATE_DIR / "dagster" / check_namespace(namespace))


def use_local_homes() -> None:
    """Point Dagster and BentoML at the repo's .keel/ folder unless told otherwise, as ``make`` does,
    so that ``keel`` commands run outside ``make`` see the same runs and the same model store. Each
    namespace has its own Dagster instance: its runs, and the history its sensors read."""
    namespace = current_namespace()
    os.environ["KEEL_NAMESPACE"] = namespace
    os.environ.setdefault("DAGSTER_HOME", dagster_home_for(namespace))
    os.environ.setdefault("BENTOML_HOME", str(STATE_DIR / "bentoml"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # no usage reporting from a platform's runs
