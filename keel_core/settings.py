"""Keel's settings: one typed object, read once when a process starts, then passed down.

Every ``KEEL_*`` variable a process reads is a field here (``.env.example`` lists them with their
meaning). Values come from the process environment, else from the repository's git-ignored
``.env``, else the defaults below; nothing in Keel writes ``os.environ`` to hand a value on. The
code location (``resources/environments.py``) builds its resources from a ``Settings``; dbt's child
process gets an environment built from it (``Settings.dbt_environment``); the command line builds
one from its options (``Settings(namespace=...)`` overrides the environment).

Secrets are not held here: the alert webhook's URL is read by Dagster itself (``dg.EnvVar``), so the
UI shows the variable's name, never its value; these settings only know whether it is set.

Pure module: pydantic only. No Dagster, no I/O beyond reading the environment and ``.env``.
"""

from __future__ import annotations

import getpass
import os
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel_core import parsing
from keel_core.warehouse_engine import WarehouseLocation

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = REPO_ROOT / ".keel"  # generated state of the local environment (git-ignored)
Environment = Literal["local", "staging", "prod"]
ENVIRONMENTS: tuple[Environment, ...] = ("local", "staging", "prod")
PRODUCTION_NAMESPACE = "prod"
# A namespace becomes a path segment, a DuckDB file name, a Redis key part and a Bento name.
NAMESPACE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Unless KEEL_CALENDAR_START says otherwise, the local calendar is a rolling sandbox: it starts this
# many days before today, which is the window `keel demo` simulates by default (keel/demo.py), so
# after the demo every partition the UI shows is materialized. Deployments set a fixed start.
DEFAULT_CALENDAR_DAYS = 66


class SettingsError(ValueError):
    """A setting with a value Keel cannot work with; the message names the variable."""


def check_namespace(name: str) -> str:
    if not NAMESPACE_PATTERN.fullmatch(name):
        raise SettingsError(
            f"namespace {name!r}: expected a lowercase letter then up to 31 lowercase letters, digits "
            "or underscores (it names folders, a DuckDB file, Redis keys and Bentos); "
            "set KEEL_NAMESPACE to choose one"
        )
    return name


def _absolute(name: str, value: str | None) -> str | None:
    if value is not None and not value.startswith("s3://") and not Path(value).is_absolute():
        # dbt would resolve it from dbt_project/ and Dagster from its working folder: two places.
        raise SettingsError(
            f"{name}={value!r} must be an absolute path (Dagster and dbt resolve relative "
            "paths from different folders)"
        )
    return value


