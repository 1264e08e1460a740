"""The lake's contract against a hostile source system: every row lands exactly as sent or is
quarantined with its reason, and no damaged row changes any other.

A property test generates extracts with random valid rows (ids over the whole int64 range, amounts,
timestamps in any offset) and random damage of many kinds, delivered as a Parquet file, and checks
every row. Then one test per class of problem the review found: ids rounded through floats, mixed
and fixed offsets, bytes that are not UTF-8, ids already ingested on another day, files that cannot
be read (failed at once, naming the file, not retried).
"""

import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel_core import contracts, parsing
from resources.calendar import Calendar
from resources.lake import LocalLake
from resources.sources import LandingZone, UnreadableFile
from tests.payments import SimulatorSource, asset, split_transactions

DAY = date(2026, 1, 5)
COLUMNS = ["transaction_id", "transacted_at", "customer_id", "terminal_id", "amount"]
KNOWN = list(range(1, 21))  # customers and terminals the lake knows
UTC = ZoneInfo("UTC")


def parquet_round_trip(columns: dict[str, pa.Array]) -> pa.Table:
    """The extract as a landed file is read back: written to Parquet bytes and read, as is."""
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return pq.read_table(io.BytesIO(buffer.getvalue()))


def text_column(values: list) -> pa.Array:
    """A Parquet text column; bytes values go in as they are, UTF-8 or not (as a hostile writer can)."""
    raw = [v if isinstance(v, bytes) or v is None else v.encode() for v in values]
    return pa.array(raw, pa.binary()).view(pa.string())


def split(table, zone=UTC, first_seen=None):
    return split_transactions(table, DAY, KNOWN, KNOWN, zone=zone, first_seen=first_seen)


# --- the property: random valid rows, random damage -----------------------------------------------


@dataclass(frozen=True)
class Row:
    transaction_id: str
    transacted_at: str
    customer_id: str
    terminal_id: str
    amount: str
    instant: datetime  # what transacted_at means, as a wall time of UTC


@st.composite
def valid_rows(draw, n: int) -> list[Row]:
    ids = draw(st.lists(st.integers(0, parsing.INT64_MAX), min_size=n, max_size=n, unique=True))
    rows = []
    for transaction_id in ids:
        seconds = draw(st.integers(0, 86_399))
        micros = draw(st.integers(0, 999_999))
        instant = datetime(DAY.year, DAY.month, DAY.day) + timedelta(seconds=seconds, microseconds=micros)
        # Any offset from -12:00 to +14:00 in quarter hours, or none, or Z: the same instant written
        # as the wall time of that offset.
        form = draw(st.sampled_from(["naive", "Z", "offset"]))
        digits = draw(st.integers(0, 6))
        fraction = f".{micros:06d}"[: digits + 1] if digits else ""
        instant = instant.replace(microsecond=int((fraction[1:] or "0").ljust(6, "0")))
        if form == "offset":
            quarter_hours = draw(st.integers(-48, 56))
            offset = timedelta(minutes=15 * quarter_hours)
            sign = "-" if quarter_hours < 0 else "+"
            hours, minutes = divmod(abs(quarter_hours) * 15, 60)
            wall = instant + offset
            text = f"{wall:%Y-%m-%dT%H:%M:%S}{fraction}{sign}{hours:02d}:{minutes:02d}"
        else:
            text = f"{instant:%Y-%m-%d %H:%M:%S}{fraction}" + ("Z" if form == "Z" else "")
        cents = draw(st.integers(0, 10_000_000))
        rows.append(
            Row(
                str(transaction_id),
                text,
                str(draw(st.sampled_from(KNOWN))),
                str(draw(st.sampled_from(KNOWN))),
                f"{cents // 100}.{cents % 100:02d}",
                instant,
            )
        )
    return rows


