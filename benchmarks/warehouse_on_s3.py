"""What the prod warehouse costs on S3: one pipeline run over a range of days, step by step, and a
plain read of the lake, for the checkout it runs in.

    .venv/bin/python benchmarks/warehouse_on_s3.py --label after --out benchmarks/results/warehouse_on_s3.json

Staging and prod moved from a DuckDB file (dbt reading the S3 lake through fsspec's s3fs registered
on DuckDB 2.0) to a DuckLake (catalog in PostgreSQL, data as Parquet on S3; DuckDB 1.4 reading S3
with its own httpfs). This measures both sides the same way, each in its own checkout: the prod
environment as ``tests/integration/test_s3_lake.py`` sets it up (moto's S3 server on loopback; for a
DuckLake, a catalog database of its own on the local PostgreSQL, dropped after), days landed, then
one ``keel_pipeline`` run over them (the lake, the warehouse and ``fraud/features``). It reports each
step's time (STEP_START to STEP_SUCCESS in the run's event log), per day too, and the rows ingested;
then times ``count(*), sum(amount)`` over the lake's transactions read as that checkout's dbt reads
S3 (median of 3, each on a fresh connection and S3 client: nothing cached between them).

Which side a checkout is: one with ``keel_core/warehouse_engine.py`` has the DuckLake. The summary
is printed; with ``--out`` it is appended to that JSON's list of runs under ``--label``.
"""

import argparse
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, closing, contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

FIRST_DAY = date(2026, 1, 1)  # the test worlds' calendar start (tests/conftest.py)
BUCKET, ROOT = "keel-bench", "lake"
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}  # the local server, trust auth
READS = 3
DUCKLAKE = importlib.util.find_spec("keel_core.warehouse_engine") is not None
NOTE = (
    "2-core machine shared with a concurrent pytest run: absolute times are noisy (the repeated runs of "
    "a label show how much); S3 is moto's server on loopback: no real S3 latency or bandwidth."
)