class Settings(BaseSettings):
    """The deployment's settings (``KEEL_<FIELD>``; see ``.env.example``)."""

    model_config = SettingsConfigDict(
        env_prefix="KEEL_",
        env_file=REPO_ROOT / ".env",
        extra="ignore",
        frozen=True,
        validate_default=True,
        populate_by_name=True,  # Settings(webserver_url=...) as well as DAGSTER_WEBSERVER_URL
        hide_input_in_errors=True,  # an error names the setting, never the values (secrets among them)
    )

    env: Environment = "local"
    # Whose data a run reads and writes: `prod` when deployed, the login name on a laptop.
    namespace: str = ""
    # A folder locally, s3://bucket/prefix when deployed. Default: <repo>/.keel/lake.
    lake_root: str | None = None
    # The folder of the namespaces' DuckDB files (the local warehouse). Default: <repo>/.keel/warehouse.
    warehouse_dir: str | None = None
    # The DuckLake catalog of staging and prod's warehouse: libpq's connection string of its PostgreSQL
    # database, `postgres:dbname=... host=... user=...` (the password is PGPASSWORD's, from a Secret).
    # Its data go under each namespace's lake folder; each namespace has a metadata schema of its own.
    warehouse_catalog: str | None = None
    # The IANA zone the lake's timestamps are wall times of; a day's partition is that day there.
    time_zone: str = parsing.DEFAULT_TIME_ZONE
    # The first day of the daily partitions. Default: DEFAULT_CALENDAR_DAYS before today (locally).
    calendar_start: date | None = None
    # The last day of the daily partitions, for a world that ends (a replayed period, a demo's world):
    # its UI shows exactly those days. Default: none, the calendar runs up to yesterday.
    calendar_end: date | None = None
    online_store_url: str | None = None  # redis://... when deployed; locally one SQLite file per namespace
    # MLflow's tracking store: postgresql+psycopg2://... when deployed; locally a SQLite file.
    mlflow_tracking_uri: str | None = None
    # Where people open MLflow's UI (the model asset links each training there). Locally `make mlflow`.
    mlflow_ui_url: str | None = None
    lake_public_url: str | None = None  # where browsers open the lake's reports (`make dev` sets it)
    webserver_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DAGSTER_WEBSERVER_URL", "KEEL_WEBSERVER_URL")
    )
    alert_webhook_configured: bool = Field(
        default=False, validation_alias=AliasChoices("KEEL_ALERT_WEBHOOK_URL")
    )
    retrain_after_labelled_days: int = Field(default=7, ge=1)
    # The simulator, the source system of the demo world; another seed is another world of the same kind.
    simulator_seed: int = 42
    simulator_customers: int = Field(default=5_000, ge=1)
    simulator_terminals: int = Field(default=10_000, ge=1)
    simulator_malformed_rows_per_day: int = Field(default=3, ge=0)
    simulator_drift_start: date | None = None
    simulator_drift_amount_scale: float = Field(default=1.0, gt=0)
    simulator_drift_card_testing: bool = False

    @field_validator("alert_webhook_configured", mode="before")
    @classmethod
    def _set(cls, value) -> bool:
        return bool(value)

    @field_validator("time_zone")
    @classmethod
    def _a_zone(cls, name: str) -> str:
        try:
            parsing.time_zone(name)
        except ValueError as error:
            raise SettingsError(f"KEEL_TIME_ZONE={name!r}: {error}") from None
        return name

    @field_validator("warehouse_catalog")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        # dbt's command line, Dagster's resource config and DuckDB's errors all show this string.
        if value and re.search(r"\b(password|passfile)\s*=", value, re.IGNORECASE):
            raise SettingsError(
                "KEEL_WAREHOUSE_CATALOG must not hold a password: it is shown in logs and the UI; "
                "set PGPASSWORD (a Secret) instead"
            )
        return value

    @field_validator("lake_root", "warehouse_dir")
    @classmethod
    def _absolute_paths(cls, value: str | None, info) -> str | None:
        return _absolute(f"KEEL_{info.field_name.upper()}", value)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if not self.namespace:
            login = os.environ.get("USER") or getpass.getuser()
            object.__setattr__(self, "namespace", PRODUCTION_NAMESPACE if self.deployed else login)
        check_namespace(self.namespace)
        if self.calendar_end and self.calendar_end < self.first_day:
            raise SettingsError(
                f"KEEL_CALENDAR_END={self.calendar_end} is before the calendar's first day {self.first_day}"
            )
        if self.warehouse_catalog and not self.deployed:
            # dbt's local target builds the DuckDB file: a catalog here would split the warehouse in two.
            raise SettingsError(
                "KEEL_WAREHOUSE_CATALOG is for staging and prod: locally the warehouse is the "
                "namespace's DuckDB file (KEEL_WAREHOUSE_DIR)"
            )
        if self.deployed and not (self.lake_root or "").startswith("s3://"):
            raise SettingsError(
                f"KEEL_ENV={self.env} keeps the lake on S3: set KEEL_LAKE_ROOT=s3://bucket/prefix"
            )
        return self

    def require(self, *names: str) -> Settings:
        """These settings, or an error naming each that a deployment must set and did not; a
        process checks those it uses (the code location all of them, `keel serve` its own)."""
        deployed_needs = {
            "online_store_url": "KEEL_ONLINE_STORE_URL=redis://...",
            "alert_webhook_configured": "KEEL_ALERT_WEBHOOK_URL",
            "calendar_start": "KEEL_CALENDAR_START=YYYY-MM-DD",
            "mlflow_tracking_uri": "KEEL_MLFLOW_TRACKING_URI=postgresql+psycopg2://...",
            "warehouse_catalog": "KEEL_WAREHOUSE_CATALOG=postgres:dbname=... host=... user=...",
        }
        if self.deployed and (missing := [deployed_needs[n] for n in names if not getattr(self, n)]):
            raise SettingsError(f"KEEL_ENV={self.env} needs {', '.join(missing)}")
        return self

    # Derived values ------------------------------------------------------------------------------

    @property
    def deployed(self) -> bool:
        return self.env != "local"

    @property
    def lake_uri(self) -> str:
        """The environment's lake root (landing zone and namespaces below it)."""
        return self.lake_root or str(STATE_DIR / "lake")

    @property
    def warehouse_path(self) -> str:
        """The namespace's DuckDB file, ``<warehouse dir>/<namespace>.duckdb`` (dbt's profile agrees)."""
        return str(Path(self.warehouse_dir or STATE_DIR / "warehouse", f"{self.namespace}.duckdb"))

    @property
    def warehouse(self) -> WarehouseLocation:
        """The namespace's warehouse: a DuckLake when a catalog is set (staging, prod), else its file."""
        if not self.warehouse_catalog:
            return WarehouseLocation(file=self.warehouse_path, s3=self.lake_uri.startswith("s3://"))
        return WarehouseLocation(
            catalog=self.warehouse_catalog,
            data_path=f"{self.lake_uri.rstrip('/')}/namespaces/{self.namespace}/warehouse/",
            metadata_schema=f"keel_{self.namespace}",
            s3=self.lake_uri.startswith("s3://"),
        )

    @property
    def online_store(self) -> str:
        """Where the online features live: the configured URL, or locally a SQLite file per namespace."""
        return (
            self.online_store_url or f"sqlite:///{STATE_DIR / 'online_features' / f'{self.namespace}.sqlite'}"
        )

    @property
    def mlflow(self) -> str:
        """MLflow's tracking store: the configured URI, or locally one SQLite file for every namespace
        (each has its own experiments)."""
        return self.mlflow_tracking_uri or f"sqlite:///{STATE_DIR / 'mlflow' / 'mlflow.db'}"

    @property
    def first_day(self) -> date:
        """The calendar's first day: the configured one, else ``DEFAULT_CALENDAR_DAYS`` before today."""
        return self.calendar_start or self.today() - timedelta(days=DEFAULT_CALENDAR_DAYS)

    @property
    def last_day(self) -> date:
        """The calendar's newest day that can have data: yesterday, or its end if it ends before."""
        yesterday = self.today() - timedelta(days=1)
        return min(self.calendar_end, yesterday) if self.calendar_end else yesterday

    def today(self) -> date:
        """Today in the platform's time zone: its partition is the first that has not ended."""
        return datetime.now(parsing.time_zone(self.time_zone)).date()

    def dbt_environment(self) -> dict[str, str]:
        """What dbt's profile and sources read (dbt_project/profiles.yml), for dbt's child process."""
        warehouse = self.warehouse
        if not warehouse.is_lake:
            where = {"KEEL_WAREHOUSE_DIR": str(Path(self.warehouse_path).parent)}
        else:
            where = {
                "KEEL_WAREHOUSE_CATALOG": warehouse.catalog,
                "KEEL_WAREHOUSE_DATA_PATH": warehouse.data_path,
                "KEEL_WAREHOUSE_METADATA_SCHEMA": warehouse.metadata_schema,
            }
        return {
            "KEEL_ENV": self.env,
            "KEEL_NAMESPACE": self.namespace,
            "KEEL_LAKE_ROOT": self.lake_uri,
            **where,
        }


_current: Settings | None = None
CODE_LOCATION_NEEDS = (
    "online_store_url",
    "alert_webhook_configured",
    "calendar_start",
    "mlflow_tracking_uri",
    "warehouse_catalog",
)


def current() -> Settings:
    """This process's settings: those its start-up chose (``use``), else read from the environment
    on first use. Module-level definitions (the calendar's partitions) are built from them."""
    global _current
    if _current is None:
        _current = Settings()
    return _current


def use(settings: Settings) -> Settings:
    """Make ``settings`` this process's, at start-up (the ``keel`` command, from its options), before
    anything has read them: definitions built from other settings would not change."""
    global _current
    calendar = (settings.first_day, settings.calendar_end, settings.time_zone)
    if _current is not None and (_current.first_day, _current.calendar_end, _current.time_zone) != calendar:
        raise RuntimeError(
            "this process already built its calendar from other settings; choose them before loading Keel"
        )
    _current = settings
    return settings
