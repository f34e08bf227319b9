"""Open book: does the model answer from the context a retriever hands it, and say so when the answer isn't there?

``qagen eval OUT --open-book`` asks each held-out question (the run's exam, or ``--questions FILE``) three
more ways, in the format of the open-book training rows (``qagen/output/contextual.py``: BEGININPUT blocks
headed by the document's short ID, title and source, then the question):

* ``answer``: the question's own chunk alone;
* ``distractors``: its chunk among one or two chunks of other documents;
* ``withheld``: one or two chunks of other documents only; the right reply is a decline ("The context
  provided does not contain ...", read by :func:`qagen.evaluation.scoring.is_decline`).

Each question's chunk is found by code among the chunks the run's pairs came from: the chunk of its document
that holds a gold answer (SQuAD-normalised, as a run of words), preferring the one that best covers the
question's passage (SQuAD's ``context``, the exam's ``quote``), then the one sharing most of the question's
words. A question with no document, or whose document has no chunk that holds an answer or covers its passage,
is reported as unplaced and not asked. Distractors and positions come from hashes of the question's ID, so
a re-run asks the same prompts.

Scores, base vs tuned: with the chunk given, EM / F1 / contains on the answer with its ``Source:`` lines
removed, the share that declined (each a miss) and the share that cite the right document (its short ID in the
reply); with the chunk withheld, the share that declined ("declined when it should"). Paired-bootstrap 95 %
intervals on tuned minus base: F1 where the chunk is given, the declined share where it is withheld.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from qagen.core import ids
from qagen.evaluation.knowledge import ExamItem
from qagen.evaluation.scoring import (
    is_decline,
    normalize_tokens,
    paired_bootstrap,
    score_answer,
)
from qagen.output.contextual import (
    ANSWER,
    DISTRACTORS,
    SYSTEM,
    WITHHELD,
    Block,
    Distractors,
    render_prompt,
)
from qagen.output.exam import CONTROL_KIND
from qagen.store import Store

MODES = (ANSWER, DISTRACTORS, WITHHELD)
MAX_NEW_TOKENS = 96  # the answer and its Source: lines (about 25 tokens)
_SOURCE_LINES = re.compile(r"\n\s*Source:.*\Z|\s*\bSource:\s*\n.*\Z", re.DOTALL | re.IGNORECASE)
_MIN_PASSAGE_COVER = 0.5  # no chunk holds a gold answer: the best one must hold half the passage's words


@dataclass(frozen=True)
class OpenBookItem:
    """One question asked over input blocks: ``cite`` is the short ID of its own document ("" when withheld)."""

    qid: str
    question: str
    answers: tuple[str, ...]
    mode: str
    prompt: str
    chunk_ids: tuple[str, ...]
    cite: str
    source: str


@dataclass(frozen=True)
class OpenBookRow:
    qid: str
    mode: str
    question: str
    answers: tuple[str, ...]
    base_answer: str
    tuned_answer: str
    base_f1: float
    tuned_f1: float
    base_em: float
    tuned_em: float
    base_contains: float
    tuned_contains: float
    base_declined: bool
    tuned_declined: bool
    base_cited: bool
    tuned_cited: bool


@dataclass
class OpenBookReport:
    questions: int = 0  # questions placed (each asked once per mode)
    unplaced: list[str] = field(default_factory=list)  # no document, or no chunk of it holds the answer
    # mode -> {"count", "{base,tuned}_{f1,em,contains,declined,cited}", "delta", "delta_low", "delta_high",
    # "delta_of"}: delta_of is "f1" where the chunk is given, "declined" where it is withheld.
    modes: dict[str, dict[str, float | int | str]] = field(default_factory=dict)
    rows: list[OpenBookRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def table(self) -> str:
        head = (f"{'':<13}{'n':>4}  {'F1 base':>8}{'F1 tuned':>9}  {'delta [95% CI]':<22}{'cited b':>8}{'cited t':>8}"
                f"{'declined b':>11}{'declined t':>11}")
        lines = [(f"open book on {self.questions} held-out questions: the question over input blocks (its chunk; "
                 "among other documents' chunks; without it)"), head, "-" * len(head)]
        for mode in MODES:
            m = self.modes.get(mode)
            if not m:
                continue
            ci = f"{_pts(m['delta'])} [{_pts(m['delta_low'])}, {_pts(m['delta_high'])}]"
            given = mode != WITHHELD
            name = {ANSWER: "its chunk", DISTRACTORS: "+distractors", WITHHELD: "withheld"}[mode]
            lines.append(f"{name:<13}{m['count']:>4}  {_pts(m['base_f1']) if given else '-':>8}"
                         f"{_pts(m['tuned_f1']) if given else '-':>9}  {ci:<22}"
                         f"{_pts(m['base_cited']) if given else '-':>8}{_pts(m['tuned_cited']) if given else '-':>8}"
                         f"{_pts(m['base_declined']):>11}{_pts(m['tuned_declined']):>11}")
        lines.append("delta: tuned minus base, F1 where the chunk is given, the share declined where it is withheld "
                     "(declining is right there, a miss elsewhere); cited: the reply names the chunk's document ID")
        if self.unplaced:
            lines.append(f"{len(self.unplaced)} question(s) not asked open book (no chunk of their document holds "
                         "the answer): " + "; ".join(self.unplaced[:3]))
        return "\n".join(lines)


def _pts(value: float | str) -> str:
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}"


# --- building the prompts --------------------------------------------------------
def run_blocks(store: Store, run_id: int) -> dict[str, list[tuple[Block, str]]]:
    """doc_id -> its (block, chunk text) in chunk order: the chunks this run's pairs came from (a document chunked
    before with other settings keeps old chunks in the store; no pair of this run names them)."""
    used = {rp.pair.chunk_id for rp in store.run_pairs(run_id)}
    dates: dict[str, str] = {}
    out: dict[str, list[tuple[Block, str]]] = {}
    for path, title, chunk in store.run_chunks(run_id):
        if chunk.chunk_id not in used:
            continue
        if chunk.doc_id not in dates:
            dates[chunk.doc_id] = dict(store.document_meta(chunk.doc_id)).get("date", "")
        block = Block(chunk.chunk_id, chunk.doc_id, title, path, dates[chunk.doc_id])
        out.setdefault(chunk.doc_id, []).append((block, chunk.text))
    return out


def _words(text: str) -> list[str]:
    return normalize_tokens(text)


@lru_cache(maxsize=4096)  # a chunk is searched once per question of its document: normalise it once
def _chunk_words(text: str) -> tuple[str, frozenset[str]]:
    """A chunk's normalised words, joined with spaces around them (for runs of words), and as a set."""
    words = _words(text)
    return f" {' '.join(words)} ", frozenset(words)


