"""Benchmark: the newcomer's first run, the re-run, and an incremental run, on the embedded model.

    python benchmarks/sample_run.py [--docs samples/docs] [--add samples/more-docs]

Runs the real CLI three times in one fresh output folder and prints a markdown
table for benchmarks/RESULTS.md:
1. `qagen ingest DOCS` from nothing (wall time, requests, tokens, pairs);
2. the same command again (must make zero LLM calls);
3. with the documents of --add copied in (only their chunks may be sent).
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


def ingest(docs: Path, out: Path) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "qagen.cli", "ingest", str(docs), "--out", str(out), "--json"],
        capture_output=True, text=True, env=env,
    )
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        sys.exit(f"qagen failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=Path, default=Path("samples/docs"))
    ap.add_argument("--add", type=Path, default=Path("samples/more-docs"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qagen-bench-"))
    docs = work / "docs"
    shutil.copytree(args.docs, docs)
    out = work / "out"

    rows = []
    wall, first = ingest(docs, out)
    rows.append(("first run", wall, first))
    wall, again = ingest(docs, out)
    rows.append(("same command again", wall, again))
    shutil.copytree(args.add, docs / "added")
    wall, inc = ingest(docs, out)
    rows.append((f"after adding {args.add}", wall, inc))

    print(f"cores: {os.cpu_count()}, corpus: {args.docs} ({first['documents_read']} docs, {first['chunks']} chunks)")
    print()
    print("| run | wall s | requests sent | cached | failed | completion tokens | pairs |")
    print("|---|---|---|---|---|---|---|")
    for name, wall, s in rows:
        print(f"| {name} | {wall:.1f} | {s['requests_sent']} | {s['requests_cached']} | {s['requests_failed']} "
              f"| {s['completion_tokens']} | {s['pairs_total']} |")
    print()
    print("pairs per perspective (first run):", json.dumps(first["pairs_per_perspective"]))
    print("calls per perspective (first run):", json.dumps(first["calls_per_perspective"]))
    new_chunks = inc["chunks"] - first["chunks"]
    print(f"incremental: {new_chunks} new chunks, {inc['requests_sent']} requests sent")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
