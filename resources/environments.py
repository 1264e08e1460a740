"""The one place that binds Keel's resources to a deployment's settings (``keel_core.settings.Settings``).

``KEEL_ENV`` is one of ``local`` (default), ``staging`` or ``prod``: the same names are the dbt
targets in ``dbt_project/profiles.yml`` and the Helm values files in ``deploy/``.

``KEEL_NAMESPACE`` says whose data a run writes: ``prod`` for the production pipeline (the default
in staging and prod), a person's own (the login name, the default locally), or any name for an
experiment. The environment's landing zone (what the source system delivered) is shared; everything
Keel writes is the namespace's own::

    <KEEL_LAKE_ROOT>/landing/                  deliveries, read by every namespace
    <KEEL_LAKE_ROOT>/namespaces/<namespace>/   its lake tables, registry, reports, Bento archives, log
    <KEEL_WAREHOUSE_DIR>/<namespace>.duckdb    its warehouse locally (dbt and Keel's ``ml`` schema); staging
                                               and prod: a DuckLake (KEEL_WAREHOUSE_CATALOG), schema
                                               keel_<namespace>, data under the namespace's warehouse/
    online store keys under ``{keel:<namespace>}``, Bentos named ``<service>_<namespace>``

so a data scientist runs the whole pipeline on production's deliveries without touching what
production built, and a model reaches production only through the gate of a ``prod`` run. Assets
never ask which environment or namespace they run in; they receive resources.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import dagster as dg

from keel_core.prediction_log import SPOOL as PREDICTION_LOG_SPOOL
from keel_core.settings import CODE_LOCATION_NEEDS, Settings
from resources.alerts import Alerts, LogAlerts, WebhookAlerts
from resources.calendar import Calendar
from resources.dbt import DbtCli, dbt_project
from resources.experiments import ExperimentTracking
from resources.lake import Lake, LocalLake
from resources.namespace import Namespace
from resources.online_store import OnlineFeatureStore
from resources.registry import ModelRegistry
from resources.retraining import Retraining
from resources.sources import LandingZone
from resources.warehouse import Warehouse

LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"  # `make mlflow`


def service_settings(settings: Settings) -> dict[str, str]:
    """The environment of a scoring service serving ``settings``' namespace (``keel serve``, tests)."""
    settings.require("online_store_url")
    return {
        "KEEL_ENV": settings.env,  # staging and prod refuse to serve without API keys (serving/auth.py)
        "KEEL_NAMESPACE": settings.namespace,  # the online store's keys
        "KEEL_TIME_ZONE": settings.time_zone,  # timestamps are judged as the lake judges them
        "KEEL_ONLINE_STORE_URL": settings.online_store,
        "KEEL_PREDICTION_LOG_URI": f"{lake_for(settings).uri}/{PREDICTION_LOG_SPOOL}",
    }


def lake_for(settings: Settings) -> Lake:
    """The namespace's own lake: ``<KEEL_LAKE_ROOT>/namespaces/<namespace>``."""
    return _lake(settings, f"namespaces/{settings.namespace}")


def landing_lake_for(settings: Settings) -> Lake:
    """The root of the environment's lake, where the landing zone is: shared by every namespace."""
    return _lake(settings, "")


def _lake(settings: Settings, below: str) -> Lake:
    # Where people open the lake's reports in a browser (optional; `make dev` sets it locally).
    public_base_url = settings.lake_public_url
    if public_base_url and below:
        public_base_url = f"{public_base_url.rstrip('/')}/{below}"
    if not settings.deployed:
        return LocalLake(root=str(Path(settings.lake_uri, below)), public_base_url=public_base_url)
    # Here, not at the top: dagster-aws takes seconds to import and the local environment never needs it.
    from dagster_aws.s3 import S3Resource

    from resources.s3_lake import S3Lake

    bucket, _, prefix = settings.lake_uri.removeprefix("s3://").partition("/")
    return S3Lake(
        public_base_url=public_base_url,
        bucket=bucket,
        prefix="/".join(part for part in (prefix.strip("/"), below) if part),
        # Endpoint and credentials from the AWS chain (AWS_ENDPOINT_URL_S3 for any S3-compatible
        # server): boto3 here, DuckDB (keel_core/warehouse_engine.py) and pyarrow read the same variables.
        s3=S3Resource(),
    )


