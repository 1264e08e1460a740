"""Exact parsing of raw values: the forms the lake's contracts and the scoring API both accept.

A source system sends text (or, sometimes, typed Parquet columns); the contract decides, value by
value, whether the text *is* a value of the column's type. A value is accepted only when it can be
stored exactly as sent, and nothing else in its column changes because of it (pandas' ``to_numeric``
turned a whole column into floats for one bad value, rounding every id above 2**53):

- **integers**: canonical decimal text (``0`` or ``-?[1-9][0-9]*``, so text -> int -> text is the
  identity: ``007``, ``+7``, `` 7``, ``7.0`` and ``1e3`` are refused, since they could be another
  system's different ids), within int64; integer Arrow columns as they are. Parsed by Arrow from the
  text, never through a float.
- **decimals** (amounts): decimal text with at most ``SIGNIFICANT_DIGITS`` significant digits, the
  most a float64 keeps exactly (the stored float prints back as the same number), within the
  float64 normal range; floating-point columns as they are.
- **timestamps**: ISO 8601 ``YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|+HH:MM|-HH:MM]``, a real calendar date
  from ``EARLIEST_YEAR`` to ``LATEST_YEAR``, no leap second, at most microseconds (what Python,
  DuckDB and the lake keep). Without an offset a timestamp is wall time in the platform's time zone;
  with one it is converted to that zone. Values are stored naive, in the platform's zone. In a zone
  with daylight saving, a wall time that does not exist (inside the spring-forward gap) is refused.

``TIMESTAMP`` is one regular expression for both doors: Arrow (RE2) applies it to the lake's
columns, Python's ``re`` to API requests, and the API's OpenAPI document publishes it (ECMA form),
so every string the document admits is a timestamp the service accepts, and the reverse.

Pure module: pyarrow only (no pandas, no Dagster); the scoring service imports it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.compute as pc

INT64_MAX = 2**63 - 1
SIGNIFICANT_DIGITS = 15  # every decimal with at most 15 significant digits round-trips through float64
SMALLEST_NORMAL = 2.2250738585072014e-308  # below, a float64 has fewer digits than that
EARLIEST_YEAR, LATEST_YEAR = 2000, 2099
DEFAULT_TIME_ZONE = "UTC"

_INTEGER = r"0|-?[1-9][0-9]*"
_DECIMAL = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
# A calendar date from 2000 to 2099 (29 February only in leap years: every fourth, 2000 included).
_DATE = (
    r"(?:20[0-9]{2}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)|20(?:[02468][048]|[13579][26])-02-29)"
)
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_OFFSET = r"Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00"
TIMESTAMP = rf"(?P<wall>{_DATE}[T ]{_TIME})(?P<fraction>\.[0-9]{{1,6}})?(?P<offset>{_OFFSET})?"
TIMESTAMP_FORM = "YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|+HH:MM|-HH:MM]"

_TIMESTAMP_RE = re.compile(TIMESTAMP)


def anchored(pattern: str) -> str:
    """``pattern`` for engines that search (RE2, JSON Schema): the whole value must match."""
    return f"^(?:{pattern})$"


def ecma(pattern: str) -> str:
    """``pattern`` as JSON Schema (ECMA-262) writes it: anchored, groups unnamed."""
    return anchored(re.sub(r"\(\?P<\w+>", "(", pattern))


def time_zone(name: str) -> ZoneInfo:
    """The platform's time zone from its IANA name; raises ``ValueError`` naming a bad one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"time zone {name!r} is not an IANA time zone name (e.g. UTC, Europe/Paris)"
        ) from error


# --- one value (the scoring API) ---------------------------------------------------------------------


def parse_timestamp(text: str, zone: ZoneInfo | None = None) -> datetime:
    """``text`` as a datetime: aware when it carries an offset, else naive. With ``zone``, the
    result is the naive wall time there (refused inside a daylight-saving gap). ``ValueError`` says
    what is wrong, never quoting the value (it may come from a request)."""
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected {TIMESTAMP_FORM}, a real date from {EARLIEST_YEAR} to {LATEST_YEAR}")
    value = datetime.fromisoformat(text)
    return value if zone is None else wall_time(value, zone)


