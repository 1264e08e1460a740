"""``keel.Source``: a source system's tables entering the lake, from one folder's ``defs.yaml``.

A source is a folder under ``platform_assets/defs/<name>/``: its ``defs.yaml`` declares each table
the source delivers (its landing feed, whether it is daily or a reference table replaced whole, its
columns with their types and rules: ``keel_core.contracts``), and optionally the system that
delivers it (``system``, a resource class of the folder that ``fetch_from_source`` asks). This
component turns that into, in the asset group ``lake``:

    lake/<table>               a reference table, checked whole (refused whole)
    lake/<table> + lake/<quarantine>   a daily table split by its contract (daily partitions),
                               with the checks rows_reconcile and quarantine_share_is_small

Each table is tagged with its feed (``keel/feed``), so the platform's ``landing_sensor``
(``defs/landing.py``) ingests each file landing in that feed into it. No source is named here:
tables, feeds, rules and ordering are the folder's.
"""

import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel_core import contracts
from platform_assets.automation import expected_every
from platform_assets.partitions import daily_partitions, one_run_per_backfill
from platform_assets.provenance import recorded
from platform_assets.steps import INGESTION, retry_only_transient
from platform_assets.storage import stored_in_lake
from resources.calendar import Calendar
from resources.lake import Lake
from resources.sources import Feeds, SourceSystem, UnreadableFile

GROUP = "lake"
INGESTS_TAG = "keel/ingests"  # "reference" or "daily": what the ingestion jobs select
FEED_TAG = "keel/feed"  # on a table: the landing feed it is ingested from
QUARANTINE_TAG = "keel/quarantine_of"  # on a quarantine: the feed whose rejected rows it holds
SOURCE_SYSTEM = "keel/source_system"  # definitions metadata: module:Class of the source system
QUARANTINE_SHARE_WARNING = 0.01  # above 1% of a day's rows in quarantine, someone should look


class TableSpec(BaseModel):
    """A table the source delivers into the landing zone as the feed ``feed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feed: str  # a folder name of the landing zone: lowercase letters, digits, underscores
    description: str
    daily: bool = True  # False: a reference table, delivered and replaced whole
    quarantine: str | None = None  # a daily table's rejected rows (default: quarantined_<feed>)
    after: list[str] = Field(default_factory=list)  # tables of this source ingested before this one
    # Steps ingesting this table run one at a time across runs (a pool of limit 1 in the deployment):
    # needed when a column is unique across days, as two days ingested at once cannot see each other.
    pool: str | None = None
    # Expected to be updated at least this often: the freshness daemon marks the table late after,
    # and `freshness_alerts` sends it (None: no expectation, e.g. a table delivered when it changes).
    freshness_hours: float | None = None
    columns: dict[str, contracts.Column]

    @model_validator(mode="after")
    def _a_feed_name(self):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.feed):
            raise ValueError(f"feed {self.feed!r}: lowercase letters, digits and underscores, from a letter")
        if self.freshness_hours is not None and self.freshness_hours <= 0:
            raise ValueError(f"feed {self.feed!r}: freshness_hours must be positive")
        return self


class Source(dg.Component, dg.Resolvable, dg.Model):
    """A source system's tables, landed as files and ingested into the lake by their contracts."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    description: str
    tables: dict[str, TableSpec] = Field(min_length=1)
    # module:Class of the folder: the system that delivers the feeds when asked (`fetch_from_source`).
    system: str | None = None

    @model_validator(mode="after")
    def _consistent(self):
        feeds = [t.feed for t in self.tables.values()]
        if len(set(feeds)) != len(feeds):
            raise ValueError(f"{self.name}: two tables read the same feed")
        for name, table in self.tables.items():
            contracts.Table(name=name, columns=table.columns, daily=table.daily)  # its rules fit
            if unknown := [t for t in table.after if t not in self.tables]:
                raise ValueError(f"{name}: after names tables the source does not declare: {unknown}")
            for column, rule in table.columns.items():
                where = rule.references
                if where is None:
                    continue
                if where.table not in self.tables or where.column not in self.tables[where.table].columns:
                    raise ValueError(
                        f"{name}.{column}: references {where.table}.{where.column}, not declared"
                    )
                if (where.days_before is None) == self.tables[where.table].daily:
                    raise ValueError(
                        f"{name}.{column}: days_before is required for a daily table, refused for another"
                    )
                if where.table not in table.after:
                    raise ValueError(f"{name}.{column}: references {where.table}: list it in `after`")
            if table.pool is None and any(c.unique_across_days for c in table.columns.values()):
                raise ValueError(f"{name}: a column unique across days needs a pool (of limit 1)")
        return self

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        metadata = {}
        if self.system is not None:
            from platform_assets.components.use_case import References

            folder = context.path if context.path.is_dir() else context.path.parent
            system = References(folder, context.load_defs_relative_python_module)(self.system)
            if not (isinstance(system, type) and issubclass(system, SourceSystem)):
                raise ValueError(f"{self.name}: system {self.system!r} is not a SourceSystem class")
            # The code location binds it as `upstream`, configured by the settings it is built with.
            metadata[SOURCE_SYSTEM] = f"{system.__module__}:{system.__qualname__}"
        return dg.Definitions(assets=self.assets(), metadata=metadata)

    def assets(self) -> list[dg.AssetsDefinition]:
        """One asset per declared table (a daily one with its quarantine), in declaration order."""
        return [Ingested.of(name, spec).asset() for name, spec in self.tables.items()]


