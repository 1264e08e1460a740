"""`make bench`: what Keel's data path costs over the raw engine underneath, measured side by side.

Every case runs both of its sides in this one process tree, one after the other, each in a fresh
child process (so imports, start-up and memory are each side's own). The figure that counts is
the ratio between the sides, which a noisy machine moves much less than the absolute times; both
are recorded, in ``benchmarks/results/data_path.json``, with the machine and the date.

Cases (goals from the performance issue, on the 2-core development machine):

* simulator: 180 days landed as Keel lands them (text Parquet with malformed rows, the flag feed)
  against the bare generator writing typed Parquet. Goal: Keel's landing under 5 s.
* full build: lake -> warehouse -> features through Dagster and dbt, as ``keel demo`` runs it (in
  process, on an instance in its own DAGSTER_HOME), against ``handwritten_features.sql``, one
  DuckDB script computing the same feature table from the same landing files. The two tables are
  compared. Goal: within 1.5x. Run at 90 and at 360 days (the scale check).
* one new day: day 91 through ingestion, warehouse, features, scoring and drift in one run, against
  the full build's cost per day. Goal: the fixed overhead (one day minus a full-build day) under 20 s.
* code location load: importing the definitions against a bare ``import dagster``. Goal: under 1.5x;
  evidently, bentoml and sklearn's ensembles must not be imported.
* batch scoring: rows per second of the ``fraud/scores`` step against the model's
  ``predict_proba`` on the same rows already in memory. Goal: at least 80%.
* memory: peak RSS of the process tree (Dagster and its dbt subprocess) of the full build at 90
  and 360 days. Goal: growing sub-linearly with the days.
* local warehouse: the 90-day world's dbt models and feature table written into a DuckDB file (the
  local warehouse) and into a DuckLake whose catalog is a local DuckDB file (what a local DuckLake
  would be): a backfill, one new day, a read. It decided that the local warehouse stays a file
  (docs/deploy.md).

World: every side reads one landing zone under ``.keel/bench/`` (git-ignored, rebuilt each run);
each build is a namespace of its own (own lake, warehouse file and Dagster instance). The
calendar: Keel's daily partitions end yesterday, and 360 days from the world's start can lie in
the future; then the child shifts Dagster's clock forward (not frozen: durations stay real).
"""

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".keel" / "bench"
RESULTS = REPO / "benchmarks" / "results" / "data_path.json"
HANDWRITTEN_SQL = REPO / "benchmarks" / "handwritten_features.sql"

SIMULATOR_DAYS = 180
BUILD_DAYS = (90, 360)
IMPORT_REPEATS = 5
HEAVY_MODULES = ("evidently", "bentoml", "sklearn.ensemble")

GOALS = {
    "simulator_seconds": 5.0,
    "full_build_ratio": 1.5,
    "new_day_overhead_seconds": 20.0,
    "import_ratio": 1.5,
    "scoring_share": 0.8,
}


# ---------------------------------------------------------------------------------------------
# The parent: runs the children, measures them, compares, reports.