# Each kind of damage: the column it breaks and what it does to the row's text there.
DAMAGE = {
    "empty id": ("transaction_id", lambda r: ""),
    "missing id": ("transaction_id", lambda r: None),
    "decimal id": ("transaction_id", lambda r: r.transaction_id + ".5"),
    "id beyond int64": ("transaction_id", lambda r: str(2**63 + int(r.transaction_id))),
    "id below int64": ("transaction_id", lambda r: str(-(2**63) - 1 - int(r.transaction_id))),
    "negative id": ("transaction_id", lambda r: "-" + str(int(r.transaction_id) % 10**6 + 1)),
    "id with leading zeros": ("transaction_id", lambda r: "00" + r.transaction_id),
    "id with a plus sign": ("transaction_id", lambda r: "+" + r.transaction_id),
    "id with spaces": ("transaction_id", lambda r: f" {r.transaction_id} "),
    "id in exponent form": ("transaction_id", lambda r: "1e3"),
    "id in full-width digits": ("transaction_id", lambda r: "１２３"),
    "id with a NUL byte": ("transaction_id", lambda r: r.transaction_id + "\x00"),
    "id not UTF-8": ("transaction_id", lambda r: r.transaction_id.encode() + b"\xff"),
    "customer id beyond int64": ("customer_id", lambda r: "99999999999999999999"),
    "unknown customer": ("customer_id", lambda r: "999"),
    "unknown terminal": ("terminal_id", lambda r: "0"),
    "terminal not UTF-8": ("terminal_id", lambda r: b"\xc3\x28"),
    "not a calendar date": ("transacted_at", lambda r: "2026-02-30 10:00:00"),
    "a date without a time": ("transacted_at", lambda r: "2026-01-05"),
    "nanoseconds": ("transacted_at", lambda r: "2026-01-05 10:00:00.1234567"),
    "leap second": ("transacted_at", lambda r: "2026-01-05 23:59:60"),
    "the day after": ("transacted_at", lambda r: "2026-01-06 00:00:00"),
    "an offset that moves it out of the day": ("transacted_at", lambda r: "2026-01-05T01:00:00+02:00"),
    "a lowercase t": ("transacted_at", lambda r: "2026-01-05t10:00:00"),
    "an offset beyond 14 hours": ("transacted_at", lambda r: "2026-01-05T10:00:00+15:00"),
    "amount with a comma": ("amount", lambda r: "12,50"),
    "amount NaN": ("amount", lambda r: "NaN"),
    "amount with 17 significant digits": ("amount", lambda r: "0.30000000000000004"),
    "negative amount": ("amount", lambda r: "-" + r.amount if r.amount.strip("0.") else "-1.00"),
    "amount above the maximum": ("amount", lambda r: "100000.01"),
    "amount underflowing": ("amount", lambda r: "1e-400"),
}


@st.composite
def damaged_extracts(draw):
    rows = draw(valid_rows(draw(st.integers(1, 30))))
    damaged = draw(
        st.dictionaries(st.integers(0, len(rows) - 1), st.sampled_from(sorted(DAMAGE)), max_size=8)
    )
    copies = draw(st.lists(st.integers(0, len(rows) - 1), max_size=3))  # a later row repeating an id
    return rows, damaged, copies


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_extracts())
def test_every_valid_row_is_stored_exactly_and_every_damaged_row_is_quarantined_with_its_reason(case):
    rows, damaged, copies = case
    texts = {column: [getattr(row, column) for row in rows] for column in COLUMNS}
    for row, kind in damaged.items():
        column, damage = DAMAGE[kind]
        texts[column][row] = damage(rows[row])
    # Rows repeating the id of the first row, appended at the end: the repeats are quarantined.
    repeats = [i for i in copies if i not in damaged]
    for i in repeats:
        for column in COLUMNS:
            texts[column].append(getattr(rows[i], column))
    table = parquet_round_trip({column: text_column(values) for column, values in texts.items()})

    result = split(table)

    intact = [i for i in range(len(rows)) if i not in damaged]
    duplicates = {len(rows) + k for k in range(len(repeats))}
    valid = result.valid
    assert valid["transaction_id"].tolist() == [int(rows[i].transaction_id) for i in intact]
    assert [str(v) for v in valid["transaction_id"]] == [rows[i].transaction_id for i in intact]  # as sent
    assert valid["customer_id"].tolist() == [int(rows[i].customer_id) for i in intact]
    assert valid["terminal_id"].tolist() == [int(rows[i].terminal_id) for i in intact]
    assert valid["amount"].tolist() == [float(rows[i].amount) for i in intact]
    assert [repr(v) for v in valid["amount"]] == [repr(float(rows[i].amount)) for i in intact]
    assert valid["transacted_at"].tolist() == [pd.Timestamp(rows[i].instant) for i in intact]
    assert valid.dtypes.astype(str).tolist() == ["int64", "datetime64[ns]", "int64", "int64", "float64"]

    quarantined = result.quarantined.set_index("source_row")
    assert set(quarantined.index) == set(damaged) | duplicates
    for row, kind in damaged.items():
        column = DAMAGE[kind][0]
        assert f"{column}: " in quarantined.loc[row, "reason"], (kind, quarantined.loc[row, "reason"])
    for row in duplicates:
        assert quarantined.loc[row, "reason"].startswith("transaction_id: duplicate of an earlier row")
    assert len(valid) + len(quarantined) == len(texts["transaction_id"])