def wall_time(value: datetime, zone: ZoneInfo) -> datetime:
    """A parsed timestamp as a naive wall time of ``zone``: converted when aware, checked when naive."""
    if value.tzinfo is not None:
        return value.astimezone(zone).replace(tzinfo=None)
    there = value.replace(tzinfo=zone)
    if there.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != value:
        raise ValueError(f"not a wall time of {zone.key}: a daylight-saving gap")
    return value


# --- a column (the lake) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """A column parsed: the typed values (null where missing or refused) and, per refused row, why."""

    values: pa.Array
    problems: dict[int, str]


def _refuse(parsed: Parsed, refused: pa.Array, why: Callable[[object], str], raw: pa.Array) -> Parsed:
    """``parsed`` with the rows where ``refused`` holds set to null, each explained by ``why(raw)``."""
    refused = pc.fill_null(refused, False)
    rows = pc.indices_nonzero(refused)
    if not len(rows):
        return parsed
    problems = dict(parsed.problems)
    shown = raw.take(rows)
    if pa.types.is_temporal(shown.type):  # as Arrow writes it: Python's datetime stops at year 9999
        shown = pc.cast(shown, pa.string())
    for row, value in zip(rows.to_pylist(), shown.to_pylist(), strict=True):
        problems.setdefault(row, why(value))
    values = pc.if_else(refused, pa.scalar(None, parsed.values.type), parsed.values)
    return Parsed(values, problems)


def _is_text(array: pa.Array) -> bool:
    return pa.types.is_string(array.type) or pa.types.is_large_string(array.type)


def _matches(column: pa.Array, pattern: str) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(column, anchored(pattern)), False)


def parse_integers(column: pa.Array) -> Parsed:
    """Integers exactly: canonical decimal text within int64, or an integer column."""
    if pa.types.is_integer(column.type):
        if not pa.types.is_uint64(column.type):
            return Parsed(pc.cast(column, pa.int64()), {})
        too_big = pc.greater(column, pa.scalar(INT64_MAX, pa.uint64()))
        kept = pc.if_else(too_big, pa.scalar(None, pa.uint64()), column)
        return _refuse(Parsed(pc.cast(kept, pa.int64()), {}), too_big, _integer_problem, column)
    if not _is_text(column):
        raise TypeError(column.type)
    digits = pc.utf8_ltrim(column, "-")
    limit = pc.if_else(pc.starts_with(column, "-"), pa.scalar(str(INT64_MAX + 1)), pa.scalar(str(INT64_MAX)))
    # Text of equal length compares as the numbers do: the int64 bound is a string comparison.
    length = pc.utf8_length(digits)
    in_range = pc.or_(pc.less(length, 19), pc.and_(pc.equal(length, 19), pc.less_equal(digits, limit)))
    accepted = pc.and_(_matches(column, _INTEGER), pc.fill_null(in_range, False))
    values = pc.cast(pc.if_else(accepted, column, pa.scalar(None, column.type)), pa.int64())
    return _refuse(
        Parsed(values, {}), pc.and_(pc.is_valid(column), pc.invert(accepted)), _integer_problem, column
    )


def _integer_problem(value) -> str:
    text = str(value)
    if re.fullmatch(r"-?[0-9]+", text) and not re.fullmatch(_INTEGER, text):
        return f"cannot parse as int64: leading zeros, not the canonical form of a number (got {text!r})"
    if re.fullmatch(_INTEGER, text):
        return f"cannot parse as int64: beyond the range of int64 (got {text!r})"
    return f"cannot parse as int64 (got {text!r})"