def _environment(namespace: str) -> dict[str, str]:
    """A child's environment: the bench's own lake, warehouse and Dagster home, nothing inherited
    from the shell's Keel settings (a developer's KEEL_* must not point the bench at their data)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "DAGSTER_", "DBT_", "BENTOML_"))}
    env.update(
        KEEL_ENV="local",
        KEEL_NAMESPACE=namespace,
        KEEL_LAKE_ROOT=str(STATE / "lake"),
        KEEL_WAREHOUSE_DIR=str(STATE / "warehouse"),
        KEEL_ONLINE_STORE_URL=f"sqlite:///{STATE / 'online' / namespace}.sqlite",
        KEEL_CALENDAR_START=WORLD_START.isoformat(),
        DAGSTER_HOME=str(STATE / "dagster" / namespace),
        BENTOML_HOME=str(STATE / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
        PYTHONHASHSEED="0",
    )
    return env


_CHILDREN = itertools.count(1)


def _run_child(name: str, *args: str, namespace: str = "bench") -> dict:
    """Run ``data_path.py child <name> <args>`` and measure it: wall time, the peak of the summed RSS
    of its process tree (sampled every 50 ms) and the largest single process's peak (the kernel's)."""
    import psutil

    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    report = logs / f"{next(_CHILDREN):02d}-{name}-{namespace}.json"
    log = logs / report.with_suffix(".log").name
    report.unlink(missing_ok=True)
    started = time.perf_counter()
    with log.open("w") as output:
        child = subprocess.Popen(
            [sys.executable, __file__, "child", name, str(report), *args],
            env=_environment(namespace),
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    peak, done = [0], threading.Event()

    def sample():
        root = psutil.Process(child.pid)
        while not done.wait(0.05):
            try:
                tree = [root, *root.children(recursive=True)]
                total = 0
                for process in tree:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += process.memory_info().rss
                peak[0] = max(peak[0], total)
            except psutil.NoSuchProcess:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0 or not report.exists():
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"bench child {name} {args} failed (exit {child.returncode}); log {log}:\n{tail}")
    measured = json.loads(report.read_text())  # what the child reported, then what the parent saw
    measured["process_seconds"] = round(seconds, 3)
    measured["peak_tree_rss_mb"] = round(peak[0] / 2**20, 1)
    measured["peak_process_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: kilobytes
    return measured


def _say(text: str) -> None:
    print(text, flush=True)


def simulator_case() -> dict:
    _say(f"simulator: {SIMULATOR_DAYS} days")
    keel = _run_child("land", str(STATE / "simulator" / "keel"), str(SIMULATOR_DAYS))
    bare = _run_child("generate", str(STATE / "simulator" / "bare"), str(SIMULATOR_DAYS))
    return {
        "days": SIMULATOR_DAYS,
        "keel": keel,
        "bare": bare,
        "rows_per_second": round(keel["payments"] / keel["seconds"]),
        "ratio": round(keel["seconds"] / bare["seconds"], 2),
        "goal_seconds": GOALS["simulator_seconds"],
        "met": keel["seconds"] < GOALS["simulator_seconds"],
    }


def import_case() -> dict:
    _say(f"code location load: {IMPORT_REPEATS} times each, alternating")
    bare, keel, modules = [], [], None
    for _ in range(IMPORT_REPEATS):
        bare.append(_run_child("import", "dagster")["seconds"])
        measured = _run_child("import", "definitions")
        keel.append(measured["seconds"])
        modules = measured["modules"]
    ratio = statistics.median(keel) / statistics.median(bare)
    heavy = [m for m in HEAVY_MODULES if modules[m]]
    return {
        "dagster_seconds": bare,
        "definitions_seconds": keel,
        "median_dagster": round(statistics.median(bare), 3),
        "median_definitions": round(statistics.median(keel), 3),
        "modules_loaded": modules,
        "heavy_modules_loaded": heavy,
        "ratio": round(ratio, 2),
        "goal_ratio": GOALS["import_ratio"],
        "met": ratio < GOALS["import_ratio"] and not heavy,
    }


def build_case(days: int) -> dict:
    """The full build of ``days`` days, Keel and by hand, and whether both made the same table."""
    namespace = f"bench{days}"
    first, last = WORLD_START, WORLD_START + timedelta(days=days - 1)
    _say(f"full build: {days} days ({first} .. {last}), Keel then hand-written DuckDB")
    keel = _run_child(
        "materialize",
        first.isoformat(),
        last.isoformat(),
        "lake,warehouse,fraud/features",
        namespace=namespace,
    )
    handwritten = _run_child("handwritten", first.isoformat(), last.isoformat(), namespace=namespace)
    same = _compare(namespace)
    return {
        "days": days,
        "keel": keel,
        "handwritten": handwritten,
        "same_table": same,
        "ratio": round(keel["process_seconds"] / handwritten["process_seconds"], 2),
        "ratio_in_run": round(keel["run_seconds"] / handwritten["seconds"], 2),
        "seconds_per_day": round(keel["process_seconds"] / days, 3),
        "peak_rss_mb_per_day": round(keel["peak_tree_rss_mb"] / days, 2),
        "goal_ratio": GOALS["full_build_ratio"],
        "met": keel["process_seconds"] / handwritten["process_seconds"] < GOALS["full_build_ratio"]
        and same["equal"],
    }


def _compare(namespace: str) -> dict:
    """Keel's ``ml.transaction_features`` against the hand-written table: the same rows and keys,
    integers and flags equal, floats equal to 1e-9 relative (sums of doubles in another order)."""
    import duckdb
    import numpy as np

    with duckdb.connect(str(STATE / "warehouse" / f"{namespace}.duckdb"), read_only=True) as connection:
        keel = connection.execute("select * from ml.transaction_features order by transaction_id").df()
    with duckdb.connect(str(STATE / "handwritten" / f"{namespace}.duckdb"), read_only=True) as connection:
        hand = connection.execute("select * from transaction_features order by transaction_id").df()
    result = {"keel_rows": len(keel), "handwritten_rows": len(hand), "differences": []}
    if list(keel.columns) != list(hand.columns):
        result["differences"].append(f"columns: keel {list(keel.columns)} vs hand {list(hand.columns)}")
    elif len(keel) != len(hand):
        result["differences"].append("row counts differ")
    else:
        for column in keel.columns:
            mine, theirs = keel[column].to_numpy(), hand[column].to_numpy()
            if keel[column].dtype.kind == "f":
                if not np.allclose(mine, theirs.astype("float64"), rtol=1e-9, atol=0):
                    worst = float(np.max(np.abs(mine - theirs.astype("float64"))))
                    result["differences"].append(f"{column}: largest difference {worst}")
            elif keel[column].dtype.kind == "M":
                if not (mine == theirs.astype(mine.dtype)).all():
                    result["differences"].append(f"{column}: timestamps differ")
            elif not (mine.astype("int64") == theirs.astype("int64")).all():
                result["differences"].append(f"{column}: {(mine != theirs).sum()} values differ")
    result["equal"] = not result["differences"]
    return result


def new_day_and_scoring_cases(build: dict) -> tuple[dict, dict]:
    """On the 90-day world: train and promote (set-up), score the 90 days (batch scoring against the
    model called directly), then bring day 91 through ingestion to drift (one new day)."""
    days = build["days"]
    namespace = f"bench{days}"
    first, last = WORLD_START, WORLD_START + timedelta(days=days - 1)
    new_day = last + timedelta(days=1)
    _say(f"set-up: train and promote on the {days}-day world")
    training = _run_child(
        "materialize",
        first.isoformat(),
        last.isoformat(),
        "fraud/model,fraud/evaluation,fraud/production_model",
        namespace=namespace,
    )

    _say(f"batch scoring: {days} days, the asset then the model alone")
    scoring = _run_child(
        "materialize", first.isoformat(), last.isoformat(), "fraud/scores", namespace=namespace
    )
    direct = _run_child("score", first.isoformat(), last.isoformat(), namespace=namespace)
    step_seconds = scoring["steps"]["fraud__scores"]
    asset_rate = direct["rows"] / step_seconds
    share = asset_rate / direct["rows_per_second"]
    batch = {
        "days": days,
        "rows": direct["rows"],
        "asset_step_seconds": step_seconds,
        "asset_rows_per_second": round(asset_rate),
        "direct": direct,
        "share": round(share, 3),
        "goal_share": GOALS["scoring_share"],
        "met": share >= GOALS["scoring_share"],
    }

    _say(f"one new day: {new_day}, ingestion -> drift")
    one = _run_child("materialize", new_day.isoformat(), new_day.isoformat(), "day", namespace=namespace)
    per_day = build["keel"]["process_seconds"] / days
    overhead = one["process_seconds"] - per_day
    new = {
        "day": new_day.isoformat(),
        "keel": one,
        "full_build_seconds_per_day": round(per_day, 3),
        "fixed_overhead_seconds": round(overhead, 2),
        "in_run_overhead_seconds": round(one["run_seconds"] - build["keel"]["run_seconds"] / days, 2),
        "training_setup": training,
        "goal_overhead_seconds": GOALS["new_day_overhead_seconds"],
        "met": overhead < GOALS["new_day_overhead_seconds"],
    }
    return new, batch


def engine_case(build: dict) -> dict:
    """The local warehouse, a DuckDB file against a DuckLake (catalog in a local file, data beside
    it): the same dbt models and feature table from the same lake, each engine in a fresh warehouse."""
    days = build["days"]
    first, last = WORLD_START, WORLD_START + timedelta(days=days - 1)
    _say(f"local warehouse: {days} days through dbt and the feature table, a DuckDB file then a DuckLake")
    measured = {
        engine: _run_child("engine", engine, first.isoformat(), last.isoformat(), namespace=f"bench{days}")
        for engine in ("file", "ducklake")
    }
    file, lake = measured["file"], measured["ducklake"]
    return {
        **measured,
        "backfill_ratio": round(lake["dbt_backfill_seconds"] / file["dbt_backfill_seconds"], 2),
        "one_day_ratio": round(lake["dbt_one_day_median"] / file["dbt_one_day_median"], 2),
        "features_day_ratio": round(
            lake["features_write_one_day_median"] / file["features_write_one_day_median"], 2
        ),
        "read_ratio": round(lake["read_all_payments_seconds"] / file["read_all_payments_seconds"], 2),
    }


def memory_case(builds: list[dict]) -> dict:
    if len(builds) < 2:
        build = builds[0]
        return {
            "peak_tree_rss_mb": {str(build["days"]): build["keel"]["peak_tree_rss_mb"]},
            "handwritten_peak_rss_mb": {str(build["days"]): build["handwritten"]["peak_tree_rss_mb"]},
            "rss_growth": None,
            "days_growth": None,
            "met": None,
        }
    small, large = builds[0], builds[-1]
    growth = large["keel"]["peak_tree_rss_mb"] / small["keel"]["peak_tree_rss_mb"]
    days_growth = large["days"] / small["days"]
    return {
        "peak_tree_rss_mb": {str(b["days"]): b["keel"]["peak_tree_rss_mb"] for b in builds},
        "handwritten_peak_rss_mb": {str(b["days"]): b["handwritten"]["peak_tree_rss_mb"] for b in builds},
        "rss_growth": round(growth, 2),
        "days_growth": round(days_growth, 2),
        "met": growth < days_growth,
    }


def machine() -> dict:
    import psutil

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    from importlib.metadata import version

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            package: version(package)
            for package in ("dagster", "dagster-dbt", "dbt-core", "dbt-duckdb", "duckdb", "pandas", "pandera")
        },
    }


def table(results: dict) -> str:
    c = results["cases"]
    rows = [("case", "Keel", "baseline", "ratio", "goal", "met")]
    sim = c["simulator"]
    rows.append(
        (
            f"simulator, {sim['days']} days landed",
            f"{sim['keel']['seconds']:.2f} s",
            f"{sim['bare']['seconds']:.2f} s (bare generator)",
            f"{sim['ratio']}x",
            f"< {sim['goal_seconds']:.0f} s",
            _yes(sim["met"]),
        )
    )
    for build in c["full_build"]:
        rows.append(
            (
                f"full build, {build['days']} days",
                f"{build['keel']['process_seconds']:.1f} s",
                f"{build['handwritten']['process_seconds']:.1f} s (hand-written SQL)",
                f"{build['ratio']}x (in run {build['ratio_in_run']}x)",
                "< 1.5x, same table" + ("" if build["same_table"]["equal"] else ": DIFFERENT"),
                _yes(build["met"]),
            )
        )
    new = c["one_new_day"]
    rows.append(
        (
            "one new day",
            f"{new['keel']['process_seconds']:.1f} s",
            f"{new['full_build_seconds_per_day']:.2f} s (full build per day)",
            f"+{new['fixed_overhead_seconds']:.1f} s",
            "overhead < 20 s",
            _yes(new["met"]),
        )
    )
    load = c["code_location_load"]
    rows.append(
        (
            "code location load",
            f"{load['median_definitions']:.2f} s",
            f"{load['median_dagster']:.2f} s (import dagster)",
            f"{load['ratio']}x",
            "< 1.5x, no heavy imports"
            + (f": {load['heavy_modules_loaded']}" if load["heavy_modules_loaded"] else ""),
            _yes(load["met"]),
        )
    )
    batch = c["batch_scoring"]
    rows.append(
        (
            "batch scoring",
            f"{batch['asset_rows_per_second']:,} rows/s",
            f"{batch['direct']['rows_per_second']:,} rows/s (predict_proba)",
            f"{batch['share']:.0%}",
            ">= 80%",
            _yes(batch["met"]),
        )
    )
    memory = c["memory"]
    peaks = memory["peak_tree_rss_mb"]
    rows.append(
        (
            "peak RSS, full build",
            " / ".join(f"{peaks[d]:,.0f} MB" for d in peaks) + f" ({' / '.join(peaks)} days)",
            " / ".join(f"{v:,.0f} MB" for v in memory["handwritten_peak_rss_mb"].values())
            + " (hand-written)",
            f"x{memory['rss_growth']} for x{memory['days_growth']} days",
            "sub-linear",
            _yes(memory["met"]),
        )
    )
    engines = c["local_warehouse"]
    file, lake = engines["file"], engines["ducklake"]
    for label, key, ratio in (
        ("local warehouse: dbt, per day of a backfill", "dbt_backfill_seconds_per_day", "backfill_ratio"),
        ("local warehouse: dbt, one new day", "dbt_one_day_median", "one_day_ratio"),
        ("local warehouse: features, one day written", "features_write_one_day_median", "features_day_ratio"),
        ("local warehouse: read every payment", "read_all_payments_seconds", "read_ratio"),
    ):
        rows.append(
            (
                label,
                f"{lake[key]:.2f} s (DuckLake)",
                f"{file[key]:.2f} s (file)",
                f"{engines[ratio]}x",
                "",
                "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _yes(met: bool | None) -> str:
    return "n/a" if met is None else "met" if met else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, nargs="+", default=list(BUILD_DAYS), help="full-build sizes")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    began = time.perf_counter()
    shutil.rmtree(STATE, ignore_errors=True)
    (STATE / "handwritten").mkdir(parents=True)

    _say(f"landing {max(args.days) + 1} days for the builds (set-up, timed in the simulator case)")
    landing = _run_child("land", str(STATE / "lake"), str(max(args.days) + 1))
    cases = {"simulator": simulator_case(), "code_location_load": import_case()}
    builds = [build_case(days) for days in sorted(args.days)]
    cases["full_build"] = builds
    cases["one_new_day"], cases["batch_scoring"] = new_day_and_scoring_cases(builds[0])
    cases["memory"] = memory_case(builds)
    cases["local_warehouse"] = engine_case(builds[0])
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "landing_setup": landing,
        "cases": cases,
        "bench_seconds": round(time.perf_counter() - began, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    _say("\n" + table(results))
    _say(f"\n{results['bench_seconds']:.0f} s in all; results in {args.output.relative_to(REPO)}")
    return 0


# ---------------------------------------------------------------------------------------------
# The children: each does one side of one case and writes what it measured to a JSON file.

WORLD_START = date(2026, 1, 1)  # the simulator's WORLD_START, not imported: the parent stays light


def child_land(root: str, days: str) -> dict:
    """Keel's side of the simulator case: deliver the days into a landing zone as `keel land` does."""
    from keel.demo import source_system
    from keel_core.settings import Settings
    from resources.lake import LocalLake
    from resources.sources import LandingZone

    source, landing = (
        source_system(Settings(calendar_start=WORLD_START)),
        LandingZone(lake=LocalLake(root=root)),
    )
    started = time.perf_counter()
    landing.deliver(source, [WORLD_START + timedelta(days=i) for i in range(int(days))])
    seconds = time.perf_counter() - started
    payments = sum(_parquet_rows(path) for path in Path(root, "landing", "transactions").glob("*/*.parquet"))
    return {
        "seconds": round(seconds, 3),
        "payments": payments,
        "malformed_per_day": source.malformed_rows_per_day,
    }


