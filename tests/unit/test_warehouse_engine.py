"""How every process opens the warehouse (keel_core/warehouse_engine.py): extensions from the installed
packages only, S3 from the AWS SDK's settings, DuckLake attached by name, time travel, retried conflicts."""

import subprocess
import sys
import tempfile
import textwrap
from datetime import date

import dagster as dg
import duckdb
import pandas as pd
import pytest

from keel_core import warehouse_engine
from keel_core.warehouse_engine import WarehouseConflict, WarehouseLocation
from resources.warehouse import Warehouse
from tests.conftest import require_program


def local_lake(tmp_path) -> WarehouseLocation:
    """A DuckLake with its catalog in a local DuckDB file: the same code path without a server."""
    return WarehouseLocation(
        catalog=str(tmp_path / "catalog.ducklake"), data_path=str(tmp_path / "data") + "/"
    )


def test_a_warehouse_is_a_file_or_a_ducklake_never_both_or_neither():
    with pytest.raises(ValueError, match="exactly one"):
        WarehouseLocation()
    with pytest.raises(ValueError, match="exactly one"):
        WarehouseLocation(file="/x.duckdb", catalog="postgres:dbname=x")
    with pytest.raises(ValueError, match="data path"):
        WarehouseLocation(catalog="postgres:dbname=x")


def test_extensions_come_from_the_installed_packages_and_nothing_is_ever_installed(tmp_path):
    config = warehouse_engine.engine_config()
    assert config["autoinstall_known_extensions"] is False
    with warehouse_engine.connect(local_lake(tmp_path), read_only=False) as connection:
        directory = connection.execute("select current_setting('extension_directory')").fetchone()[0]
        assert directory == warehouse_engine.extension_directory()
        loaded = {
            name: path
            for name, path in connection.execute(
                "select extension_name, install_path from duckdb_extensions() where loaded"
            ).fetchall()
        }
    for extension in ("ducklake", "postgres_scanner"):  # httpfs only where S3 is reached (below)
        assert loaded[extension].startswith(directory), (extension, loaded[extension])
    assert "httpfs" not in loaded


