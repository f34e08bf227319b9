"""Crash soak: many SIGKILLs at random points, then a byte-for-byte comparison.

    python benchmarks/crash_soak.py --kills 50 --docs 30 --seed 1

The long variant of tests/test_crash.py (which does 10 kills in CI).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qagen.testing import StubReply, StubServer  # noqa: E402
from qagen.testing.crash import reference_run, run_with_kills, write_corpus  # noqa: E402
from tests.conftest import passage_reply  # noqa: E402


def slow(req: dict) -> StubReply:
    reply = passage_reply(req)
    reply.delay = 0.05
    return reply


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--docs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qagen-soak-"))
    write_corpus(work / "docs", args.docs)
    started = time.perf_counter()
    with StubServer(slow) as server:
        ref = reference_run(work / "docs", work / "reference", server)
        reference_requests = len(server.requests)
        server.requests.clear()
        r = run_with_kills(work / "docs", work / "out", work / "reference", server, kills=args.kills, seed=args.seed)
    print("| kills | kills after progress | requests (reference run) | requests (killed runs, total) "
          "| finished calls repeated | final status | byte-identical | pairs |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {r.kills} | {r.kills_with_progress} | {reference_requests} | {r.requests_sent} | "
          f"{len(r.repeated_finished)} | {r.final_status} | {r.identical} | {r.train_lines + r.eval_lines} "
          f"(reference {ref['pairs_total']}) |")
    print(f"wall {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