@dataclass(frozen=True)
class Ingested:
    """A declared table with its lake keys."""

    name: str
    spec: TableSpec
    contract: contracts.Table

    @classmethod
    def of(cls, name: str, spec: TableSpec) -> "Ingested":
        return cls(name, spec, contracts.Table(name=name, columns=spec.columns, daily=spec.daily))

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey([GROUP, self.name])

    @property
    def quarantine(self) -> str:
        return self.spec.quarantine or f"quarantined_{self.spec.feed}"

    def asset(self) -> dg.AssetsDefinition:
        deps = [dg.AssetKey([GROUP, name]) for name in self.spec.after]
        return _daily(self, deps) if self.spec.daily else _reference(self, deps)


@contextmanager
def refused_for_good(landed: str):
    """A file the contract refuses, or that cannot be read, fails its step at once, naming the file:
    the same file fails the same way every time, so it is not retried (the source must send it
    again, and the landing sensor ingests the new delivery). One failed run, one alert."""
    try:
        yield
    except (contracts.ContractError, UnreadableFile) as error:
        where = "" if landed in str(error) else f"{landed}: "
        raise dg.Failure(
            description=f"{where}{error}",
            metadata={"landing_file": dg.MetadataValue.path(landed)},
            allow_retries=False,
        ) from error


def _reference(table: Ingested, deps: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=table.key,
        deps=deps,
        group_name=GROUP,
        description=table.spec.description,
        metadata=stored_in_lake(table.name),
        tags={INGESTS_TAG: "reference", FEED_TAG: table.spec.feed},
        freshness_policy=expected_every(table.spec.freshness_hours),
        kinds={"parquet"},
        op_tags=INGESTION.op_tags(table.name),
        retry_policy=INGESTION.retry_policy,
    )
    @retry_only_transient
    def reference_table(
        context: dg.AssetExecutionContext, lake: Lake, landing: Feeds
    ) -> dg.MaterializeResult:
        # Replaced whole, after its contract (which fails the run on any bad row).
        with refused_for_good(landing.location(table.spec.feed)):
            frame = contracts.check_reference(landing.read(table.spec.feed), table.contract)
        path = lake.write_table(table.name, frame)
        return dg.MaterializeResult(
            metadata={
                **recorded(context),
                "dagster/row_count": len(frame),
                "path": dg.MetadataValue.path(path),
            }
        )

    return reference_table


