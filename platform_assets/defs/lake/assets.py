"""Lake: what the source system delivered into the landing zone, checked by its data contract, as Parquet.

Every daily ingestion splits the day's extract into valid rows (the table) and quarantined rows
(with a reason per row), and reports ``rows in = valid + quarantined`` as an asset check, counted
from the files actually written.
"""

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from keel_core import contracts
from keel_core.simulator import LABEL_DELAY_DAYS
from platform_assets.partitions import daily_partitions, one_run_per_backfill
from platform_assets.provenance import recorded
from platform_assets.steps import INGESTION, retry_only_transient
from platform_assets.storage import stored_in_lake
from resources.calendar import Calendar
from resources.lake import Lake
from resources.sources import PaymentsSource, UnreadableFile

CUSTOMERS = dg.AssetKey(["lake", "customers"])
TERMINALS = dg.AssetKey(["lake", "terminals"])
RAW_TRANSACTIONS = dg.AssetKey(["lake", "raw_transactions"])
QUARANTINED_TRANSACTIONS = dg.AssetKey(["lake", "quarantined_transactions"])
RAW_FRAUD_LABELS = dg.AssetKey(["lake", "raw_fraud_labels"])
QUARANTINED_FRAUD_LABELS = dg.AssetKey(["lake", "quarantined_fraud_labels"])

# A transaction id is unique across days: ingesting a day asks the lake which of its ids another day
# holds. Two days ingested at once would not see each other's ids, so the steps writing
# raw_transactions share a pool of one (deploy/local/dagster.yaml, deploy/helm: default limit 1).
TRANSACTION_IDS_POOL = "transaction_ids"

QUARANTINE_SHARE_WARNING = 0.01  # above 1% of a day's rows in quarantine, someone should look


@dg.asset(
    key=CUSTOMERS,
    group_name="lake",
    metadata=stored_in_lake("customers"),
    kinds={"parquet"},
    op_tags=INGESTION.op_tags("customers"),
    retry_policy=INGESTION.retry_policy,
)
@retry_only_transient
def customers(context: dg.AssetExecutionContext, lake: Lake, landing: PaymentsSource) -> dg.MaterializeResult:
    """Card holders as the source system knows them: home location on the 100x100 grid and
    spending profile (mean and spread of the amount, mean payments per day). One row per customer."""
    return _reference_table(context, lake, "customers", landing, contracts.customers_schema())


@dg.asset(
    key=TERMINALS,
    group_name="lake",
    metadata=stored_in_lake("terminals"),
    kinds={"parquet"},
    op_tags=INGESTION.op_tags("terminals"),
    retry_policy=INGESTION.retry_policy,
)
@retry_only_transient
def terminals(context: dg.AssetExecutionContext, lake: Lake, landing: PaymentsSource) -> dg.MaterializeResult:
    """Payment terminals and their location on the 100x100 grid. One row per terminal."""
    return _reference_table(context, lake, "terminals", landing, contracts.terminals_schema())


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


