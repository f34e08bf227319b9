"""Curation: decide, for each of a run's pairs, whether it is exported, and why not.

Runs once at the end of a run, over what the store holds for it, in this order
(a pair gets the first verdict that applies):

1. ``contaminated``: the question nearly matches a benchmark / held-out question;
1b. a deterministic filter's verdict (``qagen.curate.filters``: ``repetitive``, ``too_short``, ``echo``,
   ``truncated``, ``template``, ``not_a_sentence``, or ``ungrounded`` for metadata the document does not state);
   cheap and LLM-free, so the judge is not the only gate;
2. ``judge_failed``: a judge request failed (retried on the next run);
3. ``judge_rejected``: the mean P(yes) of the judge's checks is under the threshold;
4. ``ungrounded``: the supporting quote does not occur in the chunk (with
   ``ungrounded=flag`` the pair is exported, marked ``grounded: false``), or a span-grounded answer (the fact
   ledger's) is not a span of it;
4b. the fact ledger's question checks, made at generation (``qagen/generate/ledger.py``) and stored with the pair:
   ``leak`` (the question holds its answer), ``not_standalone``, ``not_a_question``, ``surplus`` (over k for its
   fact), ``duplicate`` (a near-duplicate of a question kept in the chunk: the ledger's own dedup, followed by a
   top-up, so these pairs skip the corpus-wide dedup below);
5. ``duplicate``: a near-duplicate of a better-judged question elsewhere in the
   corpus (only model-written questions: templated ones repeat by design);
6. ``exported``.

The held-out exam's pairs are never exported: they get ``exam``,
``exam_ungrounded`` or ``exam_contaminated`` (``qagen.curate.exam``), or
``exam_filtered`` when a deterministic filter catches them (a quote asked as a question);
its control questions (output ``unanswerable``) get ``exam_control``.

"The documents don't say" pairs (output ``unanswerable``: code-built declines, ``judge: false``) are checked
against their whole document, not one chunk, before the loop (:func:`_unanswerable_checks`): the document's text
and the questions its other perspectives asked. These checks run even with the filters off: with no judge and no
quote, they are the only gate such a pair has.

Every verdict is stored with its detail, so the report and the summary can say
what was thrown away and why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from qagen.core import ids
from qagen.core.records import RunPair, Verdict
from qagen.corpus.questions import question_texts
from qagen.curate.exam import EXAM_ROLE, ExamPair, settle_exam
from qagen.curate.filters import FilterSettings, PairView, check_unanswerable, screen
from qagen.curate.quality import (
    Decontaminator,
    DedupSession,
    NearDuplicateFilter,
    grounding_score,
)
from qagen.prompting.prompts import Prompt, PromptSet
from qagen.store import Store


@dataclass(frozen=True)
class CurateSettings:
    judge_threshold: float = 0.5
    grounding_threshold: float = 90.0
    ungrounded: str = "drop"  # drop | flag
    dedup: bool = True
    dedup_threshold: float = 0.8
    decontaminate: tuple[Path, ...] = ()
    filters: FilterSettings = field(default_factory=FilterSettings)


@dataclass
class CurateResult:
    counts: Counter[str] = field(default_factory=Counter)  # verdict -> pairs
    grounded: int = 0
    ungrounded: int = 0  # dropped or flagged
    grounding_checked: int = 0
    judge_passed: int = 0
    judge_methods: Counter[str] = field(default_factory=Counter)  # per judged pair: logprobs | parsed | mixed
    examples: dict[str, str] = field(default_factory=dict)  # verdict -> one example
    filtered: Counter[str] = field(default_factory=Counter)  # filter verdict -> pairs a filter threw away


_BATCH = 1000  # verdict rows written per transaction


class _ChunkTexts:
    """Chunk text by id, one chunk at a time: pairs come in chunk order, so memory stays flat."""

    def __init__(self, store: Store):
        self.store, self.chunk_id, self.text = store, "", ""

    def __call__(self, chunk_id: str) -> str:
        if chunk_id != self.chunk_id:
            text = self.store.chunk_text(chunk_id)
            self.chunk_id, self.text = chunk_id, (text if text is not None else "")
        return self.text


def _grounding_mode(prompts: PromptSet, perspective: str) -> str:
    try:
        return prompts.by_id(perspective).grounding
    except KeyError:
        return "none"


class _DocMeta:
    """A document's stored metadata, one document at a time (pairs come in document order)."""

    def __init__(self, store: Store):
        self.store, self.doc_id, self.meta = store, "", ()

    def __call__(self, doc_id: str) -> tuple[tuple[str, str], ...]:
        if doc_id != self.doc_id:
            self.doc_id, self.meta = doc_id, self.store.document_meta(doc_id)
        return self.meta


