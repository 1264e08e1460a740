"""A landed day through `make dev`: from the file's time in the landing zone to the last materialization
the day set off, as a user sees it (the performance issue's goal: within 2 minutes on a quiet 2-core
machine).

World: `keel demo` in a namespace and folder of its own (`.keel/bench-landed/`, rebuilt each run), then
`python -m keel.dev` (the UI, the daemon: the landing sensor, the automation sensor, the run queue), then
`keel land` delivers the newest day again (the demo landed every day that has ended). The script
watches the namespace's Dagster instance until the day's work is done: no run queued or going, the
day's drift report materialized, and nothing new for ``--settle`` seconds. Every materialization after
the landing is listed with its delay from the file, and every run with its time from creation to
start and start to end (where the minutes go).

Results: ``benchmarks/results/landed_day.json``, with the machine and the date.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".keel" / "bench-landed"
RESULTS = REPO / "benchmarks" / "results" / "landed_day.json"
NAMESPACE = "benchlanded"
DRIFT_ASSET = ["fraud", "drift"]  # the last step of a day in the reference use case


def environment() -> dict[str, str]:
    """The bench's own lake, warehouse, stores and Dagster home; nothing of the shell's Keel settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "DAGSTER_", "DBT_", "BENTOML_"))}
    env.update(
        KEEL_ENV="local",
        KEEL_NAMESPACE=NAMESPACE,
        KEEL_LAKE_ROOT=str(STATE / "lake"),
        KEEL_WAREHOUSE_DIR=str(STATE / "warehouse"),
        KEEL_ONLINE_STORE_URL=f"sqlite:///{STATE / 'online.sqlite'}",
        KEEL_MLFLOW_TRACKING_URI=f"sqlite:///{STATE / 'mlflow.db'}",
        DAGSTER_HOME=str(STATE / "dagster"),
        BENTOML_HOME=str(STATE / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
    )
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(what: str, ready, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := ready():
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def created(record) -> float:
    return record.create_timestamp.timestamp()


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settle", type=float, default=90.0, help="quiet seconds that end the day's work")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    shutil.rmtree(STATE, ignore_errors=True)
    (STATE / "dagster").mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", STATE / "dagster" / "dagster.yaml")
    env, keel = environment(), str(Path(sys.executable).with_name("keel"))
    os.environ.update(env)  # this process reads the same Dagster instance

    say("set-up: keel demo in its own namespace (a few minutes)")
    started = time.monotonic()
    subprocess.run([keel, "demo"], env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    demo_seconds = time.monotonic() - started

    port = free_port()
    say(f"make dev's processes: the UI on {port}, the daemon")
    log = (STATE / "dev.log").open("w")
    dev = subprocess.Popen(
        [sys.executable, "-m", "keel.dev", "--port", str(port), "--reports-port", str(free_port())]
        + ["--reports-dir", str(STATE / "lake")],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        return measure(args, keel, env, demo_seconds)
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        dev.wait(timeout=60)


def measure(args, keel: str, env: dict[str, str], demo_seconds: float) -> int:
    import dagster as dg

    instance = dg.DagsterInstance.get()
    wait_for(
        "the daemon's sensors",
        lambda: "SENSOR" in (instance.get_daemon_heartbeats() or {}),
        timeout=300,
    )
    from resources.lake import LocalLake
    from resources.sources import LandingZone

    # The demo landed every day up to yesterday, so the next one has not ended: the newest day is
    # delivered again, as `keel demo-drift` does (a re-delivered file is a new arrival).
    newest = LandingZone(lake=LocalLake(root=env["KEEL_LAKE_ROOT"])).last_day()
    command = [keel, "land", "--day", newest.isoformat()]
    landed = subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True, text=True)
    files = [
        Path(line[len("landed ") :]) for line in landed.stdout.splitlines() if line.startswith("landed ")
    ]
    file_time = max(path.stat().st_mtime for path in files)
    day = next(part.removeprefix("date=") for part in files[-1].parts if part.startswith("date="))
    say(f"landed {day} ({len(files)} files); waiting for its work to settle ({args.settle:.0f} s quiet)")

    def materializations() -> list[tuple[float, str, str | None]]:
        events = [
            record
            for key in instance.get_asset_keys()
            for record in instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_timestamp=file_time), limit=1_000
            ).records
        ]
        return sorted((e.timestamp, e.asset_key.to_user_string(), e.partition_key) for e in events)

    active = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]

    def settled():
        done = materializations()
        going = instance.get_runs_count(dg.RunsFilter(statuses=active))
        drift = any(key == "/".join(DRIFT_ASSET) and partition == day for _, key, partition in done)
        if drift and not going and done and time.time() - done[-1][0] >= args.settle:
            return done
        return None

    done = wait_for("the landed day's work", settled, timeout=args.timeout, every=2.0)
    runs = instance.get_run_records(dg.RunsFilter(created_after=datetime.fromtimestamp(file_time, UTC)))
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "day": day,
        "demo_setup_seconds": round(demo_seconds, 1),
        "seconds_to_last_materialization": round(done[-1][0] - file_time, 1),
        "materializations": [
            {"asset": key, "partition": partition, "after_seconds": round(at - file_time, 1)}
            for at, key, partition in done
        ],
        "runs": sorted(
            (
                {
                    "job": record.dagster_run.job_name,
                    "assets": len(record.dagster_run.asset_selection or ()),
                    "created_after_seconds": round(created(record) - file_time, 1),
                    "waited_seconds": round((record.start_time or 0) - created(record), 1),
                    "ran_seconds": round((record.end_time or 0) - (record.start_time or 0), 1),
                    "status": record.dagster_run.status.value,
                }
                for record in runs
            ),
            key=lambda run: run["created_after_seconds"],
        ),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    seconds = result["seconds_to_last_materialization"]
    say(f"\n{day}: the last materialization {seconds:.0f} s after the file landed")
    for run in result["runs"]:
        say(
            f"  run {run['job']} ({run['assets']} assets): created +{run['created_after_seconds']:.0f} s, "
            f"waited {run['waited_seconds']:.0f} s, ran {run['ran_seconds']:.0f} s, {run['status']}"
        )
    say(f"results in {args.output.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
