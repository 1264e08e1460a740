"""Keel from a notebook or a script: assets' values, the model registry and runs, per namespace.

    from keel import client

    keel = client.connect()                      # your namespace (KEEL_NAMESPACE, else your login name)
    keel.assets()                                # every asset: group, partitions, where its value is
    keel.load("fraud/features", partition="2026-02-01")       # a DataFrame
    keel.load("fraud/drift", partition="2026-02-01")          # the drift metrics
    keel.models()                                # every model's versions, their stage and metrics
    model = keel.load_model(stage="production", model="fraud_detector")  # or tag="<model>:<version>"
    keel.run(run_id)                             # status, tags, timings, what it materialized

    prod = client.connect(namespace="prod")      # another namespace: read it, nothing is written

Where a value lives is declared on the asset, not kept here: ``keel/lake_table`` (a lake table, by
day if the asset is partitioned), ``dagster/table_name`` (a warehouse relation; with
``keel/partition_column``, by day). The value of any other asset is what its materialization
recorded (metrics, links, tags), read from the namespace's Dagster instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from platform_assets.storage import LAKE_TABLE, PARTITION_COLUMN, TABLE_NAME


class ClientError(LookupError):
    """An asset, partition, model or run the namespace does not have."""


@dataclass(frozen=True)
class Materialization:
    asset: str
    partition: str | None
    run_id: str
    at: datetime
    metadata: dict[str, Any]
    # Dagster's own lineage: the data version of this result and of every input it was made from
    # (dagster/data_version, dagster/input_data_version/<asset>, dagster/code_version).
    tags: dict[str, str]


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    job: str
    status: str
    tags: dict[str, str]
    started: datetime | None
    ended: datetime | None
    materializations: list[Materialization]

    @property
    def seconds(self) -> float | None:
        return (self.ended - self.started).total_seconds() if self.started and self.ended else None


def connect(namespace: str | None = None, dagster_home: str | None = None) -> Client:
    """The client of ``namespace`` (default: this shell's) in this environment (``KEEL_ENV``)."""
    from keel.local import dagster_home_for
    from keel_core.settings import Settings

    settings = Settings(namespace=namespace) if namespace else Settings()
    return Client(settings, dagster_home or dagster_home_for(settings))


class Client:
    def __init__(self, settings, dagster_home: str):
        from resources.environments import lake_for, registry_for
        from resources.warehouse import Warehouse

        self.settings, self.dagster_home = settings, dagster_home
        self.environment, self.namespace = settings.env, settings.namespace
        self.lake = lake_for(settings)
        self.warehouse = Warehouse.at(settings.warehouse)
        self.registry = registry_for(settings)

    def __repr__(self) -> str:
        return f"keel.client(namespace={self.namespace!r}, lake={self.lake.uri!r})"

    # Assets ------------------------------------------------------------------------------------

    @cached_property
    def _graph(self):
        """The asset graph of the code location, bound to this namespace's resources."""
        import dagster as dg

        import platform_assets.definitions as location
        from resources.environments import resources_for

        assets = dg.load_from_defs_folder(path_within_project=Path(location.__file__).parent).assets
        resources = resources_for(self.settings)
        return dg.Definitions(assets=assets, resources=resources).resolve_asset_graph()

    @cached_property
    def _instance(self):
        import dagster as dg

        if not Path(self.dagster_home).is_dir():
            raise ClientError(
                f"no Dagster instance at {self.dagster_home}: nothing has run in namespace {self.namespace}"
            )
        return dg.DagsterInstance.from_config(self.dagster_home)

    def _node(self, key: str):
        import dagster as dg

        asset_key = dg.AssetKey.from_user_string(key)
        if not self._graph.has(asset_key):
            raise ClientError(f"no asset {key!r}: see client.assets() for the keys")
        return self._graph.get(asset_key)

    def assets(self) -> pd.DataFrame:
        """Every asset: its key, group, whether it is daily, where its value is, its description."""
        rows = []
        for node in self._graph.asset_nodes:
            if not node.is_materializable:
                continue
            rows.append(
                {
                    "asset": node.key.to_user_string(),
                    "group": node.group_name,
                    "daily": node.partitions_def is not None,
                    "stored_in": _where(node.metadata),
                    "description": (node.description or "").split("\n")[0],
                }
            )
        return pd.DataFrame(rows).sort_values(["group", "asset"], ignore_index=True)

    def load(self, key: str, partition: str | date | None = None):
        """The value of asset ``key`` (for a daily asset, of one ``partition``): a DataFrame for tables,
        else what its latest materialization recorded, as a dict."""
        node = self._node(key)
        day = _day(partition) if partition is not None else None
        if node.partitions_def is not None and day is None:
            raise ClientError(f"{key} is daily: give partition='YYYY-MM-DD'")
        if node.partitions_def is None and day is not None:
            raise ClientError(f"{key} is not partitioned: leave partition out")
        metadata = node.metadata
        if LAKE_TABLE in metadata:
            table = metadata[LAKE_TABLE]
            return self.lake.read_partition(table, day) if day else self.lake.read_table(table)
        if TABLE_NAME in metadata:
            return self._warehouse_table(key, metadata, day)
        return self.materialization(key, partition).metadata

    def _warehouse_table(self, key: str, metadata, day: date | None) -> pd.DataFrame:
        relation = _relation(metadata)
        with self.warehouse.connect() as connection:
            if day is None:
                return connection.execute(f"select * from {relation}").df()
            if PARTITION_COLUMN not in metadata:
                raise ClientError(f"{key} does not declare its day column ({PARTITION_COLUMN})")
            column = metadata[PARTITION_COLUMN]
            return connection.execute(f"select * from {relation} where {column} = ?", [day]).df()

    def materialization(self, key: str, partition: str | date | None = None) -> Materialization:
        """The latest materialization of ``key`` (of one partition): its run, time and metadata."""
        import dagster as dg

        node = self._node(key)
        partition_key = _day(partition).isoformat() if partition is not None else None
        records = self._instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=node.key, asset_partitions=[partition_key] if partition_key else None
            ),
            limit=1,
        ).records
        if not records:
            where = f" for {partition_key}" if partition_key else ""
            raise ClientError(f"{key} was never materialized{where} in namespace {self.namespace}")
        return _materialization(records[0].event_log_entry)

    # Models ------------------------------------------------------------------------------------

    def models(self, model: str | None = None) -> pd.DataFrame:
        """Every version of ``model`` (default: of every model in the namespace's registry), oldest
        first per model, with its stage and test metrics."""
        rows = []
        for name in [model] if model else self.registry.models():
            for version in self.registry.of(name).versions():
                record, window = version.record, version.record.training_window
                rows.append(
                    {
                        "model": name,
                        "tag": version.tag,
                        "stage": version.stage,
                        "created_at": version.created_at,
                        **record.metrics,
                        "test_window": f"{window.test_start} .. {window.test_end}",
                        "git_commit": record.code_version.git_commit,
                    }
                )
        return pd.DataFrame(rows)

    def model_version(self, tag: str | None = None, stage: str | None = None, model: str | None = None):
        """A registry version by ``tag``, or the newest of ``model`` with ``stage`` (production,
        approved...); ``model`` may be left out when the namespace's registry holds one model."""
        from resources.registry import RegistryError

        if (tag is None) == (stage is None):
            raise ClientError("give either tag= or stage=")
        try:
            if tag is not None:
                return self.registry.of_tag(tag).version(tag)
            names = [model] if model else self.registry.models()
            if len(names) != 1:
                raise ClientError(f"give model=: the registry holds {', '.join(names) or 'no model'}")
            registry = self.registry.of(names[0])
            matching = [version for version in registry.versions() if version.stage == stage]
        except RegistryError as error:
            raise ClientError(str(error)) from None
        if not matching:
            raise ClientError(f"no version is {stage!r} in namespace {self.namespace} ({registry.uri})")
        return matching[-1]

    def load_model(self, tag: str | None = None, stage: str | None = None, model: str | None = None):
        """The scikit-learn pipeline of a version (``predict_proba`` or ``predict`` on its features)."""
        version = self.model_version(tag, stage, model)
        return self.registry.of_tag(version.tag).load(version.tag)

    # Runs --------------------------------------------------------------------------------------

    def runs(self, limit: int = 20) -> pd.DataFrame:
        """The latest runs of the namespace: id, job, status, start."""
        records = self._instance.get_run_records(limit=limit)
        return pd.DataFrame(
            [
                {
                    "run_id": record.dagster_run.run_id,
                    "job": record.dagster_run.job_name,
                    "status": record.dagster_run.status.value,
                    "started": _time(record.start_time),
                }
                for record in records
            ]
        )

    def run(self, run_id: str) -> RunInfo:
        """A run's status, tags, start and end, and every materialization it recorded."""
        import dagster as dg

        record = self._instance.get_run_record_by_id(run_id)
        if record is None:
            raise ClientError(f"no run {run_id} in namespace {self.namespace} ({self.dagster_home})")
        entries = self._instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        return RunInfo(
            run_id=run_id,
            job=record.dagster_run.job_name,
            status=record.dagster_run.status.value,
            tags=dict(record.dagster_run.tags),
            started=_time(record.start_time),
            ended=_time(record.end_time),
            materializations=[_materialization(entry) for entry in entries],
        )


