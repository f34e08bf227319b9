"""Does the tuned model know the documents? Closed-book scores on held-out questions, base vs tuned.

The questions come from the user (``qagen eval OUT --questions FILE``: JSONL,
CSV or SQuAD JSON) or from the run's held-out exam (``OUT/exam.jsonl``, written
by a different prompt family from the training suite and decontaminated
against the training questions). Each question is tied to its document where
the file says which (``doc_id``, ``source`` path, or a SQuAD article title),
so the closed-book prompt carries the system message the model was trained
with; otherwise the corpus-level message. A question naming a document that
is not in the run is reported as unmatched and left out of the scores.

Scores: exact match, SQuAD token F1 (max over gold answers) and "contains
the gold answer", with paired-bootstrap 95 % intervals on tuned minus base,
overall, per document and per question kind (YourBench's way of knowing:
held-out questions, a different prompt family, decontaminated).

Control questions (``kind: "control"``: the exam's ``--unanswerable`` questions, whose
documents do not give the answer) are left out of those scores: for them the report
gives the share of answers each model *declined* ("The documents don't say ...",
:func:`qagen.evaluation.scoring.is_decline`), and, beside it, the share it declined of the
real questions (each one a miss), so a model that declines everything shows as such.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qagen.core import ids
from qagen.corpus.questions import Question
from qagen.evaluation.scoring import (
    GroupScore,
    Scores,
    is_decline,
    paired_bootstrap,
    score_answer,
    score_table,
    summarize,
)
from qagen.output.exam import CONTROL_KIND
from qagen.output.export import corpus_message, system_message

_WH = re.compile(r"^\W*(who|whom|whose|what|which|when|where|why|how)\b", re.IGNORECASE)


@dataclass(frozen=True)
class DocRef:
    doc_id: str
    path: str
    title: str


@dataclass(frozen=True)
class ExamItem:
    """One closed-book question, tied to its document (``doc_id`` empty: the corpus-level message)."""

    qid: str
    question: str
    answers: tuple[str, ...]
    system: str
    doc_id: str = ""
    source: str = ""
    kind: str = ""
    context: str = ""  # the passage the question was written from, where the file gives one (open book places it)


@dataclass(frozen=True)
class KnowledgeRow:
    qid: str
    question: str
    answers: tuple[str, ...]
    source: str
    kind: str
    base_answer: str
    tuned_answer: str
    base: Scores
    tuned: Scores
    base_judge: bool | None = None  # the judge role's yes/no "same meaning as a gold answer", where configured
    tuned_judge: bool | None = None
    base_declined: bool = False  # the answer declines ("The documents don't say ..."): see controls
    tuned_declined: bool = False


@dataclass
class KnowledgeReport:
    questions_from: str = ""  # the questions file, or OUT/exam.jsonl
    base_model: str = ""
    tuned: str = ""
    questions: int = 0  # the real questions scored (control questions are counted in ``controls``)
    unmatched: list[str] = field(default_factory=list)  # questions naming a document the run did not read
    overall: dict[str, float | int] = field(default_factory=dict)  # GroupScore.to_dict()
    per_document: dict[str, dict[str, float | int]] = field(default_factory=dict)
    per_kind: dict[str, dict[str, float | int]] = field(default_factory=dict)
    rows: list[KnowledgeRow] = field(default_factory=list)
    # The judge role's semantic match, where one is configured: {"judge", "judged", "base_yes", "tuned_yes",
    # "delta", "delta_low", "delta_high"} (tuned minus base share of "yes", paired bootstrap).
    judge: dict[str, object] = field(default_factory=dict)
    # Control questions (kind "control"), where there are any: {"count", "base_declined", "tuned_declined",
    # "delta", "delta_low", "delta_high"} (tuned minus base share declined, paired bootstrap), and the share each
    # model declined of the real questions: {"answerable", "answerable_base_declined", "answerable_tuned_declined"}.
    controls: dict[str, float | int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def table(self) -> str:
        """Base vs tuned, with the tuned-minus-base F1 interval: overall, per document, per kind (fixed width)."""
        head = f"{'':<28}{'n':>4}  {'F1 base':>8}{'F1 tuned':>9}  {'delta F1 [95% CI]':<22}{'EM t':>6}{'cont t':>7}"
        lines = [f"closed book on {self.questions} held-out questions ({self.questions_from})", head, "-" * len(head)]
        groups = [("ALL", self.overall), *((f"doc {k}", v) for k, v in self.per_document.items()),
                  *((f"kind {k}", v) for k, v in self.per_kind.items())]
        for name, m in groups:
            if not m:
                continue
            ci = f"{_pts(m['delta_f1'])} [{_pts(m['delta_f1_low'])}, {_pts(m['delta_f1_high'])}]"
            lines.append(f"{name[:27]:<28}{m['count']:>4}  {_pts(m['base_f1']):>8}{_pts(m['tuned_f1']):>9}  {ci:<22}"
                         f"{_pts(m['tuned_em']):>6}{_pts(m['tuned_contains']):>7}")
        if self.judge:
            j = self.judge
            lines.append(f"judge ({j['judge']}), same meaning as a gold answer on {j['judged']} judged: base "
                         f"{_pts(j['base_yes'])} %, tuned {_pts(j['tuned_yes'])} %, delta {_pts(j['delta'])} "
                         f"[{_pts(j['delta_low'])}, {_pts(j['delta_high'])}]")
        if self.controls:
            c = self.controls
            lines.append(f"controls: {c['count']} questions the documents don't answer, declined: base "
                         f"{_pts(c['base_declined'])} %, tuned {_pts(c['tuned_declined'])} %, delta {_pts(c['delta'])} "
                         f"[{_pts(c['delta_low'])}, {_pts(c['delta_high'])}]; declined of the {c['answerable']} real "
                         f"questions (a miss): base {_pts(c['answerable_base_declined'])} %, tuned "
                         f"{_pts(c['answerable_tuned_declined'])} %")
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} question(s) name a document this run did not read (not scored): "
                         + "; ".join(self.unmatched[:3]))
        return "\n".join(lines)


def _pts(value: float | int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def question_kind(question: str) -> str:
    """The question's wh-word (who/what/when...), or "other"."""
    found = _WH.match(question)
    return found.group(1).lower() if found else "other"


