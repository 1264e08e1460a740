"""Data contracts for what enters the lake, and the split of a raw extract into valid and quarantined rows.

A raw extract is checked in two stages:

1. *parse*: every value is converted to its column's type; a value that cannot be converted
   (``"12,50 EUR"`` as an amount) is a row failure naming the column and the value;
2. *rules*: a pandera schema checks nulls, ranges, the partition's day, duplicate ids and
   unknown customers or terminals, row by row (``lazy=True`` collects every failure).

Rows with any failure go to quarantine with every reason, joined by ``"; "``; the others go on,
typed. ``rows_in == valid + quarantined`` always holds. Problems that are not about a row (a
missing or unexpected column) raise :class:`ContractError`: the whole extract is refused.

Pure module: pandas and pandera only, no Dagster. pandera is imported in the functions that use
it: the code location and the scoring service import this module, and pandera costs ~0.2 s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    import pandera.pandas as pa

MAX_AMOUNT = 100_000.0  # no card payment in this world comes near; above it is a unit or parsing bug

# Column -> the type each raw value must parse to. Nullable types while checking, so that a
# missing value is a row failure rather than a column-wide dtype error.
TRANSACTION_COLUMNS = {
    "transaction_id": "Int64",
    "transacted_at": "datetime64[ns]",
    "customer_id": "Int64",
    "terminal_id": "Int64",
    "amount": "Float64",
}
LABEL_COLUMNS = {"transaction_id": "Int64", "is_fraud": "Int64", "fraud_scenario": "Int64"}


class ContractError(ValueError):
    """An extract that cannot be checked row by row (its columns are wrong)."""


@dataclass(frozen=True)
class Split:
    """The outcome of checking one extract."""

    valid: pd.DataFrame
    quarantined: pd.DataFrame  # raw values as text, plus source_row and reason

    @property
    def rows_in(self) -> int:
        return len(self.valid) + len(self.quarantined)


def _one_of(ids: Iterable[int], error: str):
    """``Check.isin`` for a large id set. pandera deep-copies a built-in check's arguments with the
    schema (thousands of ids, 35 ms a day); a custom check's function is not copied."""
    import pandera.pandas as pa

    known = pd.Index(list(ids) if not isinstance(ids, pd.Series | pd.Index) else ids)
    return pa.Check(lambda values: values.isin(known), error=error)


def transactions_schema(
    day: date, customer_ids: Iterable[int], terminal_ids: Iterable[int]
) -> pa.DataFrameSchema:
    import pandera.pandas as pa

    start = pd.Timestamp(day)
    return pa.DataFrameSchema(
        {
            "transaction_id": pa.Column(
                "Int64", nullable=False, unique=True, report_duplicates="exclude_first"
            ),
            "transacted_at": pa.Column(
                "datetime64[ns]",
                pa.Check.in_range(
                    start, start + timedelta(days=1), include_max=False, error="inside the partition's day"
                ),
                nullable=False,
            ),
            "customer_id": pa.Column("Int64", _one_of(customer_ids, "a known customer"), nullable=False),
            "terminal_id": pa.Column("Int64", _one_of(terminal_ids, "a known terminal"), nullable=False),
            "amount": pa.Column(
                "Float64",
                [
                    pa.Check.ge(0, error="not negative"),
                    pa.Check.le(MAX_AMOUNT, error=f"at most {MAX_AMOUNT:,.0f}"),
                ],
                nullable=False,
            ),
        },
        strict=True,
        name="raw_transactions",
    )


def labels_schema(transaction_ids: Iterable[int]) -> pa.DataFrameSchema:
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            "transaction_id": pa.Column(
                "Int64",
                _one_of(transaction_ids, "a transaction ingested on its day"),
                nullable=False,
                unique=True,
                report_duplicates="exclude_first",
            ),
            "is_fraud": pa.Column("Int64", pa.Check.isin({0, 1}, error="0 or 1"), nullable=False),
            "fraud_scenario": pa.Column("Int64", pa.Check.in_range(0, 4, error="0 to 4"), nullable=False),
        },
        strict=True,
        name="raw_fraud_labels",
    )


def split_transactions(
    extract: pd.DataFrame, day: date, customer_ids: Iterable[int], terminal_ids: Iterable[int]
) -> Split:
    """Check one day's raw transactions; valid rows come back typed (int64, float64, datetime)."""
    return _split(extract, TRANSACTION_COLUMNS, transactions_schema(day, customer_ids, terminal_ids))


def split_labels(extract: pd.DataFrame, transaction_ids: Iterable[int]) -> Split:
    """Check one day's fraud labels against the transactions they refer to."""
    split = _split(extract, LABEL_COLUMNS, labels_schema(transaction_ids))
    valid = split.valid.astype({"is_fraud": "int8", "fraud_scenario": "int8"})
    return Split(valid, split.quarantined)


