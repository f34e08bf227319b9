"""The held-out exam: questions the model never trains on, to measure whether it knows the documents.

The exam prompt (``prompts/exam.md``, role ``exam``) is a different prompt
family from the training suite: an examiner's short-answer questions, each
with a supporting quote. Its pairs are never exported to train.jsonl or
eval.jsonl. After the training pairs' verdicts are settled, each exam pair
gets one of:

* ``exam``: kept, written to ``OUT/exam.jsonl`` (``qagen.output.exam``);
* ``exam_ungrounded``: its quote is not in the chunk (the answer may be invented);
* ``exam_contaminated``: it nearly matches an exported training question (the
  same near-duplicate test as dedup), so it would test recall of a training
  pair, not knowledge of the fact;
* ``exam_control``: a control question (``--unanswerable``, ``prompts/exam_unanswerable.md``)
  whose answer the document does not give, kept: its expected answer is the
  code-built decline, so it has no quote to check (the filters checked it
  against the whole document instead). ``qagen eval`` reports how often each
  model declines these, apart from the score on the real questions.

This is YourBench's recipe for knowing: held-out questions, written another
way, decontaminated against the training data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from qagen.core.exposure import is_cloze
from qagen.core.records import Verdict
from qagen.curate.quality import Decontaminator, grounding_score
from qagen.store import Store

EXAM_ROLE = "exam"


@dataclass(frozen=True)
class ExamPair:
    pair_id: str
    chunk_id: str
    question: str
    answer: str
    quote: str
    control: bool = False  # an unanswerable control question: no quote, decontaminated only


def settle_exam(store: Store, run_id: int, exam: list[ExamPair], *, grounding_threshold: float,
                dedup_threshold: float) -> Counter[str]:
    """Give each exam pair its verdict, against the run's exported training questions; returns the counts."""
    counts: Counter[str] = Counter()
    if not exam:
        return counts
    # the exported training questions; cloze rows are a sentence with a blank, not a question: an exam question on
    # the same fact in other words is what the exam is for
    training = Decontaminator([rp.pair.question for rp in store.run_pairs(run_id)
                               if rp.verdict == "exported" and not is_cloze(rp.pair)], threshold=dedup_threshold)
    verdicts = []
    for p in exam:
        hit = training.match(p.question)
        if p.control:
            v = (Verdict(p.pair_id, "exam_contaminated", f"nearly matches the training question {hit!r}")
                 if hit is not None else
                 Verdict(p.pair_id, "exam_control", "a control question: the documents don't say"))
            counts[v.verdict] += 1
            verdicts.append(v)
            continue
        g = round(grounding_score(p.quote, store.chunk_text(p.chunk_id) or ""), 1)
        if g < grounding_threshold:
            v = Verdict(p.pair_id, "exam_ungrounded", f"quote not found in the chunk (score {g})", grounded=False,
                        grounding=g, quote=p.quote)
        elif hit is not None:
            v = Verdict(p.pair_id, "exam_contaminated", f"nearly matches the training question {hit!r}",
                        grounded=True, grounding=g, quote=p.quote)
        else:
            v = Verdict(p.pair_id, "exam", "", grounded=True, grounding=g, quote=p.quote)
        counts[v.verdict] += 1
        verdicts.append(v)
    store.put_verdicts(run_id, verdicts)
    return counts
