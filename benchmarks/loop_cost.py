"""Benchmark: what the refinement loop and the judge cost, and what they do, on the embedded model.

    python benchmarks/loop_cost.py [--docs samples/docs] [--keep DIR]

One run, in two steps, both with the real CLI:
1. generation alone (``--no-refine --no-judge``) into a fresh folder;
2. the full loop (``--refine full --judge``: refine -> judge -> grounding -> dedup; opt-in
   since 0.4.0) on a copy of that folder, so generation comes from the cache and
   step 2's wall time is the loop's own cost.
Then the same command once more on the same folder (must make 0 calls), and
the judge threshold swept over the cached scores (``--judge-threshold T``, 0 calls
each). Prints markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def ingest(docs: Path, out: Path, *flags: str) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "qagen.cli", "ingest", str(docs), "--out", str(out), "--json", *flags],
        capture_output=True, text=True, env=env, check=False,
    )
    wall = time.perf_counter() - started
    if not proc.stdout.strip():
        sys.exit(f"qagen failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=Path, default=Path("samples/docs"))
    ap.add_argument("--keep", type=Path, help="keep the full-loop output folder here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gen_out, full_out = Path(tmp) / "gen", Path(tmp) / "full"
        gen_wall, gen = ingest(args.docs, gen_out, "--no-refine", "--no-judge", "--no-dedup", "--no-report")
        shutil.copytree(gen_out, full_out)
        for leftover in (full_out / ".qagen.lock",):
            leftover.unlink(missing_ok=True)
        loop_wall, full = ingest(args.docs, full_out, "--refine", "full", "--judge")
        again_wall, again = ingest(args.docs, full_out, "--refine", "full", "--judge")
        sweep = {}
        for threshold in ("0.1", "0.2", "0.3", "0.4", "0.5"):
            _, s = ingest(args.docs, full_out, "--refine", "full", "--judge", "--judge-threshold", threshold, "--no-report",
                          "--fail-fast-after", "0")
            sweep[threshold] = (s["judge_passed"], s["judge_rejected"], s["pairs_total"], s["requests_sent"])
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(full_out, args.keep)
    loop_calls = full["requests_sent"]
    print(f"## Full loop cost ({time.strftime('%Y-%m-%d')}, `python benchmarks/loop_cost.py --docs {args.docs}`)\n")
    print("| step | wall s | requests sent | completion tokens |")
    print("|---|---|---|---|")
    print(f"| generation alone | {gen_wall:.0f} | {gen['requests_sent']} | {gen['completion_tokens']} |")
    print(f"| refine + judge + grounding + dedup (generation cached) | {loop_wall:.0f} | {loop_calls} | "
          f"{full['completion_tokens']} |")
    print(f"| the same command again | {again_wall:.1f} | {again['requests_sent']} | 0 |")
    print(f"\nLoop / generation wall time: **{loop_wall / gen_wall:.2f}x** (full first run ~ "
          f"{gen_wall + loop_wall:.0f} s).\n")
    judged = full["judge_passed"] + full["judge_rejected"] + full["judge_failed"]
    print(f"- status: {full['status']}; drafted {full['drafted']}; revisions histogram "
          f"{full['revisions_histogram']}; stop reasons {full['stop_reasons']}")
    print(f"- judge ({full['judge_method']}, threshold {full['judge_threshold']}): {full['judge_passed']} passed, "
          f"{full['judge_rejected']} rejected, {full['judge_failed']} failed of {judged} "
          f"(pass rate {full['judge_passed'] / max(judged, 1):.0%})")
    print(f"- grounding: {full['grounded']} of {full['grounding_checked']} quotes found in their chunk "
          f"({full['grounded'] / max(full['grounding_checked'], 1):.0%})")
    print(f"- duplicates removed: {full['duplicates_removed']}; DPO pairs: {full['dpo_pairs']}")
    print(f"- verdicts: {full['verdicts']}; exported {full['pairs_total']} of {full['pairs_generated']}")
    print(f"- exported per perspective: {full['exported_per_perspective']}")
    print(f"- chunks with no exported pair: {full['chunks_without_pairs']}")
    print("\n| judge threshold | passed | rejected | exported pairs | calls |")
    print("|---|---|---|---|---|")
    for t, (p, r, n, calls) in sweep.items():
        print(f"| {t} | {p} | {r} | {n} | {calls} |")


if __name__ == "__main__":
    main()