def child_generate(root: str, days: str) -> dict:
    """The bare side: the vectorised generator's payments and flags, typed, one Parquet file per day."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from platform_assets.defs.payments import simulator

    config = simulator.SimulationConfig()
    started = time.perf_counter()
    payments = 0
    for i in range(int(days)):
        day = simulator.simulate_day(config, WORLD_START + timedelta(days=i))
        folder = Path(root, f"date={day.date.isoformat()}")
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pandas(day.transactions, preserve_index=False), folder / "transactions.parquet"
        )
        pq.write_table(pa.Table.from_pandas(day.labels, preserve_index=False), folder / "labels.parquet")
        payments += len(day.transactions)
    return {"seconds": round(time.perf_counter() - started, 3), "payments": payments}


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def child_import(what: str) -> dict:
    started = time.perf_counter()
    if what == "dagster":
        import dagster  # noqa: F401
    else:
        from platform_assets.definitions import defs

        defs()
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "modules": {m: m in sys.modules for m in (*HEAVY_MODULES, "dagster_aws")},
    }


def _job(what: str, definitions):
    """A job of the assets a run covers: groups and assets (``lake,warehouse,fraud/features``), or one
    new day's whole path through the reference use case."""
    import dagster as dg

    if what == "day":
        graph = definitions.resolve_asset_graph()
        daily = (
            dg.AssetSelection.groups("lake", "warehouse")
            | dg.AssetSelection.assets("fraud/features", "fraud/scores")
        ).resolve(graph)
        keys = [key for key in daily if graph.get(key).partitions_def is not None]
        selection = dg.AssetSelection.assets(*keys, ["fraud", "drift"])
    else:
        parts = what.split(",")
        selection = dg.AssetSelection.groups(*(p for p in parts if "/" not in p)) | dg.AssetSelection.assets(
            *(dg.AssetKey.from_user_string(p) for p in parts if "/" in p)
        )
    job = dg.define_asset_job("bench", selection=selection)
    return dg.Definitions.merge(definitions, dg.Definitions(jobs=[job])).resolve_job_def("bench")