def _prompt(prompts: PromptSet, perspective: str) -> Prompt | None:
    try:
        return prompts.by_id(perspective)
    except KeyError:
        return None


def _is_exam(prompts: PromptSet, perspective: str) -> bool:
    try:
        return prompts.by_id(perspective).role == EXAM_ROLE
    except KeyError:
        return False


def _unanswerable_checks(store: Store, run_id: int, prompts: PromptSet,
                         filters: FilterSettings) -> dict[str, tuple[str, str] | None]:
    """The filter verdict (or None) of every pair of an ``unanswerable``-output prompt, read against its whole
    document: the text of the document's chunks that have pairs, and the questions its other perspectives asked
    (and answered). One more pass over the run's pairs, made only when such a prompt is on; pairs come in document
    order, so one document is held at a time."""
    ours = {p.id: p for p in prompts.all if p.enabled and p.output == "unanswerable"}
    if not ours:
        return {}
    verdicts: dict[str, tuple[str, str] | None] = {}
    doc_id: str = ""
    chunks: dict[str, None] = {}  # the document's chunk IDs, in order (read only for a document with such pairs)
    asked: list[str] = []
    pending: list[RunPair] = []

    def settle() -> None:
        if not pending:
            return
        text = "\n\n".join(t for t in (store.chunk_text(c) for c in chunks) if t)
        for rp in pending:
            view = PairView(rp.pair.question, rp.pair.answer, ours[rp.pair.perspective], rp.title, text,
                            asked=tuple(asked))
            verdicts[rp.pair.pair_id] = screen(view, filters) if filters.enabled else check_unanswerable(view)

    for rp in store.run_pairs(run_id):
        p = rp.pair
        if p.doc_id != doc_id:
            settle()
            doc_id, chunks, asked, pending = p.doc_id, {}, [], []
        chunks.setdefault(p.chunk_id)
        if p.perspective in ours:
            pending.append(rp)
        else:
            asked.append(p.question)
    settle()
    return verdicts