def test_the_warehouse_opens_with_the_network_unreachable(tmp_path):
    """In a network namespace of its own (no interface but a down loopback), with auto-install off:
    every extension loads from the packages, and a DuckLake is written and read."""
    unshare = require_program("unshare")
    script = textwrap.dedent(
        f"""
        from keel_core.warehouse_engine import WarehouseLocation, connect
        lake = WarehouseLocation(catalog={str(tmp_path / "c.ducklake")!r}, data_path={str(tmp_path / "d")!r})
        with connect(lake, read_only=False) as connection:
            connection.execute("create table t as select 42 as answer")
        with connect(lake) as connection:
            print(connection.execute("select answer from t").fetchone()[0])
        """
    )
    offline = subprocess.run(
        [unshare, "--net", "--map-root-user", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == "42"
    # And the namespace is really offline: reaching the extension repository fails there.
    probe = subprocess.run(
        [
            unshare,
            "--net",
            "--map-root-user",
            sys.executable,
            "-c",
            "import socket; socket.create_connection(('extensions.duckdb.org', 443), timeout=5)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode != 0


def test_the_s3_secret_is_the_sdk_s_credentials_and_the_one_endpoint_setting(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA'quoted")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    sql = warehouse_engine.s3_secret_sql()
    assert "key_id 'AKIA''quoted'" in sql  # a quote in a value stays a value
    assert "session_token 'token'" in sql and "region 'eu-west-3'" in sql
    assert "endpoint '127.0.0.1:9000'" in sql and "use_ssl false" in sql and "url_style 'path'" in sql
    connection = duckdb.connect(config=warehouse_engine.engine_config())
    warehouse_engine.prepare(connection, s3=True, lake=False)  # DuckDB accepts it
    (path,) = connection.execute(
        "select install_path from duckdb_extensions() where extension_name = 'httpfs' and loaded"
    ).fetchone()
    assert path.startswith(warehouse_engine.extension_directory())
    secrets = connection.execute("select name, type from duckdb_secrets()").fetchall()
    assert secrets == [("keel_s3", "s3")]


def test_without_an_endpoint_s3_is_aws_s_own_over_tls(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    sql = warehouse_engine.s3_secret_sql()
    assert "endpoint" not in sql and "url_style" not in sql


def test_a_snapshot_is_read_as_it_was_and_never_written(tmp_path):
    warehouse = Warehouse.at(local_lake(tmp_path))
    day = date(2026, 1, 1)
    warehouse.replace_days("ml.t", "d", day, day, pd.DataFrame({"d": [day], "v": [1]}))
    then = warehouse.snapshot()
    warehouse.replace_days("ml.t", "d", day, day, pd.DataFrame({"d": [day], "v": [2]}))
    assert warehouse.snapshot() > then
    with warehouse.connect() as connection:
        assert connection.execute("select v from ml.t").fetchall() == [(2,)]
    with warehouse.connect(snapshot=then) as connection:
        assert connection.execute("select v from ml.t").fetchall() == [(1,)]
        assert warehouse_engine.current_snapshot(connection) == then
        with pytest.raises(duckdb.Error, match="read-only|read only"):
            connection.execute("insert into ml.t values ('2026-01-02', 3)")
    # Once the retention expired it, the snapshot is named as gone.
    with warehouse.connect(read_only=False) as connection:
        connection.execute("call ducklake_expire_snapshots('warehouse', older_than => now())")
    gone = pytest.raises(warehouse_engine.SnapshotGone, match=f"no snapshot {then} any more")
    with gone, warehouse.connect(snapshot=then):
        pass


def test_a_duckdb_file_has_no_snapshot(tmp_path):
    warehouse = Warehouse.at(WarehouseLocation(file=str(tmp_path / "w.duckdb")))
    day = date(2026, 1, 1)
    warehouse.replace_days("ml.t", "d", day, day, pd.DataFrame({"d": [day], "v": [1]}))
    assert warehouse.snapshot() is None
    with pytest.raises(ValueError, match="no snapshots"), warehouse.connect(snapshot=3):
        pass


def test_replacing_days_in_a_ducklake_keeps_each_day_in_files_of_its_own(tmp_path):
    location = local_lake(tmp_path)
    days = [date(2026, 1, 1), date(2026, 1, 2)]
    Warehouse.at(location).replace_days("ml.t", "d", days[0], days[1], pd.DataFrame({"d": days, "v": [1, 2]}))
    folders = sorted(path.parent.name for path in (tmp_path / "data").rglob("*.parquet"))
    assert folders == ["d=2026-01-01", "d=2026-01-02"]


def conflict() -> duckdb.TransactionException:
    return duckdb.TransactionException(
        "Failed to commit DuckLake transaction.\nTransaction conflict - attempting to delete from file"
    )


def test_a_conflicting_commit_is_done_again_until_it_lands(monkeypatch):
    monkeypatch.setattr(warehouse_engine.time, "sleep", lambda seconds: None)
    attempts = []

    def work():
        attempts.append(1)
        if len(attempts) < 3:
            raise conflict()
        return "landed"

    assert warehouse_engine.retry_conflicts(work, table="ml.t") == "landed"
    assert len(attempts) == 3


def test_a_conflict_that_persists_fails_naming_the_table(monkeypatch):
    waits = []
    monkeypatch.setattr(warehouse_engine.time, "sleep", waits.append)

    def work():
        raise conflict()

    with pytest.raises(WarehouseConflict, match=r"ml\.transaction_features: .*6 times"):
        warehouse_engine.retry_conflicts(work, table="ml.transaction_features")
    assert len(waits) == 5 and waits[-1] > waits[0]  # backing off (jittered, so not strictly rising)


def test_other_transaction_errors_are_not_retried(monkeypatch):
    monkeypatch.setattr(warehouse_engine.time, "sleep", lambda seconds: pytest.fail("retried"))

    def work():
        raise duckdb.TransactionException("Current transaction is aborted")

    with pytest.raises(duckdb.TransactionException, match="aborted"):
        warehouse_engine.retry_conflicts(work, table="ml.t")


def test_housekeeping_expires_old_snapshots_and_deletes_the_files_only_they_needed(tmp_path):
    warehouse = Warehouse.at(local_lake(tmp_path))
    day = date(2026, 1, 1)
    for value in range(3):  # a day re-run three times: two generations of files let go
        warehouse.replace_days("ml.t", "d", day, day, pd.DataFrame({"d": [day], "v": [value]}))
    files = lambda: sorted((tmp_path / "data").rglob("*.parquet"))  # noqa: E731
    assert len(files()) == 3
    with warehouse.connect(read_only=False) as connection:
        kept = warehouse_engine.expire_history(connection, keep_days=1, grace_days=0)
    assert kept == {"expired_snapshots": 0, "deleted_files": 0}  # every snapshot is younger than a day
    with warehouse.connect(read_only=False) as connection:
        connection.execute("call ducklake_expire_snapshots('warehouse', older_than => now())")
        done = warehouse_engine.expire_history(connection, keep_days=1, grace_days=0)
    assert done["deleted_files"] == 2 and len(files()) == 1
    with warehouse.connect() as connection:
        assert connection.execute("select v from ml.t").fetchall() == [(2,)]
    with pytest.raises(ValueError, match="keep_days"), warehouse.connect(read_only=False) as connection:
        warehouse_engine.expire_history(connection, keep_days=0, grace_days=0)


@pytest.mark.parametrize("kind", ["ducklake", "duckdb file"])
def test_the_weekly_housekeeping_job_cleans_a_ducklake_and_leaves_a_duckdb_file_alone(tmp_path, kind):
    from platform_assets.defs.warehouse.maintenance import warehouse_maintenance, weekly_warehouse_maintenance

    location = (
        local_lake(tmp_path) if kind == "ducklake" else WarehouseLocation(file=str(tmp_path / "w.duckdb"))
    )
    warehouse = Warehouse.at(location)
    day = date(2026, 1, 1)
    warehouse.replace_days("ml.t", "d", day, day, pd.DataFrame({"d": [day], "v": [1]}))
    result = warehouse_maintenance.execute_in_process(resources={"warehouse": warehouse})
    assert result.success
    done = result.output_for_node("warehouse_housekeeping")
    if kind == "ducklake":
        assert done == {"expired_snapshots": 0, "deleted_files": 0}  # nothing is 90 days old yet
    else:
        assert done is None
    assert weekly_warehouse_maintenance.default_status == dg.DefaultScheduleStatus.RUNNING


def test_what_changed_since_a_snapshot_is_named_even_with_new_columns_or_once_it_expired(tmp_path):
    warehouse = Warehouse.at(local_lake(tmp_path))
    day = date(2026, 1, 1)
    warehouse.replace_days(
        "ml.t", "d", day, day, pd.DataFrame({"d": [day, day], "id": [1, 2], "v": [1.0, 2.0]})
    )
    then = warehouse.snapshot()
    changed = pd.DataFrame({"d": [day, day], "id": [1, 2], "v": [1.0, 3.0], "w": [0.5, 0.5]})
    warehouse.replace_days("ml.t", "d", day, day, changed)  # a row corrected, a column added
    with warehouse.connect() as connection:
        said = warehouse_engine.changed_rows(connection, "ml.t", "d", day, day, then, ("id",))
        assert warehouse_engine.changed_rows(connection, "ml.t", "d", day, day, then + 1, ("id",)) is None
    assert said.startswith(f"ml.t, days {day} .. {day}, since snapshot {then}: columns added: w;")
    assert "1 rows as they were are gone or changed, 1 rows are new or changed (e.g. id 2)" in said
    with warehouse.connect(read_only=False) as connection:
        connection.execute("call ducklake_expire_snapshots('warehouse', older_than => now())")
        said = warehouse_engine.changed_rows(connection, "ml.t", "d", day, day, then, ("id",))
    assert said == f"ml.t: snapshot {then} was expired, so what changed since cannot be named"


def test_a_namespace_s_first_runs_at_once_all_attach_its_new_catalog(postgres_server):
    """DuckLake creates a metadata schema on its first ATTACH; of several first ATTACHes at once, all
    but one used to fail on PostgreSQL's unique index. Each must find the winner's schema instead."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from tests.databases import temporary_database

    with (
        temporary_database(postgres_server, "first_attach") as database,
        tempfile.TemporaryDirectory() as data,
    ):
        lake = WarehouseLocation(
            catalog=f"postgres:dbname={database} host=127.0.0.1 user=postgres",
            data_path=data + "/",
            metadata_schema="keel_new_namespace",
        )
        start = Barrier(4)

        def first_attach(_):
            start.wait(timeout=120)
            with warehouse_engine.connect(lake, read_only=False) as connection:
                return warehouse_engine.current_snapshot(connection)

        with ThreadPoolExecutor(4) as pool:
            snapshots = list(pool.map(first_attach, range(4)))
    assert snapshots == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (duckdb.IOException("IO Error: Could not establish connection error for HTTP HEAD to 'x'"), True),
        (duckdb.IOException("IO Error: Failed to read connection error for HTTP HEAD to 'x'"), True),
        (duckdb.Error("Failed to read connection"), True),  # a read cut off mid-query
        (duckdb.IOException('IO Error: No files found that match the pattern "s3://b/x.parquet"'), False),
        (duckdb.BinderException('Referenced column "x" not found'), False),
        (ValueError("Could not establish connection"), False),
    ],
    ids=["unreachable", "reset or too slow", "cut off", "missing file", "binder", "not duckdb"],
)
def test_only_duckdb_s_network_errors_are_transient(error, transient):
    assert warehouse_engine.is_transient_engine_error(error) is transient


@pytest.mark.parametrize(("status", "transient"), [(503, True), (429, True), (403, False), (404, False)])
def test_an_http_answer_is_transient_only_when_the_server_is_busy_or_broken(status, transient):
    error = duckdb.HTTPException(f"HTTP Error: {status}")
    error.status_code = status  # as httpfs sets it
    assert warehouse_engine.is_transient_engine_error(error) is transient


@pytest.fixture
def postgres_lake(postgres_server, tmp_path):
    """A DuckLake cataloged in a database of its own on the local PostgreSQL, as deployed."""
    from tests.databases import temporary_database

    with temporary_database(postgres_server, "lake") as database:
        yield WarehouseLocation(
            catalog=f"postgres:dbname={database} host=127.0.0.1 user=postgres", data_path=f"{tmp_path}/data/"
        )


def test_a_reader_sees_one_snapshot_while_another_run_commits(postgres_lake):
    """A step's reads (a model's features, then its labels) must not straddle another run's commit."""
    with warehouse_engine.connect(postgres_lake, read_only=False) as writer:
        writer.execute("create table payments as select 1 as id")
    with warehouse_engine.connect(postgres_lake) as reader:
        before = reader.execute("select count(*) from payments").fetchone()[0]
        seen = warehouse_engine.current_snapshot(reader)
        with warehouse_engine.connect(postgres_lake, read_only=False) as writer:
            writer.execute("insert into payments values (2)")
        assert reader.execute("select count(*) from payments").fetchone()[0] == before == 1
        assert warehouse_engine.current_snapshot(reader) == seen
    with warehouse_engine.connect(postgres_lake) as later:
        assert later.execute("select count(*) from payments").fetchone()[0] == 2


def test_a_reader_goes_on_after_a_failed_statement(postgres_lake):
    """A notebook's bad query must not leave its connection unusable."""
    with warehouse_engine.connect(postgres_lake, read_only=False) as writer:
        writer.execute("create table payments as select 'x' as code")
    with warehouse_engine.connect(postgres_lake) as reader:
        with pytest.raises(duckdb.ConversionException):
            reader.execute("select cast(code as integer) from payments").fetchall()
        assert reader.execute("select count(*) from payments").fetchone()[0] == 1
