#!/usr/bin/env python3
"""Check benchmarks/heldout: every question's answers occur verbatim in its source document.

    python benchmarks/heldout/check.py

Verifies that each row of questions.jsonl has id, question, answers (a non-empty list of
non-empty strings) and source; that ids are unique; that each source file exists in docs/;
and that each answer variant occurs in that document (case-insensitive, whitespace
normalised). Prints the number of questions per document; exits 1 on any problem.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE / "docs"
QUESTIONS = HERE / "questions.jsonl"
FIELDS = ("id", "question", "answers", "source")


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def main() -> int:
    problems: list[str] = []
    texts: dict[str, str] = {}
    per_doc: Counter[str] = Counter()
    seen: set[str] = set()

    for n, line in enumerate(QUESTIONS.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: invalid JSON ({e})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        missing = [f for f in FIELDS if f not in row]
        if missing:
            problems.append(f"{where}: missing field(s) {', '.join(missing)}")
            continue
        where = f"line {n} ({row['id']})"
        if row["id"] in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(row["id"])
        if not isinstance(row["question"], str) or not row["question"].strip():
            problems.append(f"{where}: empty question")
        answers = row["answers"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            problems.append(f"{where}: answers must be a non-empty list of non-empty strings")
            continue
        source = row["source"]
        if not isinstance(source, str):
            problems.append(f"{where}: source must be a file name")
            continue
        if source not in texts:
            path = DOCS / source
            if "/" in source or "\\" in source or not path.is_file():
                problems.append(f"{where}: source file not found: {source}")
                continue
            texts[source] = norm(path.read_text(encoding="utf-8"))
        per_doc[source] += 1
        for a in answers:
            if norm(a) not in texts[source]:
                problems.append(f"{where}: answer not in {source}: {a!r}")

    for doc in sorted(p.name for p in DOCS.glob("*.md")):
        print(f"{per_doc.get(doc, 0):4d}  {doc}")
    print(f"{sum(per_doc.values()):4d}  questions in {len(per_doc)} documents")
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