@contextmanager
def moto_server(log: Path):
    """moto's S3 server in its own process group on a free loopback port; stopped by its group id."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log.open("w") as output:
        server = subprocess.Popen(
            [Path(sys.executable).with_name("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start (exit {server.poll()}); log {log}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@contextmanager
def catalog_database():
    """A database of its own on the local PostgreSQL for the DuckLake catalog, dropped (forced) after."""
    import psycopg2

    name = f"keel_bench_catalog_{uuid.uuid4().hex[:12]}"

    def admin(sql: str) -> None:
        with closing(psycopg2.connect(dbname="postgres", **POSTGRES)) as connection:
            connection.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(sql)

    admin(f'create database "{name}"')
    try:
        yield name
    finally:
        admin(f'drop database if exists "{name}" with (force)')


def prod_environment(endpoint: str, scratch: Path, catalog: str | None, args) -> None:
    """The prod settings of test_s3_lake.py, in this process's environment (no inherited KEEL_*)."""
    for name in [name for name in os.environ if name.startswith(("KEEL_", "DAGSTER_", "DBT_"))]:
        del os.environ[name]
    os.environ.update(
        KEEL_ENV="prod",
        KEEL_NAMESPACE="prod",
        KEEL_LAKE_ROOT=f"s3://{BUCKET}/{ROOT}",
        KEEL_CALENDAR_START=FIRST_DAY.isoformat(),
        AWS_ENDPOINT_URL_S3=endpoint,
        AWS_ACCESS_KEY_ID="keel-bench",
        AWS_SECRET_ACCESS_KEY="keel-bench",
        AWS_REGION="us-east-1",
        # Bound by the prod environment, not used by these assets: nothing connects to them.
        KEEL_ONLINE_STORE_URL="redis://127.0.0.1:6379/15",
        KEEL_ALERT_WEBHOOK_URL="http://127.0.0.1:9/unused",
        KEEL_MLFLOW_TRACKING_URI=f"sqlite:///{scratch / 'mlflow.db'}",
        KEEL_SIMULATOR_CUSTOMERS=str(args.customers),
        KEEL_SIMULATOR_TERMINALS=str(args.terminals),
        BENTOML_HOME=str(scratch / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
    )
    if catalog:
        os.environ["KEEL_WAREHOUSE_CATALOG"] = " ".join(
            [f"postgres:dbname={catalog}", *(f"{key}={value}" for key, value in POSTGRES.items())]
        )
    else:
        os.environ["KEEL_WAREHOUSE_DIR"] = str(scratch / "warehouse")


def run_pipeline(days: list[date]) -> dict:
    """Land ``days``, run the lake, warehouse and fraud features over them in one run; time each step."""
    import boto3
    import dagster as dg

    from platform_assets.definitions import defs

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    definitions = defs()
    started = time.perf_counter()
    definitions.resources["landing"].deliver(definitions.resources["upstream"], days)
    landing_seconds = time.perf_counter() - started
    job = definitions.resolve_job_def("keel_pipeline")
    selection = [
        key
        for key in job.asset_layer.executable_asset_keys
        if key.path[0] in ("lake", "warehouse") or key == dg.AssetKey(["fraud", "features"])
    ]
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            asset_selection=selection,
            tags={
                "dagster/asset_partition_range_start": days[0].isoformat(),
                "dagster/asset_partition_range_end": days[-1].isoformat(),
            },
            raise_on_error=False,
        )
        run_seconds = time.perf_counter() - started
        if not result.success:
            raise RuntimeError([event.message for event in result.all_events if event.is_failure])
        starts, steps = {}, {}
        for entry in instance.all_logs(result.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type_value == "STEP_START":
                starts.setdefault(event.step_key, entry.timestamp)  # a retried step: from its first start
            elif event.event_type_value == "STEP_SUCCESS":
                seconds = entry.timestamp - starts[event.step_key]
                steps[event.step_key] = {
                    "seconds": round(seconds, 2),
                    "per_day": round(seconds / len(days), 3),
                }
    ingested = next(
        event.materialization.metadata
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey(["lake", "raw_transactions"])
    )
    return {
        "landing_seconds": round(landing_seconds, 2),
        "run_seconds": round(run_seconds, 2),
        "run_seconds_per_day": round(run_seconds / len(days), 3),
        "rows_ingested": {
            name: ingested[f"window_{name}"].value for name in ("rows_in", "valid_rows", "quarantined_rows")
        },
        "steps": dict(sorted(steps.items(), key=lambda step: -step[1]["seconds"])),
    }


def duckdb_on_s3():
    """A DuckDB connection that reads S3 as this checkout's dbt does (dbt_project/profiles.yml)."""
    import duckdb

    if DUCKLAKE:  # DuckDB's httpfs, the SDK's credentials as a secret (resources/dbt_duckdb_plugin.py)
        from keel_core import warehouse_engine

        connection = duckdb.connect(config=warehouse_engine.engine_config())
        warehouse_engine.prepare(connection, s3=True, lake=False)
    else:  # dbt-duckdb's `filesystems: [{fs: s3}]`; a new s3fs instance, so no listing is cached
        import fsspec

        connection = duckdb.connect()
        connection.register_filesystem(fsspec.filesystem("s3", skip_instance_cache=True))
    return connection


def read_lake() -> dict:
    """``count(*), sum(amount)`` of the lake's transactions, READS times, each on a fresh connection."""
    sql = (
        "select count(*), sum(amount) from read_parquet("
        f"'s3://{BUCKET}/{ROOT}/namespaces/prod/raw_transactions/*/*.parquet', hive_partitioning=true)"
    )
    connect_seconds, query_seconds = [], []
    for _ in range(READS):
        started = time.perf_counter()
        with closing(duckdb_on_s3()) as connection:
            connected = time.perf_counter()
            rows, amount = connection.execute(sql).fetchone()
            query_seconds.append(time.perf_counter() - connected)
        connect_seconds.append(connected - started)
    return {
        "rows": rows,
        "sum_amount": round(float(amount), 2),
        "query_seconds": [round(seconds, 3) for seconds in query_seconds],
        "median_query_seconds": round(statistics.median(query_seconds), 3),
        "median_connect_seconds": round(statistics.median(connect_seconds), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--label", required=True, help="whose run this is, e.g. before or after")
    parser.add_argument("--out", type=Path, help="JSON to append this run to, under its label")
    args = parser.parse_args()
    out = args.out.resolve() if args.out else None  # before the run moves to its scratch folder
    # A SIGTERM still cleans up (while the pipeline runs, Dagster takes it: cleanup follows the run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import duckdb

    days = [FIRST_DAY + timedelta(days=i) for i in range(args.days)]
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keel-bench-s3-")))
        endpoint = stack.enter_context(moto_server(scratch / "moto.log"))
        catalog = stack.enter_context(catalog_database()) if DUCKLAKE else None
        prod_environment(endpoint, scratch, catalog, args)
        os.chdir(scratch)  # whatever the run writes to its working folder stays in the scratch
        summary = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "duckdb": duckdb.__version__,
            "warehouse": "DuckLake (PostgreSQL catalog, Parquet on S3), httpfs"
            if DUCKLAKE
            else "DuckDB file, lake read through s3fs",
            "days": args.days,
            "customers": args.customers,
            "terminals": args.terminals,
            **run_pipeline(days),
            "lake_read": read_lake(),
        }
    print(json.dumps(summary, indent=2))
    if out:
        results = json.loads(out.read_text()) if out.exists() else {}
        results["note"] = NOTE
        results.setdefault(args.label, []).append(summary)  # every run kept: repeats show the noise
        out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
