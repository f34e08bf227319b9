"""Incremental runs and peak memory, through the real CLI against the instant stub (benchmarks/instant_stub.py).

    python benchmarks/scale.py incremental --docs 1000
    python benchmarks/scale.py memory --sizes-mb 10 100

incremental: ``qagen ingest`` over N small documents, then the same command
again (must make 0 LLM calls, target < 5 s), then again after changing one
document (must call only that document's chunks).

memory: peak RSS (``/usr/bin/time -v``) of ``qagen ingest`` over corpora of
the given sizes of distinct text (100 KB files), chunk size 4,000 tokens.
Flat means within +-20 % of the smallest corpus's peak.

Both run generation only (``--no-refine --no-judge``) with ``--ungrounded
flag``: the stub's answers are not quotes from the text, and the judge needs
a real model; what is measured here is qagen's own bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from overhead import instant_stub, write_corpus  # sibling benchmark module

FLAGS = ["--model", "stub-model", "--no-refine", "--no-judge", "--ungrounded", "flag", "--json"]


def ingest(docs: Path, out: Path, base_url: str, *extra: str) -> tuple[dict[str, object], float, int]:
    """Run the CLI under /usr/bin/time -v: (summary, wall seconds, peak RSS in MB)."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "qagen.cli", "ingest", str(docs), "--out", str(out),
           "--base-url", base_url, *FLAGS, *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"ingest failed ({done.returncode}): {done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    return json.loads(done.stdout), wall, peak_kb // 1024


def incremental(n_docs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp, instant_stub() as url:
        docs, out = Path(tmp) / "docs", Path(tmp) / "out"
        write_corpus(docs, n_docs)
        first, first_wall, _ = ingest(docs, out, url, "--concurrency", "64")
        again, again_wall, _ = ingest(docs, out, url, "--concurrency", "64")
        changed = docs / "report-00007.md"
        changed.write_text(changed.read_text() + "\nA late amendment moved the vote to Friday.\n")
        third, third_wall, _ = ingest(docs, out, url, "--concurrency", "64")
    row = lambda s, w: {
        "wall_s": round(w, 2), "sent": s["requests_sent"], "cached": s["requests_cached"], "chunks": s["chunks"],
        "pairs": s["pairs_total"], "status": s["status"]}
    return {"docs": n_docs, "first": row(first, first_wall), "same_again": row(again, again_wall),
            "one_doc_changed": row(third, third_wall),
            "planned_per_one_chunk_doc": first["requests_sent"] // max(1, n_docs)}


def write_text_corpus(folder: Path, megabytes: int, seed: int = 0) -> None:
    """Distinct prose-like text, 100 KB per file (so chunk and pair ids never collide)."""
    rng = random.Random(seed)
    words = [w for w in (ROOT / "README.md").read_text().split() if w.isalpha()] or ["word"]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(megabytes * 10):
        paragraphs = []
        size = 0
        while size < 100_000:
            sentence = " ".join(rng.choice(words) for _ in range(80)) + f" (file {i}, part {len(paragraphs)})."
            paragraphs.append(sentence)
            size += len(sentence) + 2
        (folder / f"doc-{i:06d}.md").write_text(f"# Document {i}\n\n" + "\n\n".join(paragraphs) + "\n")


def traced_ingest(docs: Path, out: Path, base_url: str, *extra: str) -> tuple[dict[str, object], float, int, int]:
    """Run the CLI, sampling its RSS (/proc) and the store's finished-request count every 0.5 s.

    Returns (summary, wall s, peak RSS MB while requests were still being answered, peak RSS MB overall):
    the first is the streaming part, the second adds curation, export and the report at the end.
    """
    import sqlite3

    cmd = [sys.executable, "-m", "qagen.cli", "ingest", str(docs), "--out", str(out), "--base-url", base_url,
           *FLAGS, *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    samples: list[tuple[int, int]] = []  # (rss kB, finished requests)
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            with sqlite3.connect(f"file:{out / 'qagen.sqlite'}?mode=ro", uri=True, timeout=0.2) as db:
                count = db.execute("SELECT count(*) FROM requests").fetchone()[0]
            samples.append((rss, count))
        except (OSError, AttributeError, sqlite3.Error):
            pass
        time.sleep(0.5)
    stdout = proc.stdout.read() if proc.stdout else ""
    wall = time.perf_counter() - started
    final = max((c for _, c in samples), default=0)
    streaming = max((r for r, c in samples if c < final), default=0)
    return json.loads(stdout), wall, streaming // 1024, max((r for r, _ in samples), default=0) // 1024


def memory(sizes_mb: list[int], extra: list[str], trace: bool = True, words: bool = False) -> list[dict[str, object]]:
    rows = []
    with instant_stub(words) as url:
        for mb in sizes_mb:
            with tempfile.TemporaryDirectory() as tmp:
                docs, out = Path(tmp) / "docs", Path(tmp) / "out"
                write_text_corpus(docs, mb)
                summary, wall, peak = ingest(docs, out, url, "--concurrency", "64", "--chunk-size", "4000", *extra)
                streaming = sampled = None
                if trace:  # a second run, sampled, to split the streaming part from the end-of-run stages
                    shutil.rmtree(out)
                    _, _, streaming, sampled = traced_ingest(docs, out, url, "--concurrency", "64", "--chunk-size",
                                                             "4000", *extra)
                db_mb = (out / "qagen.sqlite").stat().st_size // 2**20
                rows.append({"text_mb": mb, "docs": summary["documents_read"], "chunks": summary["chunks"],
                             "requests": summary["requests_sent"], "pairs": summary["pairs_total"],
                             "wall_s": round(wall, 1), "peak_rss_mb": peak, "state_db_mb": db_mb,
                             "sampled_peak_rss_while_requests_flow_mb": streaming, "sampled_peak_rss_mb": sampled})
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    inc = sub.add_parser("incremental")
    inc.add_argument("--docs", type=int, default=1000)
    mem = sub.add_parser("memory")
    mem.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 100])
    mem.add_argument("--flags", default="", help="extra ingest flags, e.g. '--no-report --no-dedup'")
    mem.add_argument("--no-trace", action="store_true", help="one run per size (peak RSS from wait4 only)")
    mem.add_argument("--words", action="store_true", help="word-like stub replies (realistic dedup work)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    result = (incremental(args.docs) if args.what == "incremental"
              else memory(args.sizes_mb, args.flags.split(), trace=not args.no_trace, words=args.words))
    print(json.dumps({"result": result, "load_average_after": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