def _norm_title(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text).strip().lower()


def match_questions(questions: list[Question], docs: list[DocRef], group_id: str) -> tuple[list[ExamItem], list[str]]:
    """Tie each question to its document: by doc_id (full or short), source path (or file name), or title."""
    by_id = {d.doc_id: d for d in docs}
    by_short = {ids.short(d.doc_id): d for d in docs}
    by_path = {d.path: d for d in docs}
    by_name: dict[str, DocRef] = {}
    by_title: dict[str, DocRef] = {}
    for d in docs:
        by_name.setdefault(Path(d.path).name, d)
        by_title.setdefault(_norm_title(d.title), d)
        by_title.setdefault(_norm_title(Path(d.path).stem), d)
    items, unmatched = [], []
    for n, q in enumerate(questions):
        named = q.doc_id or q.source or q.title
        doc = None
        if q.doc_id:
            doc = by_id.get(q.doc_id) or by_short.get(q.doc_id[: ids.SHORT_LEN])
        elif q.source:
            doc = by_path.get(q.source) or by_name.get(Path(q.source).name)
        elif q.title:
            doc = by_title.get(_norm_title(q.title))
        if named and doc is None:
            unmatched.append(f"{q.question!r} ({named})")
            continue
        system = system_message(doc.doc_id, group_id, doc.title) if doc else corpus_message(group_id)
        items.append(ExamItem(q.qid or str(q.line or n + 1), q.question, q.answers, system,
                              doc.doc_id if doc else "", doc.path if doc else "", q.kind or question_kind(q.question),
                              q.context))
    return items, unmatched


def score(items: list[ExamItem], base_answers: list[str], tuned_answers: list[str], *, questions_from: str,
          base_model: str, tuned: str, unmatched: list[str], seed: int = 0,
          judged: tuple[str, list[bool | None], list[bool | None]] | None = None) -> KnowledgeReport:
    """EM/F1/contains per question and model, with bootstrap intervals per group; the decline shares of the
    control questions (kind "control"), which the scores leave out.

    ``judged``: (judge name, base verdicts, tuned verdicts), one per question, where a judge is configured.
    """
    if not len(items) == len(base_answers) == len(tuned_answers):
        raise ValueError("one base and one tuned answer per question")
    vb, vt = (judged[1], judged[2]) if judged else ([None] * len(items), [None] * len(items))
    rows = [KnowledgeRow(it.qid, it.question, it.answers, it.source or "(corpus)", it.kind, b, t,
                         score_answer(b, it.answers), score_answer(t, it.answers), jb, jt, is_decline(b), is_decline(t))
            for it, b, t, jb, jt in zip(items, base_answers, tuned_answers, vb, vt, strict=True)]
    real = [r for r in rows if r.kind != CONTROL_KIND]
    controls = [r for r in rows if r.kind == CONTROL_KIND]
    report = KnowledgeReport(questions_from=questions_from, base_model=base_model, tuned=tuned, questions=len(real),
                             unmatched=unmatched, rows=rows)
    if real:
        report.overall = _flat(summarize(real, seed=seed))
        report.per_document = {k: _flat(g) for k, g in score_table(real, lambda r: r.source, seed=seed).items()}
        report.per_kind = {k: _flat(g) for k, g in score_table(real, lambda r: r.kind, seed=seed).items()}
    if controls:
        report.controls = decline_shares(controls, real, seed=seed)
    both = [(float(r.base_judge), float(r.tuned_judge)) for r in real
            if r.base_judge is not None and r.tuned_judge is not None]
    if judged and both:
        iv = paired_bootstrap([t for _, t in both], [b for b, _ in both], seed=seed)
        report.judge = {"judge": judged[0], "judged": len(both),
                        "base_yes": round(sum(b for b, _ in both) / len(both), 4),
                        "tuned_yes": round(sum(t for _, t in both) / len(both), 4),
                        "delta": round(iv.mean, 4), "delta_low": round(iv.low, 4), "delta_high": round(iv.high, 4)}
    return report


def decline_shares(controls: list[KnowledgeRow], real: list[KnowledgeRow], *, seed: int = 0) -> dict[str, float | int]:
    """The share of control questions each model declined, with a paired-bootstrap interval on tuned minus base,
    and the share of real questions each declined (NaN with none)."""
    base = [float(r.base_declined) for r in controls]
    tuned = [float(r.tuned_declined) for r in controls]
    iv = paired_bootstrap(tuned, base, seed=seed)

    def share(values: list[float]) -> float:
        return round(sum(values) / len(values), 4) if values else math.nan

    return {"count": len(controls), "base_declined": share(base), "tuned_declined": share(tuned),
            "delta": round(iv.mean, 4), "delta_low": round(iv.low, 4), "delta_high": round(iv.high, 4),
            "answerable": len(real), "answerable_base_declined": share([float(r.base_declined) for r in real]),
            "answerable_tuned_declined": share([float(r.tuned_declined) for r in real])}


def _flat(group: GroupScore) -> dict[str, float | int]:
    return {k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else v) for k, v in group.to_dict().items()}
