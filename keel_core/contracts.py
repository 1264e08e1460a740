"""Data contracts for what enters the lake, and the split of a raw extract into valid and quarantined rows.

A contract is declared, not written: a source folder's ``defs.yaml`` (``keel.Source``) lists each
table's columns with their type and rules (``Table``, ``Column``), and this module checks a raw
extract (an Arrow table as read from the landing zone, or a frame) against it in two stages:

1. *parse*, value by value, exactly (``keel_core.parsing``): a value that is not text of its column's type
   (``"12,50 EUR"`` as a decimal, ``"007"`` or ``"1e3"`` as an integer, bytes that are not UTF-8) is a
   failure of its row alone, naming the column; no other value changes because of it;
2. *rules*: a pandera schema built from the declaration checks nulls, ranges, allowed values, the
   partition's day, values repeated in the file and values another table must hold, row by row
   (``lazy=True`` collects every failure); then values already ingested on another day
   (``first_seen``, answered by the lake).

Rows with any failure go to quarantine with their raw values as text and every reason, joined by
``"; "``; the others go on, typed, with exactly the values sent. ``rows_in == valid + quarantined``
always holds. Problems that are not about a row (a missing, unexpected or repeated column, a column
stored as a type that cannot hold the field) raise :class:`ContractError`: the whole extract is
refused, and retrying cannot change that. A reference table (not daily) is checked whole and
refused whole.

Pure module: pandas, pyarrow, pydantic and pandera only, no Dagster. pandera is imported in the
functions that use it: the code location and the scoring service import this module, and pandera
costs ~0.2 s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel_core import parsing

if TYPE_CHECKING:
    import pandera.pandas as pa_schema

# Ids are non-negative int64 wherever they enter (the lake, a prediction request).
MIN_ID, MAX_ID = 0, parsing.INT64_MAX
_PANDAS_TYPES = {"integer": "Int64", "decimal": "Float64", "timestamp": "datetime64[ns]"}
UTC = ZoneInfo(parsing.DEFAULT_TIME_ZONE)  # the platform's time zone unless configured
_STORED_TYPES = {"integer": "int64", "decimal": "float64", "timestamp": "datetime64[ns]"}

# Given the values of an extract's column, the day each was already ingested on (another day's partition).
FirstSeen = Callable[[pd.Series], pd.Series]


class ContractError(ValueError):
    """An extract that cannot be checked row by row (its columns are wrong)."""


class Reference(BaseModel):
    """Where a column's values must already be: ``column`` of the lake table ``table`` (the whole
    table, or for a daily table the partition ``days_before`` days before the one being ingested)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    table: str
    column: str
    days_before: int | None = None  # None: the table is not partitioned

    @model_validator(mode="after")
    def _not_later(self) -> Reference:
        if self.days_before is not None and self.days_before < 0:
            raise ValueError(f"days_before is {self.days_before}: a day cannot refer to a later one")
        return self