def child_materialize(first: str, last: str, what: str) -> dict:
    """Keel's side: one run of the selected assets for [first, last], as `keel demo` runs its job."""
    import io

    started = time.perf_counter()
    import dagster as dg

    from keel.local import use_local_homes
    from platform_assets.definitions import defs

    use_local_homes()
    home = Path(os.environ["DAGSTER_HOME"])  # the bench's child environment names it (_environment)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    definitions = defs()
    imported = time.perf_counter() - started

    first_day, last_day = date.fromisoformat(first), date.fromisoformat(last)
    tags = {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }
    with _clock_after(last_day), contextlib.redirect_stdout(io.StringIO()):
        job = _job(what, definitions)
        instance = dg.DagsterInstance.get()
        run_started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            tags=tags,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
        run_seconds = time.perf_counter() - run_started
    if not result.success:
        failures = [
            f"{event.step_key}: {event.event_specific_data.error.message}"
            for event in result.all_events
            if event.event_type_value == "STEP_FAILURE"
        ]
        raise RuntimeError(f"the run failed: {failures}")
    return {
        "days": (last_day - first_day).days + 1,
        "import_seconds": round(imported, 3),
        "run_seconds": round(run_seconds, 3),
        "steps": _step_seconds(instance, result.run_id),
    }