def curate(store: Store, run_id: int, prompts: PromptSet, settings: CurateSettings, *, judged: bool) -> CurateResult:
    """Settle and store every pair's verdict; streams the run's pairs (dedup keeps one short row per candidate)."""
    judgements = store.judgements(run_id) if judged else {}
    declines = _unanswerable_checks(store, run_id, prompts, settings.filters)
    text_of = _ChunkTexts(store)
    meta_of = _DocMeta(store)
    matcher = Decontaminator(question_texts(settings.decontaminate)) if settings.decontaminate else None
    result = CurateResult()
    # Dedup input, kept on disk (a temporary SQLite database), so memory does not grow with the corpus
    # (made on the first candidate: datasketch's import costs ~1.5 s).
    dedup: DedupSession | None = None
    batch: list[Verdict] = []
    repeats: set[str] = set()  # pairs without a quote (code-built rows): the same question and answer once a run
    exam: list[ExamPair] = []  # the held-out exam: settled after the training pairs (qagen/curate/exam.py)
    for rp in store.run_pairs(run_id):
        p = rp.pair
        if _is_exam(prompts, p.perspective):
            # an exam question must read as one too ("The welfare of our country is ..." is a quote, not a question)
            exam_prompt = _prompt(prompts, p.perspective)
            bad = declines[p.pair_id] if p.pair_id in declines else screen(
                PairView(p.question, p.answer, exam_prompt, rp.title), settings.filters)
            if bad is not None:
                batch.append(Verdict(p.pair_id, "exam_filtered", detail=f"filter: {bad[1]}"))
                result.counts["exam_filtered"] += 1
                continue
            control = exam_prompt is not None and exam_prompt.output == "unanswerable"
            exam.append(ExamPair(p.pair_id, p.chunk_id, p.question, p.answer, dict(p.extra).get("quote", ""),
                                 control=control))
            continue
        scores, method, score = judgements.pop(p.pair_id, ({}, "none", None))
        v = Verdict(p.pair_id, "exported", judge=scores, judge_method=method, judge_score=score)
        mode = _grounding_mode(prompts, p.perspective)
        quoted = mode == "quote"
        if mode == "span":  # the answer is a span of the chunk by construction: checked, never fuzzy
            ok = is_span(p.answer, text_of(p.chunk_id))
            v = replace(v, grounded=ok, grounding=100.0 if ok else 0.0)
            result.grounding_checked += 1
            result.grounded += ok
            result.ungrounded += not ok
        if quoted:
            quote = dict(p.extra).get("quote", "")
            g = round(grounding_score(quote, text_of(p.chunk_id)), 1)
            ok = g >= settings.grounding_threshold
            v = replace(v, grounded=ok, grounding=g, quote=quote)
            result.grounding_checked += 1
            result.grounded += ok
            result.ungrounded += not ok
        if method != "none":
            result.judge_methods[method] += 1
            result.judge_passed += score is not None and score >= settings.judge_threshold
        hit = matcher.match(p.question) if matcher else None
        prompt = _prompt(prompts, p.perspective)
        judged_here = judged and (prompt is None or prompt.judge)  # ``judge: false``: the judge never saw it
        # the chunk, where a check reads it: datelines and bylines (metadata), relations (entities)
        head = text_of(p.chunk_id) if prompt is not None and (prompt.id == "metadata" or prompt.output == "entities") \
            else ""
        meta = meta_of(p.doc_id) if head else ()
        filtered = declines[p.pair_id] if p.pair_id in declines else screen(
            PairView(p.question, p.answer, prompt, rp.title, head, meta), settings.filters)
        check = dict(p.extra).get("check", "")
        if hit is not None:
            v = replace(v, verdict="contaminated", detail=f"nearly matches benchmark question {hit!r}")
        elif check:
            v = replace(v, verdict=check, detail=f"ledger check: {_LEDGER_DETAIL.get(check, check)}")
        elif filtered is not None:
            v = replace(v, verdict=filtered[0], detail=f"filter: {filtered[1]}")
            result.filtered[filtered[0]] += 1
        elif judged_here and p.request_key and score is None:
            v = replace(v, verdict="judge_failed", detail="a judge request failed (retried on the next run)")
        elif judged_here and score is not None and score < settings.judge_threshold:
            v = replace(v, verdict="judge_rejected",
                        detail=f"judge score {score:.2f} < {settings.judge_threshold} ({_fmt(scores)})")
        elif v.grounded is False and settings.ungrounded == "drop":
            v = replace(v, verdict="ungrounded",
                        detail=f"quote not found in the chunk (score {v.grounding} < {settings.grounding_threshold})")
        elif settings.dedup and quoted:
            dedup = dedup or NearDuplicateFilter(threshold=settings.dedup_threshold).session()
            dedup.add(p.pair_id, p.question, score if score is not None else 0.0)
        elif settings.dedup and (same := ids.hash_str("repeat", *(" ".join(t.lower().split()) for t in
                                                                 (p.question, p.answer)))) in repeats:
            v = replace(v, verdict="duplicate", detail="the same question and answer as a pair already kept "
                                                       "(overlapping chunks state the same sentence)")
        elif settings.dedup:
            repeats.add(same)
        _count(result, v, p.question, p.answer)
        batch.append(v)
        if len(batch) >= _BATCH:
            store.put_verdicts(run_id, batch)
            batch = []
    store.put_verdicts(run_id, batch)
    if dedup is not None:
        try:
            marked: list[tuple[str, str, str]] = []
            for pid, kept, question, kept_question in dedup.run():
                detail = f"near-duplicate of {kept_question!r}"
                marked.append((pid, kept, detail))
                result.counts["exported"] -= 1
                result.counts["duplicate"] += 1
                result.examples.setdefault("duplicate", f"{question!r}: {detail}")
                if len(marked) >= _BATCH:
                    store.mark_duplicates(run_id, marked)
                    marked = []
            store.mark_duplicates(run_id, marked)
        finally:
            dedup.close()
    result.counts.update(settle_exam(store, run_id, exam, grounding_threshold=settings.grounding_threshold,
                                     dedup_threshold=settings.dedup_threshold))
    result.counts = +result.counts  # drop zero counts
    return result


_LEDGER_DETAIL = {
    "leak": "the question holds its own answer", "not_standalone": "the question does not name what it is about",
    "not_a_question": "not a question of 4-40 words", "surplus": "its fact already has k questions",
    "off_target": "the question shares no word with the words around any answer of its sentence",
    "duplicate": "a near-duplicate of a question kept for this chunk",
}


def is_span(answer: str, chunk_text: str) -> bool:
    """The answer occurs in the chunk, case and spacing aside (markdown backticks and asterisks too)."""
    def squash(text: str) -> str:
        return " ".join(text.replace("`", " ").replace("*", " ").casefold().split())
    a = squash(answer)
    return bool(a) and a in squash(chunk_text)


def _count(result: CurateResult, v: Verdict, question: str, answer: str) -> None:
    result.counts[v.verdict] += 1
    if v.verdict != "exported" and v.verdict not in result.examples:
        result.examples[v.verdict] = f"{question!r} -> {answer[:100]!r}: {v.detail}"


def _fmt(scores: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(scores.items()))