def test_there_are_at_least_fifteen_kinds_of_damage_over_every_column():
    assert len(DAMAGE) >= 15
    assert {column for column, _ in DAMAGE.values()} == set(COLUMNS)


# --- ids: exact, and one bad value changes nothing else -------------------------------------------


def rows_with(ids: list[str]) -> pa.Table:
    n = len(ids)
    return parquet_round_trip(
        {
            "transaction_id": text_column(ids),
            "transacted_at": text_column(["2026-01-05 10:00:00"] * n),
            "customer_id": text_column(["1"] * n),
            "terminal_id": text_column(["2"] * n),
            "amount": text_column(["10.00"] * n),
        }
    )


@pytest.mark.parametrize("bad", ["", "12.5", "9223372036854775808", "1.5e18", "abc"])
def test_one_unparseable_id_among_300_large_ids_changes_no_other_id(bad):
    ids = [str(1_500_000_000_000_000_000 + 7 * i) for i in range(300)] + [bad]
    result = split(rows_with(ids))
    assert [str(v) for v in result.valid["transaction_id"]] == ids[:300]
    assert result.quarantined["source_row"].tolist() == [300]
    assert result.quarantined.loc[0, "transaction_id"] == bad


def test_ids_past_two_to_the_53_and_at_the_int64_limits_are_kept_to_the_last_digit():
    ids = ["9007199254740993", "9223372036854775807", "0", "9223372036854775806"]
    result = split(rows_with(ids))
    assert result.valid["transaction_id"].tolist() == [int(i) for i in ids]
    assert result.quarantined.empty


def test_a_negative_id_is_quarantined_as_the_scoring_api_refuses_it():
    result = split(rows_with(["-1", "5"]))
    assert result.valid["transaction_id"].tolist() == [5]
    assert result.quarantined.loc[0, "reason"] == "transaction_id: must be not negative (got -1)"


def test_typed_id_columns_are_taken_as_integers_and_a_float_column_is_refused_as_a_whole():
    table = rows_with(["1", "2"])
    as_int = table.set_column(0, "transaction_id", pa.array([2**62, 5], pa.int64()))
    assert split(as_int).valid["transaction_id"].tolist() == [2**62, 5]
    as_uint = table.set_column(0, "transaction_id", pa.array([2**63, 5], pa.uint64()))
    result = split(as_uint)
    assert result.valid["transaction_id"].tolist() == [5]
    assert "beyond the range of int64" in result.quarantined.loc[0, "reason"]
    as_float = table.set_column(0, "transaction_id", pa.array([1.0, 2.0]))
    with pytest.raises(contracts.ContractError, match="transaction_id is stored as double"):
        split(as_float)


def test_dictionary_encoded_and_large_text_columns_read_as_plain_text():
    table = rows_with(["11", "12"])
    encoded = table.set_column(0, "transaction_id", pa.array(["11", "12"]).dictionary_encode())
    large = table.set_column(0, "transaction_id", pa.array(["11", "12"], pa.large_string()))
    for variant in (encoded, large):
        assert split(variant).valid["transaction_id"].tolist() == [11, 12]