def parse_decimals(column: pa.Array) -> Parsed:
    """Floats exactly: decimal text of at most 15 significant digits, or a numeric column."""
    if pa.types.is_floating(column.type):
        floats = pc.cast(column, pa.float64())  # the value sent is the value stored, if it is a number
        not_finite = pc.invert(pc.is_finite(floats))
        return _refuse(
            Parsed(floats, {}), not_finite, lambda value: f"not a finite number (got {value})", column
        )
    if pa.types.is_integer(column.type):  # exact as a float up to 2**53; beyond, only if it round-trips
        floats = pc.cast(column, pa.float64(), safe=False)
        inexact = pc.not_equal(pc.cast(floats, column.type, safe=False), column)
        too_big = pc.greater_equal(pc.abs(floats), 2.0**63)  # where the cast back is undefined
        return _refuse(
            Parsed(floats, {}),
            pc.or_(inexact, too_big),
            lambda value: f"not exactly a float64 (got {value})",
            column,
        )
    if pa.types.is_decimal(column.type):
        column = pc.cast(column, pa.string())  # exact; then judged as text
    if not _is_text(column):
        raise TypeError(column.type)
    mantissa = pc.replace_substring_regex(pc.replace_substring_regex(column, r"[eE].*$", ""), r"[-.]", "")
    significant = pc.utf8_length(pc.utf8_rtrim(pc.utf8_ltrim(mantissa, "0"), "0"))
    well_formed = _matches(column, _DECIMAL)
    precise = pc.and_(well_formed, pc.fill_null(pc.less_equal(significant, SIGNIFICANT_DIGITS), False))
    floats = pc.cast(pc.if_else(precise, column, pa.scalar(None, column.type)), pa.float64())
    magnitude = pc.abs(floats)
    # Finite, and either zero written as zero or a normal float (no overflow, no underflow).
    representable = pc.and_(
        pc.is_finite(floats),
        pc.or_(
            pc.and_(pc.equal(magnitude, 0.0), pc.equal(significant, 0)),
            pc.greater_equal(magnitude, SMALLEST_NORMAL),
        ),
    )
    accepted = pc.fill_null(representable, False)

    def why(value) -> str:
        text = str(value)
        if not re.fullmatch(_DECIMAL, text):
            return f"cannot parse as a decimal number (got {text!r})"
        if len(re.sub(r"[-.]", "", re.sub(r"[eE].*$", "", text)).strip("0")) > SIGNIFICANT_DIGITS:
            return (
                f"more than {SIGNIFICANT_DIGITS} significant digits: more than a float64 holds (got {text!r})"
            )
        return f"outside the range of float64 (got {text!r})"

    return _refuse(Parsed(floats, {}), pc.and_(pc.is_valid(column), pc.invert(accepted)), why, column)


def parse_timestamps(column: pa.Array, zone: ZoneInfo) -> Parsed:
    """Timestamps as naive wall times of ``zone``, in microseconds: ISO 8601 text, or a timestamp
    column (naive: wall time in ``zone``; with a time zone: converted)."""
    if pa.types.is_timestamp(column.type):
        return _typed_timestamps(column, zone)
    if not _is_text(column):
        raise TypeError(column.type)
    parts = pc.extract_regex(column, anchored(TIMESTAMP))  # null where the form is wrong
    # The form admits only real dates and times, so strptime has nothing left to refuse or roll over.
    wall = pc.strptime(
        pc.replace_substring(pc.struct_field(parts, "wall"), "T", " "), format="%Y-%m-%d %H:%M:%S", unit="us"
    )
    fraction = pc.struct_field(parts, "fraction")  # "" or ".f" to ".ffffff"
    micros = pc.cast(pc.utf8_rpad(pc.utf8_slice_codeunits(fraction, 1), 6, "0"), pa.int64())
    wall = pc.add(wall, pc.cast(micros, pa.duration("us")))
    offset = pc.struct_field(parts, "offset")
    utc = pc.subtract(wall, pc.cast(pc.multiply(_offset_minutes(offset), 60_000_000), pa.duration("us")))
    values = pc.if_else(pc.equal(offset, ""), wall, _wall_time(utc, zone))
    parsed = _refuse(
        Parsed(values, {}), pc.and_(pc.is_valid(column), pc.is_null(parts)), _timestamp_problem, column
    )
    return _refuse_gaps(parsed, pc.fill_null(pc.equal(offset, ""), False), zone, column)