@contextlib.contextmanager
def _clock_after(last_day: date):
    """Daily partitions end yesterday: when ``last_day`` is not yet in the past, shift Dagster's clock
    (by whole days, still running) so that it is; the work done does not depend on the date."""
    import unittest.mock

    import dagster._time as dagster_time

    lead = (last_day - date.today()).days + 2
    if lead <= 0:
        yield
        return
    shift = timedelta(days=lead)
    real_datetime, real_timestamp = (
        dagster_time._mockable_get_current_datetime,
        dagster_time._mockable_get_current_timestamp,
    )
    with (
        unittest.mock.patch.object(
            dagster_time, "_mockable_get_current_datetime", lambda: real_datetime() + shift
        ),
        unittest.mock.patch.object(
            dagster_time, "_mockable_get_current_timestamp", lambda: real_timestamp() + shift.total_seconds()
        ),
    ):
        yield


def _step_seconds(instance, run_id: str) -> dict[str, float]:
    from dagster import DagsterEventType

    started, seconds = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            seconds[event.step_key] = round(record.timestamp - started[event.step_key], 3)
    return seconds


def child_handwritten(first: str, last: str) -> dict:
    """The raw-engine side of the full build: the hand-written script, in a DuckDB file of its own."""
    started = time.perf_counter()
    import duckdb

    from platform_assets.defs.fraud.scorer.schemas import MAX_AMOUNT

    script = (
        HANDWRITTEN_SQL.read_text()
        .replace("$LANDING", str(Path(os.environ["KEEL_LAKE_ROOT"], "landing")))
        .replace("$FIRST", first)
        .replace("$LAST", last)
        .replace("$MAX_AMOUNT", repr(MAX_AMOUNT))
    )
    target = STATE / "handwritten" / f"{os.environ['KEEL_NAMESPACE']}.duckdb"
    target.unlink(missing_ok=True)
    with duckdb.connect(str(target)) as connection:
        connection.execute(script)
        rows = connection.execute("select count(*) from transaction_features").fetchone()[0]
    return {"seconds": round(time.perf_counter() - started, 3), "rows": rows}


