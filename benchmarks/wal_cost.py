"""What the checkpoint after every group commit costs (issue 31: a WAL deleted after a kill -9 must not lose
committed replies).

The same pipeline run as benchmarks/overhead.py (a synthetic corpus, the instant stub in its own process), with
``Database.checkpoint_each_commit`` on and off, alternating which goes first, ``--reps`` pairs. Reports requests/s
for each and the paired ratio (on / off) with a t interval over the pairs.

    python benchmarks/wal_cost.py --docs 300 --concurrency 64 --reps 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from overhead import instant_stub, pipeline  # noqa: E402  (sibling benchmark module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--reps", type=int, default=4)
    args = parser.parse_args()
    from scipy import stats

    from qagen.store.db import Database

    rows: list[dict[str, float]] = []
    with instant_stub() as base_url:
        pipeline(base_url, 20, args.concurrency, None, False, "openai")  # warm-up: imports, first connections
        for rep in range(args.reps):
            got: dict[str, float] = {}
            for mode in ((True, False) if rep % 2 == 0 else (False, True)):
                Database.checkpoint_each_commit = mode
                result = pipeline(base_url, args.docs, args.concurrency, None, False, "openai")
                got["on" if mode else "off"] = float(result["req_per_s"])  # type: ignore[arg-type]
            got["ratio"] = got["on"] / got["off"]
            rows.append(got)
            print(json.dumps({"rep": rep, **got}), flush=True)
    Database.checkpoint_each_commit = True
    ratios = [r["ratio"] for r in rows]
    mean = statistics.mean(ratios)
    half = stats.t.ppf(0.975, len(ratios) - 1) * statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0
    print(json.dumps({
        "docs": args.docs, "concurrency": args.concurrency, "reps": args.reps,
        "req_per_s_on": round(statistics.mean(r["on"] for r in rows), 1),
        "req_per_s_off": round(statistics.mean(r["off"] for r in rows), 1),
        "ratio_on_off": round(mean, 3), "ratio_95ci": [round(mean - half, 3), round(mean + half, 3)],
    }))


if __name__ == "__main__":
    main()