def _reference_table(
    context, lake: Lake, table: str, landing: PaymentsSource, schema
) -> dg.MaterializeResult:
    """A reference table replaced whole, after its contract (which fails the run on any bad row)."""
    with refused_for_good(landing.location(table)):
        frame = contracts.check_reference(getattr(landing, table)(), schema)
    path = lake.write_table(table, frame)
    return dg.MaterializeResult(
        metadata={**recorded(context), "dagster/row_count": len(frame), "path": dg.MetadataValue.path(path)}
    )


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
    table_key, quarantine_key = dg.AssetKey(["lake", table]), dg.AssetKey(["lake", quarantine])
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


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_TRANSACTIONS,
            deps=[CUSTOMERS, TERMINALS],
            group_name="lake",
            metadata=stored_in_lake("raw_transactions"),
            kinds={"parquet"},
            description="Card payments of the day that passed the transaction contract (values parsed "
            "exactly, nulls, ranges, timestamp inside the day in the platform's time zone, ids unique in "
            "the file and across days, known customers and terminals), with the values as sent. "
            "One row per transaction; one Parquet file per day.",
        ),
        dg.AssetSpec(
            QUARANTINED_TRANSACTIONS,
            deps=[CUSTOMERS, TERMINALS],
            group_name="lake",
            metadata=stored_in_lake("quarantined_transactions"),
            kinds={"parquet"},
            description="Payments of the day that failed the contract, with their raw values as text, "
            "their position in the extract (source_row) and every reason. One row per rejected row.",
        ),
    ],
    check_specs=_ingestion_checks(RAW_TRANSACTIONS),
    pool=TRANSACTION_IDS_POOL,
    partitions_def=daily_partitions,
    backfill_policy=one_run_per_backfill,
    op_tags=INGESTION.op_tags("raw_transactions"),
    retry_policy=INGESTION.retry_policy,
)
@retry_only_transient
def raw_transactions(
    context: dg.AssetExecutionContext, lake: Lake, landing: PaymentsSource, calendar: Calendar
):
    customer_ids = lake.read_table("customers")["customer_id"]
    terminal_ids = lake.read_table("terminals")["terminal_id"]
    days = []
    for key in context.partition_keys:
        day = date.fromisoformat(key)

        def first_seen(ids, day=day):  # ids another day's partition already holds
            return lake.days_holding("raw_transactions", "transaction_id", ids, other_than=day)

        with refused_for_good(landing.location("transactions", day)):
            extract = landing.transactions(day)
            split = contracts.split_transactions(
                extract, day, customer_ids, terminal_ids, zone=calendar.zone, first_seen=first_seen
            )
        days.append(_ingest_day(lake, "raw_transactions", "quarantined_transactions", day, extract, split))
        context.log.info(
            f"raw_transactions {key}: {len(split.valid)} valid, {len(split.quarantined)} quarantined"
        )
    yield from _ingestion_results(context, lake, "raw_transactions", "quarantined_transactions", days)


# The flags reported on day D are about the payments of day D - 7, yet they depend on day D's
# payments: in the daily cycle D's flags are ingested after D's payments, so D - 7's are in the
# lake. A lagged partition mapping would be the literal truth, but Dagster follows mappings when it
# computes a backfill: a backfill of days X..Y would ingest the flags of X+7..Y+7 and leave the
# warehouse's flag marts of X..Y stale. With this dependency a backfill of X..Y is every daily
# asset for X..Y. Both outputs declare it: one multi-asset's outputs must target the same days.
LABEL_DEPS = [RAW_TRANSACTIONS]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_FRAUD_LABELS,
            deps=LABEL_DEPS,
            group_name="lake",
            metadata=stored_in_lake("raw_fraud_labels"),
            kinds={"parquet"},
            description=f"Fraud flags reported on the day, about the payments of {LABEL_DELAY_DAYS} days "
            "earlier (labels are only known after that delay). One row per labelled transaction.",
        ),
        dg.AssetSpec(
            QUARANTINED_FRAUD_LABELS,
            deps=LABEL_DEPS,
            group_name="lake",
            metadata=stored_in_lake("quarantined_fraud_labels"),
            kinds={"parquet"},
            description="Fraud flags of the day that failed the label contract, with every reason.",
        ),
    ],
    check_specs=_ingestion_checks(RAW_FRAUD_LABELS),
    partitions_def=daily_partitions,
    backfill_policy=one_run_per_backfill,
    op_tags=INGESTION.op_tags("raw_fraud_labels"),
    retry_policy=INGESTION.retry_policy,
)
@retry_only_transient
def raw_fraud_labels(context: dg.AssetExecutionContext, lake: Lake, landing: PaymentsSource):
    days = []
    for key in context.partition_keys:
        day = date.fromisoformat(key)
        paid_on = day - timedelta(days=LABEL_DELAY_DAYS)
        with refused_for_good(landing.location("fraud_labels", day)):
            extract = landing.fraud_labels(day)
            # A flag must be about a payment that was ingested on its day; before history starts
            # there are no payments, and the source sends no flags.
            known = lake.read_partition("raw_transactions", paid_on)["transaction_id"] if len(extract) else []
            split = contracts.split_labels(extract, known)
        days.append(_ingest_day(lake, "raw_fraud_labels", "quarantined_fraud_labels", day, extract, split))
        context.log.info(
            f"raw_fraud_labels {key}: {len(split.valid)} valid, {len(split.quarantined)} quarantined"
        )
    yield from _ingestion_results(context, lake, "raw_fraud_labels", "quarantined_fraud_labels", days)
