"""OUT/exam.jsonl: the run's held-out exam, in the question format ``qagen eval --questions`` reads."""

from __future__ import annotations

import json
from pathlib import Path

from qagen.output.atomic import atomic_writer
from qagen.store import Store

EXAM_FILE = "exam.jsonl"
# The ``kind`` of a control question (``--unanswerable``): its answer is a decline ("The documents don't say ...");
# `qagen eval` reports the share each model declines, apart from the score on the real questions.
CONTROL_KIND = "control"


def write_exam(store: Store, run_id: int, out_dir: Path) -> tuple[Path, int]:
    """OUT/exam.jsonl: the kept exam questions in ``qagen eval --questions`` JSONL (question, answers, doc_id);
    control questions (verdict ``exam_control``) with ``kind: "control"``."""
    path = out_dir / EXAM_FILE
    n = 0
    with atomic_writer(path) as fh:
        for rp in store.reviewed_run_pairs(run_id):  # a question a human rejected in `qagen review` is left out
            if rp.verdict not in ("exam", "exam_control"):
                continue
            p = rp.pair
            kind = CONTROL_KIND if rp.verdict == "exam_control" else "exam"
            row = {"id": p.pair_id, "question": p.question, "answers": [p.answer], "doc_id": p.doc_id,
                   "source": rp.path, "kind": kind, "quote": dict(p.extra).get("quote", "")}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return path, n