def _timestamp_problem(value) -> str:
    return f"expected {TIMESTAMP_FORM}, a real date from {EARLIEST_YEAR} to {LATEST_YEAR} (got {value!r})"


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _offset_minutes(offset: pa.Array) -> pa.Array:
    """Minutes east of UTC of ``Z``, ``+HH:MM`` or ``-HH:MM`` (0 where there is none)."""
    signed = pc.if_else(pc.is_in(offset, pa.array(["", "Z"])), pa.scalar("+00:00"), offset)
    hours = pc.cast(pc.utf8_slice_codeunits(signed, 1, 3), pa.int64())
    minutes = pc.add(pc.multiply(hours, 60), pc.cast(pc.utf8_slice_codeunits(signed, 4, 6), pa.int64()))
    return pc.if_else(pc.starts_with(signed, "-"), pc.negate(minutes), minutes)


def _wall_time(utc: pa.Array, zone: ZoneInfo) -> pa.Array:
    """Naive UTC instants as naive wall times of ``zone``."""
    return pc.local_timestamp(pc.cast(utc, pa.timestamp("us", tz=zone.key)))


def _refuse_gaps(parsed: Parsed, naive: pa.Array, zone: ZoneInfo, raw: pa.Array) -> Parsed:
    """Refuse naive wall times that do not exist in ``zone``: past a spring-forward gap, the two
    ways of resolving them differ."""
    earliest = pc.assume_timezone(parsed.values, zone.key, nonexistent="earliest", ambiguous="earliest")
    latest = pc.assume_timezone(parsed.values, zone.key, nonexistent="latest", ambiguous="earliest")
    gap = pc.and_(naive, pc.fill_null(pc.not_equal(earliest, latest), False))
    return _refuse(
        parsed,
        gap,
        lambda value: f"not a wall time of {zone.key}: a daylight-saving gap (got {_shown(value)})",
        raw,
    )


def _typed_timestamps(column: pa.Array, zone: ZoneInfo) -> Parsed:
    unit = column.type.unit
    counts = pc.cast(column.cast(pa.timestamp(unit)), pa.int64())  # the instant (UTC when zoned), in units
    if unit == "ns":
        finer = pc.not_equal(pc.subtract(counts, pc.multiply(pc.divide(counts, 1000), 1000)), 0)
        micros = pc.divide(counts, 1000)
    else:
        finer = pc.not_equal(counts, counts)  # false where there is a value: nothing finer than us
        factor = {"s": 1_000_000, "ms": 1_000, "us": 1}[unit]
        # Beyond +-2**62 microseconds (146,000 years) the multiplication would wrap around into
        # an ordinary date: such counts are null here, and refused below as outside the years.
        scalable = pc.less_equal(pc.abs(counts), 2**62 // factor)
        micros = pc.multiply(pc.if_else(scalable, counts, pa.scalar(None, pa.int64())), factor)
    instants = pc.cast(micros, pa.timestamp("us"))
    values = _wall_time(instants, zone) if column.type.tz else instants
    earliest, latest = (
        pa.scalar(datetime(year, 1, 1), pa.timestamp("us")) for year in (EARLIEST_YEAR, LATEST_YEAR + 1)
    )
    within = pc.and_(pc.greater_equal(values, earliest), pc.less(values, latest))
    outside = pc.and_(pc.is_valid(column), pc.invert(pc.fill_null(within, False)))
    parsed = _refuse(
        Parsed(values, {}),
        finer,
        lambda value: f"more precise than the microseconds the lake keeps (got {value})",
        column,
    )
    parsed = _refuse(
        parsed, outside, lambda value: f"not from {EARLIEST_YEAR} to {LATEST_YEAR} (got {value})", column
    )
    if column.type.tz:
        return parsed
    return _refuse_gaps(parsed, pc.is_valid(column), zone, column)
