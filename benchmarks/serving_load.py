"""Serving under load: Keel's Bento against a naive baseline, same model, data and machine, one run.

    make bench-serving        (uv run python benchmarks/serving_load.py [--seconds 10])

1. ``/score`` at 1, 8, 32 and 64 concurrent clients (``loadgen.py``: closed loop, keep-alive, over
   loopback) against (a) the latest Bento of ``make demo``, served as ``make serve`` serves it, and
   (b) ``baseline_service.py``, a plain Starlette app calling ``predict_proba`` once per request, with
   as many uvicorn workers as the Bento has (one per core). Requests per second and p50/p95/p99.
2. Rows per second of ``/score_batch`` (1,000 payments a request, one client) and of the
   ``/score_file`` task (a 20,000-row Parquet file), against the service's own scoring path called
   in this process on the same rows (store lookup, features, model): what HTTP costs a batch.

Writes ``benchmarks/results/serving.json`` and prints the tables. The payments are real ones of the
warehouse's last day, dated the next day as live traffic would be.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import loadgen  # noqa: E402
from serving_latency import payments as warehouse_payments  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "serving.json"
PARQUET = "application/vnd.apache.parquet"
GOALS = {"throughput_ratio_at_32": 1.5, "p99_ms_at_32": 50.0, "p50_ms_at_1": 5.0, "batch_ratio": 0.8}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


@contextmanager
def running(name: str, command: list[str], env: dict[str, str], port: int, ready: str):
    """``command`` in its own process group until the block ends; waits until ``ready`` is 200."""
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"keel-bench-{name}.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; its log: {log}")
            try:
                if httpx.get(url + ready, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready after 120 s; its log: {log}")
            time.sleep(0.25)
        yield url
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def run_facts() -> dict:
    """When and where a benchmark ran, for its results file."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def latest_bento():
    """The namespace's latest Bento of the scoring service, and the settings `make serve` gives it."""
    from keel.local import use_local_homes
    from keel_core import bentos
    from keel_core.settings import Settings
    from resources.environments import service_settings

    settings = Settings()
    use_local_homes()
    from platform_assets.components.use_case import declared

    service = declared()["fraud"][0].serving.service.name  # the payment scorer
    built = bentos.built(bentos.bento_name(settings.namespace, service))
    if not built:
        raise SystemExit("no Bento of the scoring service yet: run `make demo` first")
    return built[-1], service_settings(settings)


def load_levels(
    url: str, bodies: list[bytes], levels: list[int], seconds: float, warmup: float
) -> list[dict]:
    results = []
    for concurrency in levels:
        result = loadgen.run(url, "/score", bodies, concurrency, seconds=seconds, warmup=warmup)
        print(
            f"  {concurrency:>3} clients: {result['requests_per_second']:>7} req/s, p50 {result['p50']} ms, "
            f"p99 {result['p99']} ms, statuses {result['statuses']}",
            flush=True,
        )
        results.append(result)
    return results


def batch_rows_per_second(url: str, payments: list[dict], requests: int = 30) -> dict:
    batch = payments[:1000]
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(3):
            client.post("/score_batch", json=batch).raise_for_status()
        started = time.perf_counter()
        for _ in range(requests):
            client.post("/score_batch", json=batch).raise_for_status()
        seconds = time.perf_counter() - started
    return {
        "rows": len(batch) * requests,
        "seconds": round(seconds, 3),
        "rows_per_second": round(len(batch) * requests / seconds),
    }