def _daily_spec(
    table: str,
    deps: list[dg.AssetKey],
    tags: dict[str, str],
    description: str,
    freshness: dg.FreshnessPolicy | None = None,
) -> dg.AssetSpec:
    """A daily lake table written by an ingestion (the table or its quarantine)."""
    return dg.AssetSpec(
        dg.AssetKey([GROUP, table]),
        deps=deps,
        group_name=GROUP,
        metadata=stored_in_lake(table),
        tags={INGESTS_TAG: "daily", **tags},
        freshness_policy=freshness,
        kinds={"parquet"},
        description=description,
    )


def _daily(table: Ingested, deps: list[dg.AssetKey]) -> dg.AssetsDefinition:
    name, quarantine, feed = table.name, table.quarantine, table.spec.feed
    references = {
        column: rule.references for column, rule in table.contract.columns.items() if rule.references
    }
    across_days = next((c for c, rule in table.contract.columns.items() if rule.unique_across_days), None)

    @dg.multi_asset(
        name=name,
        specs=[
            _daily_spec(
                name,
                deps,
                {FEED_TAG: feed},
                f"{table.spec.description} The rows that passed the contract, with the values as sent; "
                "one Parquet file per day.",
                expected_every(table.spec.freshness_hours),
            ),
            _daily_spec(
                quarantine,
                deps,
                {QUARANTINE_TAG: feed},
                f"Rows of {feed} that failed {name}'s contract, with their raw values as text, their "
                "position in the extract (source_row) and every reason. One row per rejected row.",
            ),
        ],
        check_specs=_ingestion_checks(table.key),
        pool=table.spec.pool,
        partitions_def=daily_partitions,
        backfill_policy=one_run_per_backfill,
        op_tags=INGESTION.op_tags(name),
        retry_policy=INGESTION.retry_policy,
    )
    @retry_only_transient
    def daily_table(context: dg.AssetExecutionContext, lake: Lake, landing: Feeds, calendar: Calendar):
        whole = {
            column: lake.read_table(where.table)[where.column]
            for column, where in references.items()
            if where.days_before is None
        }
        days = []
        # A run of many days reads the column unique across days once, not once a day (the lake's
        # answer for every day would read every partition: quadratic in the days).
        held = lake.value_days(name, across_days) if across_days and len(context.partition_keys) > 1 else None
        for key in context.partition_keys:
            day = date.fromisoformat(key)

            def first_seen(values, day=day):  # values another day's partition already holds
                if held is not None:
                    return held.days_holding(values, other_than=day)
                return lake.days_holding(name, across_days, values, other_than=day)

            with refused_for_good(landing.location(feed, day)):
                extract = landing.read(feed, day)
                known = dict(whole)
                for column, where in references.items():
                    if where.days_before is not None:
                        # Before history starts the referenced day has no partition (and no rows refer to it).
                        earlier = day - timedelta(days=where.days_before)
                        known[column] = (
                            lake.read_partition(where.table, earlier)[where.column] if len(extract) else []
                        )
                split = contracts.split(
                    extract, table.contract, day, known, zone=calendar.zone, first_seen=first_seen
                )
            days.append(_ingest_day(lake, name, quarantine, day, extract, split))
            if held is not None:
                held.replace_day(day, split.valid[across_days])
            context.log.info(f"{name} {key}: {len(split.valid)} valid, {len(split.quarantined)} quarantined")
        yield from _ingestion_results(context, lake, name, quarantine, days)

    return daily_table


@dataclass(frozen=True)
class DayIngested:
    day: date
    rows_in: int  # rows in the source extract
    valid: int  # rows in the partition file written to the lake
    quarantined: int  # rows in the quarantine file written to the lake
    reasons: Counter