class Column(BaseModel):
    """One column of a source's table: how its raw values parse, and the rules a row must keep."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["integer", "decimal", "timestamp"]
    description: str = ""
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    one_of: list[int] | None = None
    unique: bool = False  # within a delivery: a later repeat of a value is quarantined
    unique_across_days: bool = False  # a value another day's partition holds is quarantined
    within_day: bool = False  # a timestamp inside the partition's day (the platform's time zone)
    references: Reference | None = None
    stored_as: Literal["int8", "int16", "int32", "int64", "float32", "float64"] | None = None


class Table(BaseModel):
    """A table a source delivers, as its ``defs.yaml`` declares it (``keel.Source``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    columns: dict[str, Column] = Field(min_length=1)
    daily: bool = True  # False: a reference table, delivered and replaced whole

    @model_validator(mode="after")
    def _rules_fit(self) -> Table:
        for name, column in self.columns.items():
            if column.within_day and (column.type != "timestamp" or not self.daily):
                raise ValueError(f"{self.name}.{name}: within_day is for a timestamp of a daily table")
            if column.unique_across_days and not self.daily:
                raise ValueError(f"{self.name}.{name}: unique_across_days is for a daily table")
            if column.unique_across_days and column.type != "integer":
                # The lake answers which day holds a value by its int64 (Lake.days_holding, value_days).
                raise ValueError(f"{self.name}.{name}: only an integer column is unique across days")
            if column.references is not None and column.type != "integer":
                raise ValueError(f"{self.name}.{name}: only integer columns reference another table")
        if len([c for c in self.columns.values() if c.unique_across_days]) > 1:
            raise ValueError(f"{self.name}: at most one column is unique across days")
        return self

    @property
    def kinds(self) -> dict[str, str]:
        """Column -> how its raw values are parsed (``keel_core.parsing``)."""
        return {name: column.type for name, column in self.columns.items()}

    def schema(self, day: date | None = None, known: Mapping[str, Iterable[int]] | None = None):
        """The pandera schema of a parsed delivery: ``known`` holds, per referencing column, the
        values its reference holds; ``day`` is the partition being ingested."""
        import pandera.pandas as pa_schema

        known = known or {}
        columns = {}
        for name, column in self.columns.items():
            checks = _range_checks(column)
            if column.within_day:
                start = pd.Timestamp(day)
                checks.append(
                    pa_schema.Check.in_range(
                        start,
                        start + timedelta(days=1),
                        include_max=False,
                        error="inside the partition's day",
                    )
                )
            if column.references is not None:
                where = column.references
                lag = f" {where.days_before} days before" if where.days_before else ""
                checks.append(_one_of(known[name], f"a {where.column} of {where.table}{lag}"))
            dtype = _PANDAS_TYPES[column.type] if self.daily else _STORED_TYPES[column.type]
            columns[name] = pa_schema.Column(
                dtype,
                checks,
                nullable=column.nullable,
                unique=column.unique,
                report_duplicates="exclude_first",
            )
        return pa_schema.DataFrameSchema(columns, strict=True, name=self.name)


def _range_checks(column: Column) -> list:
    import pandera.pandas as pa_schema

    checks = []
    if column.min is not None:
        error = "not negative" if column.min == 0 else f"at least {column.min:,g}"
        checks.append(pa_schema.Check.ge(column.min, error=error))
    if column.max is not None:
        checks.append(pa_schema.Check.le(column.max, error=f"at most {column.max:,g}"))
    if column.one_of is not None:
        checks.append(pa_schema.Check.isin(column.one_of, error=" or ".join(map(str, column.one_of))))
    return checks


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
    import pandera.pandas as pa_schema

    known = pd.Index(list(ids) if not isinstance(ids, pd.Series | pd.Index) else ids)
    return pa_schema.Check(lambda values: values.isin(known), error=error)


def split(
    extract: pa.Table | pd.DataFrame,
    table: Table,
    day: date,
    known: Mapping[str, Iterable[int]] | None = None,
    *,
    zone: ZoneInfo = UTC,
    first_seen: FirstSeen | None = None,
) -> Split:
    """Check one day's delivery of a daily ``table``; valid rows come back typed (``stored_as``, else
    int64, float64, datetime).

    ``known`` holds, per column that references another table, the values that table holds;
    ``zone`` is the platform's time zone (timestamps are wall times there); ``first_seen`` answers
    which values of the column unique across days the lake already holds on another day (a
    re-delivered or overlapping extract), and those rows are quarantined with that day."""
    across_days = next((name for name, c in table.columns.items() if c.unique_across_days), None)
    result = _split(
        extract, table.kinds, table.schema(day, known), zone, first_seen if across_days else None, across_days
    )
    narrowed = {name: c.stored_as for name, c in table.columns.items() if c.stored_as}
    return Split(result.valid.astype(narrowed), result.quarantined) if narrowed else result


def _split(
    extract: pa.Table | pd.DataFrame,
    columns: dict[str, str],
    schema: pa_schema.DataFrameSchema,
    zone: ZoneInfo,
    first_seen: FirstSeen | None,
    across_days: str | None = None,
) -> Split:
    import pandera.errors

    parsed = parse_extract(extract, columns, zone, schema.name)
    frame, raw = parsed.frame, parsed.raw
    reasons = {row: dict(problems) for row, problems in parsed.reasons.items()}
    unparsed = {(row, column) for row, texts in reasons.items() for column in texts}

    try:
        schema.validate(frame, lazy=True)
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

    if first_seen is not None and across_days is not None:
        candidates = frame[across_days].drop(index=list(reasons)).dropna()
        seen = first_seen(candidates)
        for row, identifier in candidates[candidates.isin(seen.index)].items():
            reasons.setdefault(int(row), {})[across_days] = [
                f"already ingested on another day (first seen {seen[identifier]})"
            ]

    bad = sorted(reasons)
    quarantined = pd.DataFrame(
        {
            column: pd.Series(values.take(pa.array(bad, pa.int64())).to_pylist(), dtype="string")
            for column, values in raw.items()
        }
    )
    quarantined.insert(0, "source_row", pd.Series(bad, dtype="int64"))
    quarantined["reason"] = pd.Series(
        ["; ".join(f"{c}: {text}" for c, texts in reasons[row].items() for text in texts) for row in bad],
        dtype="string",
    )
    valid = frame.drop(index=bad)
    stored = {column: _STORED_TYPES[kind] for column, kind in columns.items()}
    return Split(valid.astype(stored).reset_index(drop=True), quarantined)


@dataclass(frozen=True)
class ParsedExtract:
    """An extract's values parsed exactly, before the rules."""

    frame: pd.DataFrame  # typed columns (pandas' nullable types); null where missing or refused
    raw: dict[str, pa.Array]  # each column as text, as sent (bytes that are not UTF-8 escaped)
    reasons: dict[int, dict[str, list[str]]]  # row -> column -> why its value was refused


def parse_extract(
    extract: pa.Table | pd.DataFrame, columns: dict[str, str], zone: ZoneInfo = UTC, name: str = "extract"
) -> ParsedExtract:
    """Parse every value of ``columns`` (column -> kind, as ``TRANSACTION_COLUMNS``) exactly; the
    scoring service's /score_file parses its files with this too. Raises ``ContractError`` when the
    columns are not exactly these, or one is stored as a type that cannot hold its kind."""
    table = _as_table(extract, name)
    names = table.column_names
    missing = [c for c in columns if c not in names]
    unexpected = [c for c in names if c not in columns]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if missing or unexpected or repeated:
        raise ContractError(
            f"{name}: the extract's columns do not match the contract "
            f"(missing: {missing or 'none'}; unexpected: {unexpected or 'none'}; "
            f"repeated: {repeated or 'none'})"
        )
    raw, parsed, reasons = {}, {}, {}
    for column, kind in columns.items():
        shown, text, undecodable = _text(table.column(column), column, name)
        raw[column] = shown
        try:
            result = _parse(text, kind, zone)
        except TypeError:
            raise ContractError(
                f"{name}: column {column} is stored as {table.column(column).type}, which cannot "
                f"hold {kind} values (send text, or a column of that type)"
            ) from None
        for row in undecodable:
            reasons.setdefault(row, {})[column] = ["not valid UTF-8 text"]
        for row, problem in result.problems.items():
            reasons.setdefault(row, {})[column] = [problem]
        parsed[column] = result.values
    return ParsedExtract(_to_pandas(parsed, columns), raw, reasons)


def _as_table(extract: pa.Table | pd.DataFrame, name: str) -> pa.Table:
    if isinstance(extract, pa.Table):
        return extract
    try:
        return pa.Table.from_pandas(extract, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ContractError(f"{name}: a column mixes types that no column type holds ({error})") from error


def _text(column: pa.ChunkedArray, name: str, table: str) -> tuple[pa.Array, pa.Array, list[int]]:
    """A raw column as (its values shown as text, the array to parse, rows whose bytes are not UTF-8).

    Text and binary columns must be UTF-8; a row whose bytes are not is refused alone, and its value is
    shown with the bad bytes escaped (``\\xff``). Typed columns are parsed as they are."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_null(array.type):
        array = array.cast(pa.string())
    if pa.types.is_string_view(array.type) or pa.types.is_binary_view(array.type):
        array = array.cast(pa.large_binary() if pa.types.is_binary_view(array.type) else pa.large_string())
    if not any(
        check(array.type)
        for check in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_binary,
            pa.types.is_large_binary,
        )
    ):
        try:
            return array.cast(pa.string()), array, []
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            raise ContractError(
                f"{table}: column {name} is stored as {array.type}, which holds no {name} values"
            ) from None
    string_type = pa.large_string() if array.type in (pa.large_string(), pa.large_binary()) else pa.string()
    binary_type = pa.large_binary() if string_type == pa.large_string() else pa.binary()
    as_bytes = (
        array.view(binary_type)
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
        else array
    )
    try:
        text = as_bytes.cast(string_type)  # validates UTF-8
        return text, text, []
    except pa.ArrowInvalid:
        pass
    # Rare: find the rows whose bytes are not UTF-8, value by value.
    shown, kept, undecodable = [], [], []
    for row, value in enumerate(as_bytes.to_pylist()):
        if value is None:
            shown.append(None)
            kept.append(None)
            continue
        try:
            decoded = value.decode("utf-8")
        except UnicodeDecodeError:
            undecodable.append(row)
            shown.append(value.decode("utf-8", "backslashreplace"))
            kept.append(None)
            continue
        shown.append(decoded)
        kept.append(decoded)
    return pa.array(shown, string_type), pa.array(kept, string_type), undecodable


def _parse(text: pa.Array, kind: str, zone: ZoneInfo) -> parsing.Parsed:
    if kind == "integer":
        return parsing.parse_integers(text)
    if kind == "decimal":
        return parsing.parse_decimals(text)
    return parsing.parse_timestamps(text, zone)


def _to_pandas(parsed: dict[str, pa.Array], columns: dict[str, str]) -> pd.DataFrame:
    """Typed columns as pandas' nullable types: an int64 with nulls stays int64 (never a float)."""
    frame = {}
    for column, values in parsed.items():
        if columns[column] == "timestamp":
            frame[column] = pd.Series(pc.cast(values, pa.timestamp("ns")).to_pandas(), dtype="datetime64[ns]")
        else:
            frame[column] = pd.Series(
                values.to_pandas(
                    types_mapper={pa.int64(): pd.Int64Dtype(), pa.float64(): pd.Float64Dtype()}.get
                ),
                dtype=_PANDAS_TYPES[columns[column]],
            )
    return pd.DataFrame(frame)


def _describe(case) -> str:
    if case.check == "not_nullable":
        return "missing"
    if case.check == "field_uniqueness":
        return f"duplicate of an earlier row ({case.failure_case})"
    return f"must be {case.check} (got {case.failure_case})"


def check_reference(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    """Validate a reference table as a whole: a bad reference table is refused, not split."""
    import pandera.errors

    schema = table.schema()
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
