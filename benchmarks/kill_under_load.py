"""SIGTERM under load: does every request the server accepted get its answer?

    uv run python benchmarks/kill_under_load.py [--clients 16 64] [--rounds 3]

For each number of clients, ``rounds`` times: serve the namespace's latest Bento (``make demo``) as
``make serve`` does, with a private prediction-log spool; keep ``clients`` threads posting ``/score``
(closed loop, keep-alive, each payment a new transaction id) for ``--load-seconds``; send SIGTERM to
``bentoml serve``'s main process, as Kubernetes stops a container; let every client go on until the
server stops taking its connections. Each request ends one of four ways:

- **answered**, counted by status (200, or a 503 if the server refused it while stopping);
- **refused**: the connection was never accepted (connect refused): the request was never sent;
- **reset**: the connection was accepted and the request sent, and the server closed it without an
  answer. This is the failure: a client cannot know whether its payment was scored (goal: 0);
- **timeout**: no answer within ``--timeout`` seconds.

Then every 200 must be in the prediction log the server wrote on its way out. Writes
``benchmarks/results/kill_under_load.json`` and prints one line per round.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from pathlib import Path

import httpx
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from serving_latency import payments as warehouse_payments  # noqa: E402
from serving_load import _default_signals, _free_port, latest_bento, run_facts  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "kill_under_load.json"


def outcome(request, *args, **kwargs) -> str:
    """What became of ``request(*args, **kwargs)``: its status, or how it failed."""
    try:
        return str(request(*args, **kwargs).status_code)
    except httpx.ConnectError:  # never accepted: nothing was sent
        return "refused"
    except httpx.TimeoutException:
        return "timeout"
    except httpx.TransportError:  # accepted and sent, then closed without an answer
        return "reset"


def one_round(bento: str, env: dict[str, str], payments: list[dict], clients: int, args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="keel-kill-"))
    spool, log = folder / "spool", folder / "serve.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [
                Path(sys.executable).with_name("bentoml"),
                "serve",
                bento,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env={**os.environ, **env, "KEEL_PREDICTION_LOG_URI": str(spool)},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
    ids = count(10**12)  # transaction ids no simulated payment uses
    lock = threading.Lock()
    results: list[tuple[int, str, bool]] = []  # transaction id, outcome, sent after the signal
    signalled = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=args.timeout) as http:
            while True:
                with lock:
                    transaction_id = next(ids)
                payment = {**payments[transaction_id % len(payments)], "transaction_id": transaction_id}
                late = signalled.is_set()
                result = outcome(http.post, "/score", json=payment)
                with lock:
                    results.append((transaction_id, result, late))
                if result in ("refused", "reset", "timeout") and late:
                    return  # the server is going: a real client would go elsewhere

    try:
        deadline = time.monotonic() + 180
        while outcome(httpx.get, url + "/readyz", timeout=2) != "200":
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bentoml serve did not get ready; its log: {log}")
            time.sleep(0.25)
        with ThreadPoolExecutor(clients) as pool:
            running = [pool.submit(client) for _ in range(clients)]
            time.sleep(args.load_seconds)
            signalled.set()
            signalled_at = time.monotonic()
            os.kill(server.pid, signal.SIGTERM)
            exit_code = server.wait(timeout=120)
            exited_after = time.monotonic() - signalled_at
            for finished in running:
                finished.result()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    outcomes = Counter(result for _, result, _ in results)
    after_signal = Counter(result for _, result, late in results if late)
    answered = {transaction_id for transaction_id, result, _ in results if result == "200"}
    files = [f for f in spool.rglob("*.parquet") if not f.name.startswith("_")]
    logged = set(pd.concat([pd.read_parquet(f, columns=["transaction_id"]) for f in files])["transaction_id"])
    return {
        "clients": clients,
        "exit_code": exit_code,
        "seconds_from_sigterm_to_exit": round(exited_after, 2),
        "requests": len(results),
        "outcomes": dict(sorted(outcomes.items())),
        "outcomes_of_requests_sent_after_sigterm": dict(sorted(after_signal.items())),
        "accepted_without_answer": outcomes["reset"] + outcomes["timeout"],
        "answered_200_missing_from_prediction_log": len(answered - logged),
        "server_log": str(log),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-seconds", type=float, default=3.0, help="full load before the signal")
    parser.add_argument("--timeout", type=float, default=60.0, help="a client's wait for one answer")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    bento, env = latest_bento()
    payments = warehouse_payments(2000)
    rounds = []
    for clients in args.clients:
        for number in range(args.rounds):
            result = one_round(bento.tag, env, payments, clients, args)
            rounds.append(result)
            print(
                f"{clients:>3} clients, round {number + 1}: {result['requests']} requests, "
                f"outcomes {result['outcomes']}, "
                f"accepted without answer {result['accepted_without_answer']}, "
                f"200s missing from the log {result['answered_200_missing_from_prediction_log']}, "
                f"exit {result['exit_code']} after {result['seconds_from_sigterm_to_exit']} s",
                flush=True,
            )
    summary = {
        str(clients): {
            "rounds": sum(r["clients"] == clients for r in rounds),
            "accepted_without_answer": sum(
                r["accepted_without_answer"] for r in rounds if r["clients"] == clients
            ),
            "answered_200_missing_from_prediction_log": sum(
                r["answered_200_missing_from_prediction_log"] for r in rounds if r["clients"] == clients
            ),
        }
        for clients in args.clients
    }
    results = {
        **run_facts(),
        "bento": bento.tag,
        "load_seconds": args.load_seconds,
        "summary": summary,
        "rounds": rounds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
