"""The fact ledger: every fact of a chunk, a span of it with its sentence, and what the run taught of each.

A closed-book model learns a fact from several questions about it, asked from different entry points (Physics of
Language Models 3.1, arXiv 2309.14316: one phrasing per fact gives 9.7 % held-out extraction on 124M-682M models,
five varied phrasings 96.6 %), and a question paired with the wrong part of its passage teaches the wrong thing.
So qagen picks the answers first and asks the teacher only for questions (PAQ, arXiv 2102.07033; lmqg):

1. **The ledger.** A chunk's facts are short answer spans copied verbatim from it, each with its sentence: the
   names, numbers, dates and code terms code finds (``qagen/corpus/spans.py``), plus the phrases of one cheap
   extraction request (``prompts/fact_spans.md``) that code finds verbatim in one sentence (the rest are
   rejected and counted). A ``fact_id`` hashes the chunk's text, the normalised span and the normalised sentence.
2. **Answer-first questions** (``qagen/generate/answer_first.py``, ``prompts/fact_questions.md``): the teacher
   writes only questions for each fact; the pair's answer is the span itself, grounded by construction, with no
   quote to write or check. Code checks each question; a failed check is stored with the pair (``check`` in its
   extra) and curation turns it into the pair's verdict.
3. **The budget rule** (:func:`allocate`): every fact reaches ``k`` kept questions before any fact gets ``k + 1``
   (no fact ever gets more than ``k``). Facts still below ``k`` after a round are asked again (a top-up, with the
   questions they already have shown), up to ``top_ups`` rounds. Near-duplicates are removed here, per chunk, not
   by curation's corpus-wide dedup, so removing one is followed by a top-up.
4. **Cloze rows** (``prompts/cloze.md``, when enabled): a fact's sentence with its span blanked, answered by the
   span. Built by code: no teacher tokens.

Exposures (:func:`exposures`) count, per fact, the exported pairs whose answer holds its span in the same chunk:
the ledger's own questions and any other perspective's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from qagen.core import ids
from qagen.core.exposure import is_cloze, pairs_by_fact
from qagen.core.text import norm_words
from qagen.core.types import Chunk, Document, Fact, QAPair
from qagen.corpus.spans import Sentence, Span, find_spans, locate

KIND_ORDER = ("number", "date", "code", "name", "quoted", "subject", "list", "phrase")  # which facts a full chunk keeps first
norm = norm_words  # the form spans, answers and questions are compared in


def fact_id(chunk_text: str, span: str, sentence: str) -> str:
    """Stable across runs and under any edit outside the chunk: the chunk's own text (not its chunk_id, which hashes
    the whole document's ID), the normalised span and the normalised sentence."""
    return ids.hash_str("fact", ids.hash_str("chunk-text", chunk_text), norm(span), norm(sentence))


def _fact(doc: Document, chunk: Chunk, span: Span, source: str) -> Fact:
    return Fact(fact_id(chunk.text, span.text, span.sentence.text), chunk.chunk_id, doc.doc_id, span.text,
                span.sentence.text, span.start, span.kind, source)


def code_facts(doc: Document, chunk: Chunk, sents: list[Sentence]) -> list[Fact]:
    return [_fact(doc, chunk, s, "code") for s in find_spans(chunk.text, sents)]


def model_facts(phrases: Iterable[str], doc: Document, chunk: Chunk, sents: list[Sentence]) -> tuple[list[Fact], int]:
    """The extraction request's phrases that occur verbatim in one sentence of the chunk; and how many did not."""
    found, rejected = [], 0
    for phrase in phrases:
        span = locate(chunk.text, phrase, sents)
        if span is None:
            rejected += 1
        else:
            found.append(_fact(doc, chunk, span, "model"))
    return found, rejected


def select(facts: Iterable[Fact], limit: int) -> list[Fact]:
    """One fact per ID, none inside another's span, at most ``limit``: when there are more, taken a sentence at a
    time (each sentence's best kind first, then its next), so every sentence is asked about. In text order."""
    by_id: dict[str, Fact] = {}
    for f in facts:
        by_id.setdefault(f.fact_id, f)
    ordered = sorted(by_id.values(), key=lambda f: (f.start, -len(f.span)))
    kept: list[Fact] = []
    for f in ordered:  # a span inside a longer one of the same sentence is the same fact, asked less well
        end = f.start + len(f.span)
        if any(o.sentence == f.sentence and o.start <= f.start and end <= o.start + len(o.span) for o in kept):
            continue
        kept.append(f)
    if len(kept) <= limit:
        return kept
    per_sentence: dict[str, list[Fact]] = {}
    for f in kept:
        per_sentence.setdefault(f.sentence, []).append(f)
    queues = [sorted(fs, key=lambda f: (KIND_ORDER.index(f.kind) if f.kind in KIND_ORDER else 99, f.start))
              for fs in per_sentence.values()]
    chosen: list[Fact] = []
    while len(chosen) < limit:
        progressed = False
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
                progressed = True
        if not progressed:
            break
    return sorted(chosen, key=lambda f: f.start)


def allocate(counts: Mapping[str, int], order: Sequence[str], k: int, limit: int | None = None) -> dict[str, int]:
    """How many new questions each fact gets, level by level: every fact reaches level 1 before any reaches 2, and
    so on up to ``k``; ``limit`` caps the total (None: every fact gets what it lacks). Ties go in ``order``."""
    have = {fid: counts.get(fid, 0) for fid in order}
    plan: Counter[str] = Counter()
    left = limit if limit is not None else sum(max(0, k - n) for n in have.values())
    for level in range(1, k + 1):
        for fid in order:
            if left <= 0:
                return dict(plan)
            if have[fid] + plan[fid] < level:
                plan[fid] += 1
                left -= 1
    return dict(plan)


def exposures(facts: Sequence[Fact], pairs: Iterable[QAPair]) -> Counter[str]:
    """Per fact, the pairs whose answer holds its span, in the same chunk (a ledger pair counts for its own fact)."""
    return Counter({fid: len(ps) for fid, ps in pairs_by_fact(facts, pairs).items() if ps})


# --- what a run covers -------------------------------------------------------------
@dataclass
class Coverage:
    """The ledger's figures for a run's exported pairs: the summary's, ``--json``'s and report.html's view."""

    k: int = 0
    facts: int = 0
    facts_per_document: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)  # code | model -> facts
    exposed: int = 0  # facts with at least one exported row that asks them (a question or a code-built row)
    at_k: int = 0  # facts with at least k
    histogram: dict[str, int] = field(default_factory=dict)  # exported rows ("0".."k-1", "k+") -> facts
    cloze_rows: int = 0  # of those, the rows built by code (prompts/cloze.md)
    examples_below_k: list[str] = field(default_factory=list)

    def add_document(self, path: str, facts: Sequence[Fact], exported: Sequence[QAPair], examples: int = 5) -> None:
        """One document's facts and exported pairs (documents come one at a time: memory stays flat)."""
        self.cloze_rows += sum(1 for p in exported if is_cloze(p))
        counts = exposures(facts, exported)
        if facts:
            self.facts_per_document[path] = len(facts)
        for f in facts:
            n = counts[f.fact_id]
            self.facts += 1
            self.sources[f.source] = self.sources.get(f.source, 0) + 1
            self.exposed += n >= 1
            self.at_k += n >= self.k
            label = f"{self.k}+" if n >= self.k else str(n)
            self.histogram[label] = self.histogram.get(label, 0) + 1
            if n < self.k and len(self.examples_below_k) < examples:
                self.examples_below_k.append(f"{path}: {f.span!r} ({n} of {self.k})")