# --- time zones: decided per row, in the platform's zone --------------------------------------------


def rows_at(timestamps: list, ids=None) -> pa.Table:
    table = rows_with([str(i + 1) for i in range(len(timestamps))] if ids is None else ids)
    column = timestamps if isinstance(timestamps, pa.Array) else text_column(timestamps)
    return table.set_column(1, "transacted_at", column)


def test_a_file_of_mixed_offsets_is_judged_row_by_row_in_utc():
    stamps = [
        "2026-01-05T12:00:00+02:00",
        "2026-01-05T05:00:00-05:00",
        "2026-01-05 10:00:00",
        "2026-01-05T09:30:00Z",
    ]
    stamps += ["2026-01-05T01:00:00+02:00"]  # 23:00 UTC of the day before: this row alone is refused
    result = split(rows_at(stamps))
    assert result.valid["transacted_at"].tolist() == [
        pd.Timestamp("2026-01-05 10:00"),
        pd.Timestamp("2026-01-05 10:00"),
        pd.Timestamp("2026-01-05 10:00"),
        pd.Timestamp("2026-01-05 09:30"),
    ]
    assert result.quarantined["source_row"].tolist() == [4]
    assert "inside the partition's day" in result.quarantined.loc[0, "reason"]


def test_a_file_in_plus_two_hours_is_stored_as_sent_when_that_is_the_platforms_zone():
    stamps = [f"2026-07-05T{hour:02d}:15:00+02:00" for hour in range(24)]
    berlin = ZoneInfo("Europe/Berlin")  # +02:00 in July
    result = split_transactions(rows_at(stamps), date(2026, 7, 5), KNOWN, KNOWN, zone=berlin)
    assert result.quarantined.empty
    assert result.valid["transacted_at"].dt.hour.tolist() == list(range(24))  # the wall times sent


def test_naive_timestamps_are_wall_times_of_the_platforms_zone_and_a_daylight_saving_gap_is_refused():
    paris = ZoneInfo("Europe/Paris")
    stamps = ["2026-03-29 01:59:59", "2026-03-29 02:30:00", "2026-03-29 03:00:00"]
    result = split_transactions(rows_at(stamps), date(2026, 3, 29), KNOWN, KNOWN, zone=paris)
    assert result.valid["transacted_at"].tolist() == [pd.Timestamp(stamps[0]), pd.Timestamp(stamps[2])]
    assert "a daylight-saving gap" in result.quarantined.loc[0, "reason"]


def test_typed_timestamp_columns_with_a_zone_are_converted_and_naive_ones_taken_as_wall_times():
    instants = [datetime(2026, 1, 5, 8, 0), datetime(2026, 1, 5, 22, 30)]
    zoned = pa.array(instants, pa.timestamp("us", tz="UTC"))
    naive = pa.array(instants, pa.timestamp("ns"))
    nanos = pa.array([1_767_607_200_000_000_001], pa.timestamp("ns"))  # finer than microseconds
    assert split(rows_at(zoned)).valid["transacted_at"].tolist() == [pd.Timestamp(i) for i in instants]
    assert split(rows_at(naive)).valid["transacted_at"].tolist() == [pd.Timestamp(i) for i in instants]
    tokyo = split_transactions(rows_at(zoned), DAY, KNOWN, KNOWN, zone=ZoneInfo("Asia/Tokyo"))
    assert tokyo.valid["transacted_at"].tolist() == [pd.Timestamp("2026-01-05 17:00")]  # +09:00
    assert "microseconds" in split(rows_at(nanos)).quarantined.loc[0, "reason"]


@pytest.mark.parametrize(
    "column",
    [
        # counts whose scaling to microseconds would wrap around int64 into 2026-01-05 12:00
        pa.array([-9223370269240375808], pa.timestamp("ms")),
        pa.array([-9223372035087161408], pa.timestamp("s")),
        pa.array([253_402_300_800_000_000], pa.timestamp("us")),  # year 10000: past Python's datetime
        pa.array([-62_135_596_800_000_001], pa.timestamp("us", tz="UTC")),  # before year 1
    ],
    ids=["ms_wrapping", "s_wrapping", "year_10000", "before_year_1"],
)
def test_typed_timestamps_far_outside_the_years_are_quarantined_not_wrapped_or_crashing(column):
    result = split(rows_at(column))
    assert result.valid.empty
    assert "transacted_at: not from 2000 to 2099" in result.quarantined.loc[0, "reason"]