def file_rows_per_second(url: str, frame: pd.DataFrame) -> dict:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    with httpx.Client(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        task = client.post(
            "/score_file/submit", files={"payments": ("payments.parquet", buffer.getvalue(), PARQUET)}
        )
        task.raise_for_status()
        task_id = task.json()["task_id"]
        while (status := client.get("/score_file/status", params={"task_id": task_id}).json()["status"]) in (
            "pending",
            "in_progress",
        ):
            time.sleep(0.02)
        if status != "completed":
            raise RuntimeError(f"/score_file task ended {status}")
        scored = pd.read_parquet(
            io.BytesIO(client.get("/score_file/get", params={"task_id": task_id}).content)
        )
        seconds = time.perf_counter() - started
    if len(scored) != len(frame) or scored["error"].notna().any():
        raise RuntimeError("/score_file did not score every row")
    return {"rows": len(frame), "seconds": round(seconds, 3), "rows_per_second": round(len(frame) / seconds)}


def direct_rows_per_second(
    store_url: str, namespace: str, model_tag: str, frame: pd.DataFrame, chunk: int = 1000
) -> dict:
    """The service's scoring path without HTTP: store lookup, features, model, in chunks of ``chunk``."""
    import bentoml
    from threadpoolctl import threadpool_limits

    from keel_core.event_windows import open_event_store
    from keel_core.online_store import open_store
    from platform_assets.defs.fraud.scorer.model import FraudModel
    from platform_assets.defs.fraud.transaction_features import (
        ONLINE_VIEW,
        PAYMENT_WINDOWS,
        online_feature_values,
        payment_events,
    )

    threadpool_limits(limits=1, user_api="openmp")  # as the service runs it
    store, events, model = (
        open_store(store_url, namespace, ONLINE_VIEW),
        open_event_store(store_url, namespace, PAYMENT_WINDOWS),
        FraudModel(bentoml.sklearn.load_model(model_tag)),
    )
    at = frame["transacted_at"].to_numpy(dtype="datetime64[us]")

    def score_all():
        for start in range(0, len(frame), chunk):
            rows = slice(start, start + chunk)
            lookup = store.lookup(
                {
                    "customer": frame["customer_id"].iloc[rows].tolist(),
                    "terminal": frame["terminal_id"].iloc[rows].tolist(),
                }
            )
            velocity = events.record(payment_events(frame.iloc[rows]))
            features = online_feature_values(
                frame["amount"].to_numpy()[rows], at[rows], lookup.values, velocity
            )
            model.predict_proba(features.values)

    score_all()  # warm
    started = time.perf_counter()
    score_all()
    seconds = time.perf_counter() - started
    return {"rows": len(frame), "seconds": round(seconds, 3), "rows_per_second": round(len(frame) / seconds)}


def table(results: dict) -> str:
    lines = [
        "| clients | Keel req/s | p50 / p95 / p99 ms | baseline req/s | p50 / p95 / p99 ms | ratio |",
        "| ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for keel, base in zip(results["keel"]["score"], results["baseline"]["score"], strict=True):
        ratio = keel["requests_per_second"] / base["requests_per_second"]
        latency = " / ".join(str(keel[q]) for q in ("p50", "p95", "p99"))
        base_latency = " / ".join(str(base[q]) for q in ("p50", "p95", "p99"))
        lines.append(
            f"| {keel['concurrency']} | {keel['requests_per_second']:,.0f} | {latency} "
            f"| {base['requests_per_second']:,.0f} | {base_latency} | {ratio:.2f}x |"
        )
    direct = results["direct"]["rows_per_second"]
    lines += [
        "",
        "| path | rows/s | share of direct |",
        "| --- | ---: | ---: |",
        f"| scoring path in process (lookup, features, model; 1,000-row chunks) | {direct:,} | 100% |",
    ]
    for name, label in (
        ("batch", "`/score_batch`, 1,000 payments a request"),
        ("file", "`/score_file`, a 20,000-row Parquet file"),
    ):
        rate = results["keel"][name]["rows_per_second"]
        lines.append(f"| {label} | {rate:,} | {rate / direct:.0%} |")
    return "\n".join(lines)


def verdict(results: dict) -> dict:
    keel = {r["concurrency"]: r for r in results["keel"]["score"]}
    base = {r["concurrency"]: r for r in results["baseline"]["score"]}
    direct = results["direct"]["rows_per_second"]
    measured = {
        "throughput_ratio_at_32": round(keel[32]["requests_per_second"] / base[32]["requests_per_second"], 2),
        "p99_ms_at_32": keel[32]["p99"],
        "p50_ms_at_1": keel[1]["p50"],
        "batch_ratio": round(results["keel"]["batch"]["rows_per_second"] / direct, 2),
        "file_ratio": round(results["keel"]["file"]["rows_per_second"] / direct, 2),
    }
    met = {
        "throughput_ratio_at_32": measured["throughput_ratio_at_32"] >= GOALS["throughput_ratio_at_32"],
        "p99_ms_at_32": measured["p99_ms_at_32"] < GOALS["p99_ms_at_32"],
        "p50_ms_at_1": measured["p50_ms_at_1"] < GOALS["p50_ms_at_1"],
        "batch_ratio": measured["batch_ratio"] >= GOALS["batch_ratio"],
        "file_ratio": measured["file_ratio"] >= GOALS["batch_ratio"],
    }
    return {"goals": GOALS, "measured": measured, "met": met}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per concurrency level")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    bento, settings = latest_bento()
    payments = warehouse_payments(2000)
    bodies = [json.dumps(payment).encode() for payment in payments]
    frame = pd.DataFrame(payments * 10)
    frame["transaction_id"] = np.arange(len(frame))
    frame["transacted_at"] = pd.to_datetime(frame["transacted_at"])
    workers = os.cpu_count() or 1
    executable = Path(sys.executable)
    results = {
        **run_facts(),
        "bento": bento.tag,
        "model": bento.model_tag,
        "workers": workers,
        "seconds_per_level": args.seconds,
        "keel": {},
        "baseline": {},
    }

    print(f"Keel: {bento.tag} ({workers} workers)", flush=True)
    port = _free_port()
    command = [
        str(executable.with_name("bentoml")),
        "serve",
        bento.tag,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with running("keel", command, settings, port, "/readyz") as url:
        results["keel"]["score"] = load_levels(url, bodies, args.concurrency, args.seconds, args.warmup)
        results["keel"]["batch"] = batch_rows_per_second(url, payments)
        results["keel"]["file"] = file_rows_per_second(url, frame)

    print(f"baseline: benchmarks/baseline_service.py ({workers} uvicorn workers)", flush=True)
    port = _free_port()
    command = [
        str(executable.with_name("uvicorn")),
        "--app-dir",
        str(Path(__file__).parent),
        "baseline_service:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
    ]
    # One OpenMP thread per worker, as the Bento has: two workers on two cores, no oversubscription.
    env = {
        **settings,
        "KEEL_MODEL_TAG": bento.model_tag,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    with running("baseline", command, env, port, "/livez") as url:
        results["baseline"]["score"] = load_levels(url, bodies, args.concurrency, args.seconds, args.warmup)

    results["direct"] = direct_rows_per_second(
        settings["KEEL_ONLINE_STORE_URL"], settings["KEEL_NAMESPACE"], bento.model_tag, frame
    )
    results["verdict"] = verdict(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print()
    print(json.dumps(results["verdict"], indent=2))
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