def registry_for(settings: Settings) -> ModelRegistry:
    """The model registry alone (what `keel models` needs, without dbt or the warehouse)."""
    return ModelRegistry(lake=lake_for(settings))


def resources_for(settings: Settings) -> dict[str, Any]:
    """The resources of ``settings``' environment and namespace, keyed by the parameter names assets use."""
    settings.require(*CODE_LOCATION_NEEDS)
    lake = lake_for(settings)
    if not settings.warehouse.is_lake:  # DuckDB creates files, not folders
        Path(settings.warehouse_path).parent.mkdir(parents=True, exist_ok=True)
    return {
        "namespace": Namespace(name=settings.namespace, environment=settings.env),
        "calendar": Calendar(time_zone=settings.time_zone),
        "lake": lake,
        "warehouse": Warehouse.at(settings.warehouse),
        "registry": ModelRegistry(lake=lake),
        "experiments": experiments_for(settings),
        "online_store": OnlineFeatureStore(url=settings.online_store, namespace=settings.namespace),
        # The dbt of this Python environment, found without relying on PATH (a bare `.venv/bin/keel`),
        # started with the namespace's lake and warehouse in its environment (dbt_project/profiles.yml).
        "dbt": DbtCli(
            project_dir=dbt_project,
            target=settings.env,
            dbt_executable=str(Path(sys.executable).with_name("dbt")),
            environment=settings.dbt_environment(),
        ),
        # Ingestion reads what landed in the environment's landing zone; the source system delivers there.
        "landing": LandingZone(lake=landing_lake_for(settings)),
        "alerts": alerts_for(settings),
        "retraining": Retraining(labelled_days=settings.retrain_after_labelled_days),
    }


def experiments_for(settings: Settings) -> ExperimentTracking:
    """MLflow: the environment's tracking store, the namespace's lake for the artifacts."""
    if settings.mlflow.startswith("sqlite:///"):  # SQLite creates files, not folders
        Path(settings.mlflow.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return ExperimentTracking(
        tracking_uri=settings.mlflow,
        artifact_root=f"{lake_for(settings).uri}/mlflow",
        namespace=settings.namespace,
        ui_url=settings.mlflow_ui_url or (None if settings.deployed else LOCAL_MLFLOW_UI),
    )


def alerts_for(settings: Settings) -> Alerts:
    """A webhook (``KEEL_ALERT_WEBHOOK_URL``, required when deployed); locally the log unless set.
    The URL is a secret: Dagster reads it from the environment (``dg.EnvVar``), the UI shows its name."""
    if settings.alert_webhook_configured:
        return WebhookAlerts(url=dg.EnvVar("KEEL_ALERT_WEBHOOK_URL"))
    return LogAlerts()


def executor_for(settings: Settings) -> dg.ExecutorDefinition:
    """Locally a run executes its steps in one process: a process per step would import the code
    location again each time (5-8 s on two cores, more than most steps take), and DuckDB allows
    one writer anyway. Deployed, one Kubernetes pod per step (``k8s_job_executor``), sized by the
    step's own op tags (``platform_assets/steps.py``) and labelled with the environment."""
    if not settings.deployed:
        return dg.in_process_executor
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config(settings.env), name="k8s")


def k8s_executor_config(environment: str) -> dict[str, Any]:
    """What the Kubernetes executor adds to every step pod of ``environment``; the rest (image,
    secrets, volumes, namespace) comes from the Helm release's run launcher (deploy/helm)."""
    return {"labels": {"app.kubernetes.io/part-of": "keel", "keel.dev/environment": environment}}


def environment_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(resources=resources_for(settings), executor=executor_for(settings))
