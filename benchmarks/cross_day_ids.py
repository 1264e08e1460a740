"""What ingestion's cross-day uniqueness costs per day: ``Lake.days_holding`` on a lake of a year.

Builds ``--days`` daily partitions of ``--rows`` transaction ids each (random int64 ids, as a hostile
or merely non-sequential source would send, so Parquet statistics cannot skip any file) in a
temporary local lake, then times the lookup a new day's ingestion makes: its ids, some of which an
earlier day already holds. Writes ``benchmarks/results/cross_day_ids.json``.

    uv run --frozen --no-sync python benchmarks/cross_day_ids.py [--days 365] [--rows 10000]
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from resources.lake import LocalLake

RESULTS = Path(__file__).parent / "results" / "cross_day_ids.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5, help="timed lookups (the median is reported)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    first = date(2026, 1, 1)
    with tempfile.TemporaryDirectory() as root:
        lake = LocalLake(root=root)
        ids = {}
        for i in range(args.days):
            day = first + timedelta(days=i)
            ids[day] = rng.integers(0, 2**63 - 1, args.rows, dtype=np.int64)
            lake.write_partition("raw_transactions", day, pd.DataFrame({"transaction_id": ids[day]}))
        new_day = first + timedelta(days=args.days)
        incoming = rng.integers(0, 2**63 - 1, args.rows, dtype=np.int64)
        incoming[:100] = ids[first][:100]  # a re-delivered slice of the first day
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            held = lake.days_holding("raw_transactions", "transaction_id", pd.Series(incoming), new_day)
            seconds.append(time.perf_counter() - started)
        assert len(held) == 100 and set(held) == {first.isoformat()}
        size = sum(path.stat().st_size for path in Path(root, "raw_transactions").rglob("*.parquet"))
    result = {
        "date": date.today().isoformat(),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "days": args.days,
        "ids_per_day": args.rows,
        "lake_id_bytes": size,
        "lookup_seconds_median": round(statistics.median(seconds), 4),
        "lookup_seconds_all": [round(s, 4) for s in seconds],
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