def test_an_integer_amount_is_stored_exactly_or_quarantined_when_no_float64_holds_it():
    table = rows_with(["1", "2", "3"]).set_column(
        4, "amount", pa.array([12, 2**53 + 1, -(2**53)], pa.int64())
    )
    result = split(table)
    assert result.valid["amount"].tolist() == [12.0]  # -2**53 is exact, and refused as negative
    reasons = result.quarantined.set_index("source_row")["reason"]
    assert reasons[1] == f"amount: not exactly a float64 (got {2**53 + 1})"
    assert reasons[2].startswith("amount: must be not negative")


# --- bytes that are not text ------------------------------------------------------------------------


def test_bytes_that_are_not_utf8_quarantine_their_row_naming_the_column_and_spare_the_others():
    table = rows_with(["1", "2", "3"]).set_column(3, "terminal_id", text_column([b"5", b"\xff\xfe", b"7"]))
    result = split(table)
    assert result.valid["terminal_id"].tolist() == [5, 7]
    row = result.quarantined.loc[0]
    assert row["source_row"] == 1 and row["reason"] == "terminal_id: not valid UTF-8 text"
    assert row["terminal_id"] == "\\xff\\xfe"  # shown with the bytes escaped


def test_a_landed_file_with_undecodable_bytes_is_read_without_decoding(tmp_path):
    landing = LandingZone(lake=LocalLake(root=str(tmp_path)))
    table = rows_with(["1", "2"]).set_column(0, "transaction_id", text_column([b"1", b"\x80"]))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    landing.lake.write_file(f"landing/transactions/date={DAY}/transactions.parquet", buffer.getvalue())
    result = split(landing.read("transactions", DAY))
    assert result.valid["transaction_id"].tolist() == [1]
    assert result.quarantined.loc[0, "reason"] == "transaction_id: not valid UTF-8 text"


# --- the same id on another day -----------------------------------------------------------------------


@pytest.mark.parametrize("lookup", ["the lake, each day", "one read for a run of many days"])
def test_an_id_already_ingested_on_another_day_is_quarantined_with_that_day_and_a_rerun_is_idempotent(
    tmp_path, lookup
):
    lake = LocalLake(root=str(tmp_path))
    first, second = date(2026, 1, 5), date(2026, 1, 6)
    lake.write_partition("raw_transactions", date(2026, 1, 1), pd.DataFrame({"transaction_id": [1]}))
    # A run of many days reads the lake once, then records each day it writes (platform_assets/
    # components/source.py): it must answer as the lake would at each moment.
    held = lake.value_days("raw_transactions", "transaction_id") if lookup.startswith("one") else None

    def ingest(day, ids):
        table = rows_with(ids).set_column(1, "transacted_at", text_column([f"{day} 10:00:00"] * len(ids)))

        def first_seen(values):
            if held is not None:
                return held.days_holding(values, other_than=day)
            return lake.days_holding("raw_transactions", "transaction_id", values, other_than=day)

        result = split_transactions(table, day, KNOWN, KNOWN, first_seen=first_seen)
        lake.write_partition("raw_transactions", day, result.valid)
        if held is not None:
            held.replace_day(day, result.valid["transaction_id"])
        return result

    ingest(first, ["10", "11", "12"])
    overlapping = ingest(second, ["12", "13", "9223372036854775807"])
    again = ingest(first, ["10", "11", "12"])  # the first day re-delivered: its own ids are not repeats

    assert overlapping.valid["transaction_id"].tolist() == [13, 2**63 - 1]
    assert overlapping.quarantined.loc[0, "reason"] == (
        "transaction_id: already ingested on another day (first seen 2026-01-05)"
    )
    assert again.valid["transaction_id"].tolist() == [10, 11, 12] and again.quarantined.empty
    older = ingest(date(2026, 1, 7), ["1", "14"])  # held by a day ingested before the run
    assert older.valid["transaction_id"].tolist() == [14]
    assert older.quarantined.loc[0, "reason"].endswith("(first seen 2026-01-01)")


