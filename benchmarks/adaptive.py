"""Adaptive concurrency against an overloaded server: refusals and failures, adaptive vs a fixed limit.

    python benchmarks/adaptive.py --requests 300 --capacity 4 --start 32

The server (``qagen.testing.StubServer``) answers 429 whenever more than
``--capacity`` requests are in flight, 20 ms per accepted request. qagen's
``Balanced`` client starts at ``--start`` in flight, once adaptive (AIMD) and
once fixed; both retry refused requests (up to 10 times, backoff <= 0.5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qagen.llm.balance import Balanced
from qagen.testing import StubServer
from tests.test_balance import (  # the same server the tests use
    overloaded_server,
    run_all,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--start", type=int, default=32)
    args = parser.parse_args()
    rows = []
    for adaptive in (True, False):
        rejected = [0]
        with StubServer(overloaded_server(args.capacity, 0.02, rejected)) as server:
            llm = Balanced([server.base_url], per_endpoint=args.start, adaptive=adaptive, max_retries=10,
                           backoff_max=0.5)
            started = time.perf_counter()
            replies = asyncio.run(run_all(llm, args.requests))
            wall = time.perf_counter() - started
            limit = llm.endpoints[0].limit
            rows.append({"mode": "adaptive" if adaptive else "fixed", "requests": args.requests,
                         "failed": sum(isinstance(r, BaseException) for r in replies), "attempts": server.count(),
                         "refused_429": rejected[0], "final_limit": limit.limit, "cuts": limit.cuts,
                         "wall_s": round(wall, 2)})
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