def _holds(haystack: str, needle: Sequence[str]) -> bool:
    return bool(needle) and f" {' '.join(needle)} " in haystack


def place(item: ExamItem, chunks: list[tuple[Block, str]]) -> Block | None:
    """The chunk a question was asked of, or None (see the module docstring)."""
    answers = [_words(a) for a in item.answers]
    passage = set(_words(item.context))
    question = set(_words(item.question))
    best: tuple[tuple[bool, float, float, int], Block] | None = None
    for index, (block, text) in enumerate(chunks):
        joined, vocab = _chunk_words(text)
        holds = any(_holds(joined, a) for a in answers)
        cover = len(passage & vocab) / len(passage) if passage else 0.0
        if not holds and cover < _MIN_PASSAGE_COVER:
            continue
        rank = (holds, cover, len(question & vocab) / max(len(question), 1), -index)
        if best is None or rank > best[0]:
            best = (rank, block)
    return best[1] if best else None


def _hash_unit(*parts: str) -> int:
    return int(ids.hash_str("open-book-eval", *parts)[:12], 16)


def build(store: Store, run_id: int | None, items: list[ExamItem]) -> tuple[list[OpenBookItem], list[str]]:
    """Three prompts per placed real question (control questions are left out: ``withheld`` asks the same
    thing of every question), and the questions that could not be placed."""
    by_doc = run_blocks(store, run_id) if run_id is not None else {}
    pool = Distractors({b.chunk_id: b for chunks in by_doc.values() for b, _ in chunks})
    texts = {b.chunk_id: t for chunks in by_doc.values() for b, t in chunks}
    out: list[OpenBookItem] = []
    unplaced: list[str] = []
    for it in items:
        if it.kind == CONTROL_KIND:
            continue
        own = place(it, by_doc.get(it.doc_id, [])) if it.doc_id else None
        if own is None:
            unplaced.append(f"{it.question!r} ({it.source or 'no document'})")
            continue
        for mode in MODES:
            if mode == ANSWER:
                blocks = [own]
            else:
                others = pool.pick(f"eval:{mode}:{it.qid}", own.doc_id, 1 + _hash_unit("count", mode, it.qid) % 2)
                if not others:  # a single-document run: nothing to distract with, nothing to withhold it among
                    continue
                blocks = list(others)
                if mode == DISTRACTORS:
                    blocks.insert(_hash_unit("position", it.qid) % (len(others) + 1), own)
            prompt = render_prompt([(b, texts[b.chunk_id]) for b in blocks], it.question)
            out.append(OpenBookItem(it.qid, it.question, it.answers, mode, prompt, tuple(b.chunk_id for b in blocks),
                                    ids.short(own.doc_id) if mode != WITHHELD else "", it.source or "(corpus)"))
    return out, unplaced