def test_looking_up_ids_before_anything_was_ingested_finds_nothing(tmp_path):
    lake = LocalLake(root=str(tmp_path))
    found = lake.days_holding("raw_transactions", "transaction_id", pd.Series([1, 2]), other_than=DAY)
    assert found.empty


# --- files that cannot be read, and columns that do not fit: refused whole, at once ------------------


def good_file() -> bytes:
    buffer = io.BytesIO()
    pq.write_table(rows_with(["1", "2"]), buffer)
    return buffer.getvalue()


UNREADABLE = {
    "empty": b"",
    "truncated": good_file()[: len(good_file()) // 2],
    "not parquet": b"transaction_id,amount\n1,2\n",
    "footer only": b"PAR1" + good_file()[-8:],
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_an_unreadable_landed_file_is_refused_naming_its_path(tmp_path, kind):
    landing = LandingZone(lake=LocalLake(root=str(tmp_path)))
    landing.lake.write_file(f"landing/transactions/date={DAY}/transactions.parquet", UNREADABLE[kind])
    with pytest.raises(
        UnreadableFile, match=rf"{tmp_path}/landing/transactions/date={DAY}/transactions.parquet"
    ):
        landing.read("transactions", DAY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["amount"]), "missing: \\['amount'\\]"),
        (lambda t: t.append_column("channel", pa.array(["web"] * t.num_rows)), "unexpected: \\['channel'\\]"),
        (lambda t: t.append_column("amount", t.column("amount")), "repeated: \\['amount'\\]"),
        (lambda t: t.set_column(4, "amount", pa.array([[1.0]] * t.num_rows)), "amount is stored as list"),
        (lambda t: t.set_column(0, "transaction_id", pa.array([True] * t.num_rows)), "stored as bool"),
    ],
    ids=["missing", "unexpected", "repeated", "a list column", "a boolean id"],
)
def test_an_extract_whose_columns_do_not_fit_is_refused_whole(change, message):
    with pytest.raises(contracts.ContractError, match=message):
        split(change(rows_with(["1", "2"])))


def ingestion_events(tmp_path, payload: bytes):
    """Materialize raw_transactions for DAY with ``payload`` as the landed file."""
    lake = LocalLake(root=str(tmp_path / "lake"))
    landing = LandingZone(lake=lake)
    landing.deliver_reference(SimulatorSource(n_customers=30, n_terminals=30))
    lake.write_table("customers", landing.read("customers"))
    lake.write_table("terminals", landing.read("terminals"))
    lake.write_file(f"landing/transactions/date={DAY}/transactions.parquet", payload)
    result = dg.materialize(
        [asset("raw_transactions")],
        partition_key=DAY.isoformat(),
        resources={"lake": lake, "landing": landing, "calendar": Calendar()},
        raise_on_error=False,
    )
    return result, landing.location("transactions", DAY)


@pytest.mark.parametrize(
    "payload",
    [b"", good_file()[:100], parquet_round_trip({"transaction_id": text_column(["1"])})],
    ids=["empty", "truncated", "columns missing"],
)
def test_an_unreadable_or_refused_file_fails_ingestion_at_once_naming_the_file_without_retries(
    tmp_path, payload
):
    if isinstance(payload, pa.Table):
        buffer = io.BytesIO()
        pq.write_table(payload, buffer)
        payload = buffer.getvalue()
    result, landed = ingestion_events(tmp_path, payload)

    assert not result.success
    types = [event.event_type for event in result.all_events]
    assert dg.DagsterEventType.STEP_UP_FOR_RETRY not in types
    (failure,) = [
        event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE
    ]
    assert landed in failure.event_specific_data.error.message
    assert failure.event_specific_data.user_failure_data.metadata["landing_file"].path == landed