def child_score(first: str, last: str) -> dict:
    """The direct side of batch scoring: the production model on the same rows, already in memory."""
    from keel_core.settings import Settings
    from resources.environments import registry_for
    from resources.warehouse import Warehouse

    settings = Settings()
    registry = registry_for(settings).of("fraud_detector")
    model = registry.load(registry.champion().tag)
    with Warehouse.at(settings.warehouse).connect() as connection:
        frame = connection.execute(
            "select * from ml.transaction_features where transaction_date between ? and ? "
            "order by transaction_id",
            [date.fromisoformat(first), date.fromisoformat(last)],
        ).df()
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        model.predict_proba(frame)[:, 1]
        runs.append(time.perf_counter() - started)
    best = min(runs)
    return {"rows": len(frame), "seconds": round(best, 3), "rows_per_second": round(len(frame) / best)}


def child_engine(engine: str, first: str, last: str) -> dict:
    """One side of the local warehouse case: dbt's models and Keel's feature table written into a
    fresh warehouse of ``engine`` ("file": the namespace's DuckDB file, as locally today; "ducklake":
    a DuckLake whose catalog is a local DuckDB file and whose data are Parquet files beside it, as a
    local DuckLake would be), from the namespace's lake the full build ingested. Timed: the reference
    models, the daily models of every day in one dbt call, one day again (three times: a new day),
    the feature table written whole then one day again, and a read of every payment."""
    import statistics as stats

    import duckdb

    from keel_core.warehouse_engine import WarehouseLocation
    from resources.warehouse import Warehouse

    namespace = os.environ["KEEL_NAMESPACE"]
    home = STATE / "engines" / engine
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = dict(os.environ)
    if engine == "file":
        location = WarehouseLocation(file=str(home / f"{namespace}.duckdb"))
        env |= {"KEEL_ENV": "local", "KEEL_WAREHOUSE_DIR": str(home)}
        target = "local"
    else:
        location = WarehouseLocation(catalog=str(home / "catalog.ducklake"), data_path=f"{home}/data/")
        # dbt's DuckLake target (staging's), pointed at the local catalog; its plugin also loads httpfs
        # and makes an S3 secret (~0.1 s per dbt call): dummy keys keep botocore off the network.
        env |= {
            "KEEL_WAREHOUSE_CATALOG": location.catalog,
            "KEEL_WAREHOUSE_DATA_PATH": location.data_path,
            "KEEL_WAREHOUSE_METADATA_SCHEMA": "main",
            "AWS_ACCESS_KEY_ID": "unused",
            "AWS_SECRET_ACCESS_KEY": "unused",
        }
        target = "staging"
    dbt = [str(Path(sys.executable).with_name("dbt")), "build", "--quiet", "--target", target]
    dbt += ["--project-dir", str(REPO / "dbt_project"), "--profiles-dir", str(REPO / "dbt_project")]
    dbt += ["--target-path", str(home / "target")]

    def timed_dbt(*args: str, window: tuple[str, str] | None = None) -> float:
        days = {"KEEL_MIN_DATE": window[0], "KEEL_MAX_DATE": window[1]} if window else {}
        started = time.perf_counter()
        subprocess.run([*dbt, *args], env=env | days, check=True, cwd=REPO)
        return time.perf_counter() - started

    days = (date.fromisoformat(last) - date.fromisoformat(first)).days + 1
    reference = timed_dbt("--exclude", "tag:daily")
    backfill = timed_dbt("--select", "tag:daily", window=(first, last))
    one_day = [timed_dbt("--select", "tag:daily", window=(last, last)) for _ in range(3)]

    with duckdb.connect(str(STATE / "warehouse" / f"{namespace}.duckdb"), read_only=True) as source:
        features = source.execute(  # the world also holds the new day's rows (the one-new-day case)
            "select * from ml.transaction_features where transaction_date between ? and ?", [first, last]
        ).df()
    warehouse = Warehouse.at(location)
    first_day, last_day = date.fromisoformat(first), date.fromisoformat(last)
    started = time.perf_counter()
    warehouse.replace_days("ml.transaction_features", "transaction_date", first_day, last_day, features)
    features_all = time.perf_counter() - started
    one = features[features["transaction_date"].dt.date == last_day]
    features_day = []
    for _ in range(3):
        started = time.perf_counter()
        warehouse.replace_days("ml.transaction_features", "transaction_date", last_day, last_day, one)
        features_day.append(time.perf_counter() - started)
    started = time.perf_counter()
    with warehouse.connect() as connection:
        rows, _ = connection.execute("select count(*), sum(amount) from main.transactions").fetchone()
    read = time.perf_counter() - started
    size = sum(f.stat().st_size for f in home.rglob("*") if f.is_file() and "target" not in f.parts)
    return {
        "engine": engine,
        "days": days,
        "dbt_reference_seconds": round(reference, 3),
        "dbt_backfill_seconds": round(backfill, 3),
        "dbt_backfill_seconds_per_day": round(backfill / days, 3),
        "dbt_one_day_seconds": [round(t, 3) for t in one_day],
        "dbt_one_day_median": round(stats.median(one_day), 3),
        "features_write_all_seconds": round(features_all, 3),
        "features_write_one_day_median": round(stats.median(features_day), 3),
        "read_all_payments_seconds": round(read, 3),
        "payments": rows,
        "size_mb": round(size / 2**20, 1),
    }


def child(name: str, report: str, *args: str) -> int:
    measured = globals()[f"child_{name}"](*args)
    Path(report).write_text(json.dumps(measured))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        sys.path.insert(0, str(REPO))
        sys.exit(child(*sys.argv[2:]))
    sys.exit(main())