def _ingest_day(
    lake: Lake, table: str, quarantine: str, day: date, extract, split: contracts.Split
) -> DayIngested:
    lake.write_partition(table, day, split.valid)
    lake.write_partition(quarantine, day, split.quarantined)
    # Count what is in the files, not what we meant to write: the check below compares these.
    # Tally by rule ("amount: must be not negative"), leaving out the offending values.
    reasons = Counter(r.split(" (")[0] for row in split.quarantined["reason"] for r in row.split("; "))
    return DayIngested(
        day,
        len(extract),
        lake.partition_row_count(table, day),
        lake.partition_row_count(quarantine, day),
        reasons,
    )


def _ingestion_results(
    context: dg.AssetExecutionContext, lake: Lake, table: str, quarantine: str, days: list[DayIngested]
):
    table_key, quarantine_key = dg.AssetKey([GROUP, table]), dg.AssetKey([GROUP, quarantine])
    rows_in = sum(d.rows_in for d in days)
    valid = sum(d.valid for d in days)
    quarantined = sum(d.quarantined for d in days)
    reasons = sum((d.reasons for d in days), Counter())
    per_day = pd.DataFrame(
        [(d.day.isoformat(), d.rows_in, d.valid, d.quarantined) for d in days],
        columns=["day", "rows in", "valid", "quarantined"],
    )
    # A run over a range of days records the same metadata on every day's materialization, so
    # a row count is only the partition's own when the run covers one day; otherwise the
    # figures say they are the window's and the per-day table breaks them down.
    one_day = len(days) == 1
    where = lake.location(table, days[0].day) if one_day else f"{lake.uri}/{table}/"
    yield dg.MaterializeResult(
        asset_key=table_key,
        metadata={
            **recorded(context),
            **({"dagster/row_count": valid} if one_day else {}),
            "window": f"{days[0].day} .. {days[-1].day} ({len(days)} days)",
            "window_rows_in": rows_in,
            "window_valid_rows": valid,
            "window_quarantined_rows": quarantined,
            "per_day": dg.MetadataValue.md(per_day.to_markdown(index=False)),
            "path": dg.MetadataValue.path(where),
        },
    )
    yield dg.MaterializeResult(
        asset_key=quarantine_key,
        metadata={
            **recorded(context),
            **({"dagster/row_count": quarantined} if one_day else {}),
            "window_quarantined_rows": quarantined,
            "reasons": dg.MetadataValue.json(dict(reasons.most_common())),
            "path": dg.MetadataValue.path(f"{lake.uri}/{quarantine}/"),
        },
    )
    unbalanced = [d.day.isoformat() for d in days if d.rows_in != d.valid + d.quarantined]
    yield dg.AssetCheckResult(
        asset_key=table_key,
        check_name="rows_reconcile",
        passed=not unbalanced,
        description="rows in = valid + quarantined, counted from the files written, for every day",
        metadata={
            "rows_in": rows_in,
            "valid": valid,
            "quarantined": quarantined,
            "days_not_reconciling": dg.MetadataValue.json(unbalanced),
        },
    )
    worst = max(days, key=lambda d: d.quarantined / max(d.rows_in, 1))
    share = worst.quarantined / max(worst.rows_in, 1)
    yield dg.AssetCheckResult(
        asset_key=table_key,
        check_name="quarantine_share_is_small",
        passed=share <= QUARANTINE_SHARE_WARNING,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"no day sends more than {QUARANTINE_SHARE_WARNING:.0%} of its rows to quarantine",
        metadata={"worst_day": worst.day.isoformat(), "worst_share": share},
    )


def _ingestion_checks(asset: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            "rows_reconcile",
            asset=asset,
            description="Every row of the source extract is either in the table or in quarantine.",
        ),
        dg.AssetCheckSpec(
            "quarantine_share_is_small",
            asset=asset,
            description=f"At most {QUARANTINE_SHARE_WARNING:.0%} of a day's rows are quarantined.",
        ),
    ]
