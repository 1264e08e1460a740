"""Latency of one client calling a running scoring service over loopback (`make serve` first).

    uv run python benchmarks/serving_latency.py [--url http://127.0.0.1:3000] [--requests 1000]

Sends real payments of the warehouse's last day (with the next day's date, as live traffic would
be), one at a time to /score, then in batches of 100 to /score_batch, and prints percentiles as
JSON. The load test at 1 to 64 clients against a baseline is `serving_load.py` (`make bench-serving`).
"""

import argparse
import json
import statistics
import time

import httpx

from keel_core.settings import Settings
from keel_core.warehouse_engine import connect

QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def payments(n: int) -> list[dict]:
    with connect(Settings().warehouse) as connection:
        rows = connection.execute(
            "select transaction_id, transacted_at + interval 1 day, customer_id, terminal_id, amount "
            "from ml.transaction_features where transaction_date = (select max(transaction_date) "
            "from ml.transaction_features) order by transaction_id limit ?",
            [n],
        ).fetchall()
    names = ("transaction_id", "transacted_at", "customer_id", "terminal_id", "amount")
    return [dict(zip(names, (i, at.isoformat(), c, t, a), strict=True)) for i, at, c, t, a in rows]


def percentiles(milliseconds: list[float]) -> dict[str, float]:
    ordered = sorted(milliseconds)
    at = {name: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) for name, q in QUANTILES}
    return {**at, "mean": round(statistics.mean(ordered), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    sample = payments(args.requests)
    with httpx.Client(base_url=args.url, timeout=30) as client:
        for payment in sample[:50]:  # warm-up: connections, the batching dispatcher's first estimates
            client.post("/score", json=payment).raise_for_status()
        single = []
        for payment in sample:
            started = time.perf_counter()
            client.post("/score", json=payment).raise_for_status()
            single.append((time.perf_counter() - started) * 1000)
        batches = []
        for start in range(0, len(sample), 100):
            started = time.perf_counter()
            client.post("/score_batch", json=sample[start : start + 100]).raise_for_status()
            batches.append((time.perf_counter() - started) * 1000)
    print(
        json.dumps(
            {
                "url": args.url,
                "score_ms": percentiles(single),
                "score_requests_per_second": round(len(single) / (sum(single) / 1000), 1),
                "score_batch_of_100_ms": percentiles(batches),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