def prompts(items: list[OpenBookItem]) -> list[tuple[str, str]]:
    """(system, user) for :func:`qagen.evaluation.answer.answer`: the open-book training rows' system message."""
    return [(SYSTEM, it.prompt) for it in items]


# --- scoring -------------------------------------------------------------------
def strip_source(reply: str) -> str:
    """The answer without its ``Source:`` lines (what is scored against the gold answers)."""
    return _SOURCE_LINES.sub("", reply).strip()


def _row(it: OpenBookItem, base: str, tuned: str) -> OpenBookRow:
    sb, st = score_answer(strip_source(base), it.answers), score_answer(strip_source(tuned), it.answers)
    cited = (lambda reply: bool(it.cite) and it.cite in reply.lower())
    return OpenBookRow(it.qid, it.mode, it.question, it.answers, base, tuned, sb.f1, st.f1, sb.em, st.em,
                       sb.contains, st.contains, is_decline(base), is_decline(tuned), cited(base), cited(tuned))


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else math.nan


def score(items: list[OpenBookItem], base: list[str], tuned: list[str], unplaced: list[str], *,
          seed: int = 0) -> OpenBookReport:
    if not len(items) == len(base) == len(tuned):
        raise ValueError("one base and one tuned answer per prompt")
    rows = [_row(it, b, t) for it, b, t in zip(items, base, tuned, strict=True)]
    report = OpenBookReport(questions=len({r.qid for r in rows}), unplaced=unplaced, rows=rows)
    for mode in MODES:
        group = [r for r in rows if r.mode == mode]
        if not group:
            continue
        m: dict[str, float | int | str] = {"count": len(group)}
        for who in ("base", "tuned"):
            for metric in ("f1", "em", "contains", "declined", "cited"):
                m[f"{who}_{metric}"] = _mean([float(getattr(r, f"{who}_{metric}")) for r in group])
        metric = "declined" if mode == WITHHELD else "f1"
        iv = paired_bootstrap([float(getattr(r, f"tuned_{metric}")) for r in group],
                              [float(getattr(r, f"base_{metric}")) for r in group], seed=seed)
        m.update(delta=round(iv.mean, 4), delta_low=round(iv.low, 4), delta_high=round(iv.high, 4), delta_of=metric)
        report.modes[mode] = m
    return report
