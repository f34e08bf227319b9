"""Benchmark (issue 26): how many held-out answers the fact ledger found, before any question is asked.

    python benchmarks/span_coverage.py OUT [--questions benchmarks/heldout/questions.jsonl]

OUT is a `qagen ingest` folder of the held-out documents with a ledger suite. For each held-out question: is one of
its gold answers a fact span of its document (SQuAD-normalised, ``exact``), inside one (``contained``), or does
a span overlap it at token F1 >= 0.5 (``f1>=.5``)? Per document and in all. The ceiling on what ledger rows can
teach about these questions, since every ledger answer is a span.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qagen.evaluation.scoring import normalize_answer, token_f1  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--questions", type=Path, default=ROOT / "benchmarks/heldout/questions.jsonl")
    args = ap.parse_args()
    with sqlite3.connect(args.out / "qagen.sqlite") as db:
        rows = db.execute("SELECT d.path, f.span FROM facts f JOIN documents d ON d.doc_id = f.doc_id").fetchall()
    spans: dict[str, set[str]] = {}
    for path, span in rows:
        spans.setdefault(Path(path).name, set()).add(normalize_answer(span))
    questions = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    hits: dict[str, Counter[str]] = {}
    for q in questions:
        have = spans.get(Path(q["source"]).name, set())
        golds = [normalize_answer(a) for a in q["answers"]]
        c = hits.setdefault(Path(q["source"]).name, Counter())
        c["questions"] += 1
        c["exact"] += any(g in have for g in golds)
        c["contained"] += any(f" {g} " in f" {s} " for g in golds for s in have)
        c["f1>=.5"] += any(token_f1(s, g) >= 0.5 for g in golds for s in have)
    total = sum(hits.values(), Counter())
    print("| document | facts | questions | exact | contained | f1>=.5 |\n|---|---|---|---|---|---|")
    for name, c in [*sorted(hits.items()), ("all", total)]:
        n = c["questions"]
        facts = len(spans.get(name, ())) if name != "all" else sum(len(v) for v in spans.values())
        print(f"| {name} | {facts} | {n} | {c['exact'] / n:.2f} | {c['contained'] / n:.2f} | {c['f1>=.5'] / n:.2f} |")


if __name__ == "__main__":
    main()