def _split(extract: pd.DataFrame, columns: dict[str, str], schema: pa.DataFrameSchema) -> Split:
    import pandera.errors

    missing = [c for c in columns if c not in extract.columns]
    unexpected = [c for c in extract.columns if c not in columns]
    if missing or unexpected:
        raise ContractError(
            f"{schema.name}: the extract's columns do not match the contract "
            f"(missing: {missing or 'none'}; unexpected: {unexpected or 'none'})"
        )
    raw = extract.reset_index(drop=True)
    parsed, reasons = _parse(raw, columns)
    unparsed = {(row, column) for row, texts in reasons.items() for column in texts}

    try:
        schema.validate(parsed, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        not_about_a_row = cases[cases["index"].isna()]
        if not not_about_a_row.empty:
            raise ContractError(
                f"{schema.name}: checks failed for the whole extract: "
                + "; ".join(f"{r.column}: {r.check}" for r in not_about_a_row.itertuples())
            ) from errors
        for case in cases.itertuples():
            row, column = int(case.index), case.column
            if (row, column) in unparsed:
                continue  # already explained by the parse failure (its value became null)
            reasons.setdefault(row, {}).setdefault(column, []).append(_describe(case))

    bad = sorted(reasons)
    quarantined = raw.loc[bad].astype("string")
    quarantined.insert(0, "source_row", pd.Series(bad, index=bad, dtype="int64"))
    quarantined["reason"] = pd.Series(
        [
            "; ".join(f"{column}: {text}" for column, texts in reasons[row].items() for text in texts)
            for row in bad
        ],
        index=quarantined.index,
        dtype="string",
    )
    valid = parsed.drop(index=bad)
    final_types = {c: t.lower() if t in ("Int64", "Float64") else t for c, t in columns.items()}
    return Split(valid.astype(final_types).reset_index(drop=True), quarantined.reset_index(drop=True))


def _parse(
    raw: pd.DataFrame, columns: dict[str, str]
) -> tuple[pd.DataFrame, dict[int, dict[str, list[str]]]]:
    """Convert each column to its type; return the typed frame and the per-row parse failures."""
    parsed = {}
    reasons: dict[int, dict[str, list[str]]] = {}
    for column, dtype in columns.items():
        values = raw[column]
        if dtype == "datetime64[ns]":
            typed = pd.to_datetime(values, errors="coerce", format="ISO8601")
            if getattr(typed.dt, "tz", None) is not None:
                typed = typed.dt.tz_convert(None)
            typed = typed.astype("datetime64[ns]")
        else:
            numbers = pd.to_numeric(values, errors="coerce")
            if dtype == "Int64":
                whole = numbers.isna() | (numbers == numbers.round())
                numbers = numbers.where(whole)
            typed = numbers.astype(dtype)
        failed = typed.isna() & values.notna()
        for row, value in values[failed].items():
            reasons.setdefault(int(row), {})[column] = [f"cannot parse as {dtype.lower()} (got {value!r})"]
        parsed[column] = typed
    return pd.DataFrame(parsed, index=raw.index), reasons


def _describe(case) -> str:
    if case.check == "not_nullable":
        return "missing"
    if case.check == "field_uniqueness":
        return f"duplicate of an earlier row ({case.failure_case})"
    return f"must be {case.check} (got {case.failure_case})"


def check_reference(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Validate a reference table as a whole: a bad reference table is refused, not split."""
    import pandera.errors

    try:
        return schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        first = errors.failure_cases.head(10)
        raise ContractError(
            f"{schema.name}: {len(errors.failure_cases)} failures, first: "
            + "; ".join(
                f"{r.column} row {r.index}: {r.check} (got {r.failure_case})" for r in first.itertuples()
            )
        ) from errors


def customers_schema() -> pa.DataFrameSchema:
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            "customer_id": pa.Column("int64", pa.Check.ge(0), unique=True),
            "x": pa.Column("float64", pa.Check.in_range(0, 100)),
            "y": pa.Column("float64", pa.Check.in_range(0, 100)),
            "mean_amount": pa.Column("float64", pa.Check.gt(0)),
            "std_amount": pa.Column("float64", pa.Check.ge(0)),
            "mean_transactions_per_day": pa.Column("float64", pa.Check.ge(0)),
        },
        strict=True,
        name="customers",
    )


def terminals_schema() -> pa.DataFrameSchema:
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            "terminal_id": pa.Column("int64", pa.Check.ge(0), unique=True),
            "x": pa.Column("float64", pa.Check.in_range(0, 100)),
            "y": pa.Column("float64", pa.Check.in_range(0, 100)),
        },
        strict=True,
        name="terminals",
    )