def _where(metadata) -> str:
    if LAKE_TABLE in metadata:
        return f"lake: {metadata[LAKE_TABLE]}"
    if TABLE_NAME in metadata:
        return f"warehouse: {_relation(metadata)}"
    return "materialization metadata"


def _relation(metadata) -> str:
    """``schema.table``: dagster-dbt names relations database.schema.table, and the database is the
    file's name, which is the namespace's, so only schema.table is looked up in its file."""
    return ".".join(str(metadata[TABLE_NAME]).split(".")[-2:])


def _materialization(entry) -> Materialization:
    materialization = entry.asset_materialization
    return Materialization(
        asset=materialization.asset_key.to_user_string(),
        partition=materialization.partition,
        run_id=entry.run_id,
        at=datetime.fromtimestamp(entry.timestamp),
        metadata={name: _plain(value) for name, value in materialization.metadata.items()},
        tags=dict(materialization.tags or {}),
    )


def _plain(value) -> Any:
    """A metadata value as plain Python (the number, the text, the JSON, the path)."""
    plain = getattr(value, "value", value)
    return plain if isinstance(plain, (str, int, float, bool, dict, list, type(None))) else str(plain)


def _day(partition: str | date) -> date:
    if isinstance(partition, date):
        return partition
    try:
        return date.fromisoformat(partition)
    except ValueError:
        raise ClientError(f"partition {partition!r}: expected a day, YYYY-MM-DD") from None


def _time(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp) if timestamp else None
