"""Hand audit of exported pairs (issue 15): build a dataset, sample pairs at random, tally the labels.

    # a dataset from benchmarks/heldout's documents (or --squad PATH) with the benchmark teacher (generation only, as benchmarks/knowledge.py)
    python benchmarks/audit.py build --teacher bench --work benchmarks/.cache/audit-after
    # 40 exported pairs at random (fixed seed) as a TSV to label by hand: correct | wrong | not_self_contained | junk
    python benchmarks/audit.py sample benchmarks/.cache/audit-after/qagen --n 40 --seed 15 > labels.tsv
    python benchmarks/audit.py tally labels.tsv
    # the fact ledger's pairs only (issue 26), with the sentence each answer span comes from
    python benchmarks/audit.py sample WORK/d1/qagen --n 50 --seed 26 --perspectives fact_questions,cloze > ledger.tsv

The SQuAD text carries a do-not-train canary: its datasets and labelled pairs stay in the ignored cache; only the
tallies go into RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import knowledge  # the SQuAD corpus, the teacher server and the CLI runner live there

LABELS = ("correct", "wrong", "not_self_contained", "junk")


def build(args: argparse.Namespace) -> None:
    work: Path = args.work
    if args.squad:
        knowledge.squad_corpus(args.squad, args.articles, args.paragraphs, work / "docs")
    else:
        knowledge.copied_corpus(args.corpus, args.questions, work / "docs")
    ns = argparse.Namespace(teacher=args.teacher, teacher_url=None, teacher_model="", threads=2, slots=2)
    server, base_url, model = knowledge.serve_teacher(ns)
    try:
        result = knowledge.cli("ingest", str(work / "docs"), "--out", str(work / "qagen"), "--base-url", base_url,
                               "--model", model, "--eval-fraction", "0", "--no-exam", *args.ingest_flags.split())
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
    print(json.dumps({k: result.get(k) for k in ("pairs_total", "requests_sent", "seconds", "verdicts")}, indent=1))


def sample(args: argparse.Namespace) -> None:
    rows = []
    for name in ("train.jsonl", "eval.jsonl"):
        path = args.out / name
        if path.exists():
            rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if args.perspectives:
        rows = [r for r in rows if r.get("perspective") in args.perspectives.split(",")]
    rows.sort(key=lambda r: r.get("pair_id", ""))
    picked = random.Random(args.seed).sample(rows, min(args.n, len(rows)))
    w = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
    w.writerow(["label", "perspective", "question", "answer", "pair_id", "sentence"])
    for r in picked:
        m = r["messages"]
        w.writerow(["", r.get("perspective", ""), m[1]["content"], m[2]["content"], r.get("pair_id", ""),
                    r.get("sentence", "")])
    print(f"{len(picked)} of {len(rows)} exported pairs (seed {args.seed})", file=sys.stderr)


def tally(args: argparse.Namespace) -> None:
    counts: dict[str, Counter[str]] = {"all": Counter()}
    with open(args.labels, newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            label = row["label"].strip()
            if label not in LABELS:
                sys.exit(f"{args.labels}: unknown label {label!r} for {row['question']!r} (use {', '.join(LABELS)})")
            counts["all"][label] += 1
            counts.setdefault(row.get("perspective") or "?", Counter())[label] += 1
    for name, by_label in counts.items():  # the whole sample, then each perspective in it
        if name != "all" and len(counts) == 2:
            break
        total = sum(by_label.values())
        print(f"{name}: " + " | ".join(f"{k} {by_label[k]} ({100 * by_label[k] / max(total, 1):.0f} %)" for k in LABELS)
              + f" | n {total}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--teacher", default="bench")
    b.add_argument("--work", type=Path, required=True)
    b.add_argument("--articles", type=int, default=4)
    b.add_argument("--paragraphs", type=int, default=3)
    b.add_argument("--squad", type=Path, help="the SQuAD v1.1 dev JSON (else --corpus, --questions)")
    b.add_argument("--corpus", type=Path, default=knowledge.HELDOUT / "docs")
    b.add_argument("--questions", type=Path, default=knowledge.HELDOUT / "questions.jsonl")
    b.add_argument("--ingest-flags", default="--no-refine --no-judge")
    s = sub.add_parser("sample")
    s.add_argument("out", type=Path)
    s.add_argument("--n", type=int, default=40)
    s.add_argument("--seed", type=int, default=15)
    s.add_argument("--perspectives", default="", help="comma-separated: only these perspectives' pairs")
    t = sub.add_parser("tally")
    t.add_argument("labels", type=Path)
    args = ap.parse_args()
    {"build": build, "sample": sample, "tally": tally}[args.cmd](args)


if __name__ == "__main__":
    main()
