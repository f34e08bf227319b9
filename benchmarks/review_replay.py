"""Benchmark (issue 32): replay a prompt or filter change against the human-rated pairs of `qagen review`.

    cp -r OUT OUT-try                                   # the ratings and the cache travel with the state DB
    qagen ingest DOCS --out OUT-try --prompts my-prompts/   # or --max-repetition 0.3, --judge-threshold 0.7 ...
    python benchmarks/review_replay.py OUT-try [--baseline RUN] [--json]

For the latest ingest run of OUT-try (or --run N): how many pairs the human accepted it would lose (dropped by a
check, or no longer generated) and how many pairs the human rejected or had to edit it would keep. With
--baseline, the same for an earlier run of the same folder (the one the ratings were made on, say), side by side.
The run's own verdicts are read, never the human's overrides. Exit 1 when the candidate loses or keeps more than
the baseline (a regression).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qagen.review.replay import Replay, replay  # noqa: E402
from qagen.store import Store  # noqa: E402


def _line(name: str, r: Replay) -> str:
    checks = ", ".join(f"{k} {v}" for k, v in r.by_check().items()) or "none"
    return (f"{name} (run {r.run_id}): loses {r.lost} of {r.accepted} accepted pairs ({len(r.lost_dropped)} "
            f"dropped: {checks}; {len(r.lost_absent)} no longer generated), keeps {len(r.kept_rejected)} of "
            f"{r.rejected} rejected")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--run", type=int, default=None, help="candidate run (default: the latest finished ingest run)")
    ap.add_argument("--baseline", type=int, default=None, help="an earlier run to compare with")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with Store(args.out) as store:
        run_id = args.run if args.run is not None else store.latest_finished_run("ingest")
        if run_id is None:
            print(f"no finished ingest run in {args.out}", file=sys.stderr)
            return 1
        candidate = replay(store, run_id)
        base = replay(store, args.baseline) if args.baseline is not None else None
    if candidate.accepted + candidate.rejected == 0:
        print("no rated pairs: rate some in `qagen review OUT` first", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"candidate": candidate.to_dict(), "baseline": base.to_dict() if base else None}))
    else:
        print(_line("candidate", candidate))
        if base is not None:
            print(_line("baseline", base))
        for question in candidate.to_dict()["examples"]["lost"]:  # type: ignore[index]
            print(f"  lost: {question}")
        for question in candidate.kept_rejected[:5]:
            print(f"  kept, though rejected: {question}")
    worse = base is not None and (candidate.lost > base.lost or len(candidate.kept_rejected) > len(base.kept_rejected))
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
