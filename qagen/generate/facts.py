"""Facts as the unit of coverage: every fact of a chunk asked at least k times, from both sides.

A model learns a fact from fine-tuning when it meets it several times, in
different words and from different entry points (Knowledge-Instruct, arXiv
2504.05571: gains level off near 3 paraphrases per fact; Physics of Language
Models 3.1, arXiv 2309.14316: without rephrasings a fact is memorised but not
extractable), and a model taught "A's X is B" does not answer "whose X is B?"
(the reversal curse, arXiv 2309.12288). So:

- **A fact** is a pair of the ``facts`` perspective: its supporting quote (a
  span of the chunk, grounded like the quiz) and its answer. Its ``fact_id``
  hashes the chunk ID and the normalised quote, so it is stable across runs.
- **Exposures**: every pair of the chunk whose quote overlaps the fact's quote
  (any perspective: quiz, title questions, the fact's own pair) counts toward
  the fact and carries its ``fact_id``. Pairs without a quote (summaries,
  entities) are not linked: nothing says which fact they test.
- **The top-up** asks again, in one cached request per fact, only for facts
  with fewer than k exposures that passed the deterministic filters, for the
  missing number of new questions. The first one asks the reverse way when the
  fact's answer is a short name: the question names it and asks for the other
  side. Whether a pair *is* a reversal is decided by code (:func:`is_reverse`),
  never by the model's say-so.

The exposures a run reports (:func:`coverage`) are counted on exported pairs,
after the judge, grounding check and dedup: what the model will train on.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from rapidfuzz import fuzz

from qagen.core import ids
from qagen.core.types import QAPair

FACTS_PROMPT = "facts"  # the perspective whose pairs define the facts
# A fact's answer up to this many words is a name or a number: its reverse question can name it.
REVERSE_MAX_WORDS = 6
_MIN_OVERLAP = 0.5  # of the shorter span: two quotes that share half of it support the same fact
_ALIGN_CUTOFF = 90.0
_NON_WORD = re.compile(r"[^\w\s]")


def _norm(text: str) -> str:
    """Casefolded words: case, punctuation, quotes and spacing don't count."""
    return " ".join(_NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def fact_id(chunk_id: str, quote: str) -> str:
    """Stable: the chunk's content ID and the quote, normalised (case, punctuation and spacing don't count)."""
    return ids.hash_str("fact", chunk_id, _norm(quote))


@dataclass(frozen=True)
class Fact:
    fact_id: str
    quote: str
    question: str  # the facts pair that stated it
    answer: str
    span: tuple[int, int] | None  # where the quote sits in the normalised chunk text

    @property
    def reversible(self) -> bool:
        """A short answer (a name, a date, a number) that a reverse question can name."""
        words = _norm(self.answer).split()
        return 0 < len(words) <= REVERSE_MAX_WORDS


def span_of(quote: str, chunk_norm: str) -> tuple[int, int] | None:
    """The quote's place in the normalised chunk text, or None when it is not there (an invented quote)."""
    q = _norm(quote)
    if len(q) < 8 or not chunk_norm:
        return None
    at = chunk_norm.find(q)
    if at >= 0:
        return at, at + len(q)
    found = fuzz.partial_ratio_alignment(q, chunk_norm, score_cutoff=_ALIGN_CUTOFF)
    return (found.dest_start, found.dest_end) if found is not None else None


def overlap(a: tuple[int, int], b: tuple[int, int]) -> float:
    """The share of the shorter span the two have in common."""
    inter = min(a[1], b[1]) - max(a[0], b[0])
    return max(0, inter) / max(1, min(a[1] - a[0], b[1] - b[0]))


def is_reverse(question: str, answer: str, fact: Fact) -> bool:
    """The reversal direction: the question names the fact's answer and asks for something else."""
    if not fact.reversible:
        return False
    target = f" {_norm(fact.answer)} "
    return target in f" {_norm(question)} " and target not in f" {_norm(answer)} "


def quote_of(pair: QAPair) -> str:
    return dict(pair.extra).get("quote", "")


def with_fact(pair: QAPair, fact: Fact, reverse: bool) -> QAPair:
    extra = [(k, v) for k, v in pair.extra if k not in ("fact_id", "direction")]
    extra += [("fact_id", fact.fact_id)] + ([("direction", "reverse")] if reverse else [])
    return replace(pair, extra=tuple(extra))


def facts_of(pairs: Iterable[QAPair], chunk_text: str) -> list[Fact]:
    """The chunk's facts: one per distinct normalised quote of a ``facts`` pair, in the pairs' order."""
    chunk_norm = _norm(chunk_text)
    found: dict[str, Fact] = {}
    for p in pairs:
        quote = quote_of(p)
        if p.perspective != FACTS_PROMPT or not quote:
            continue
        fid = fact_id(p.chunk_id, quote)
        if fid not in found:
            found[fid] = Fact(fid, quote, p.question, p.answer, span_of(quote, chunk_norm))
    return list(found.values())


def link(pairs: Sequence[QAPair], facts: Sequence[Fact], chunk_text: str) -> list[QAPair]:
    """Each quoted pair tagged with the fact its quote overlaps most (``fact_id``, and ``direction`` if reversed)."""
    chunk_norm = _norm(chunk_text)
    by_id = {f.fact_id: f for f in facts}
    out = []
    for p in pairs:
        quote = quote_of(p)
        best: Fact | None = None
        if p.perspective == FACTS_PROMPT and quote:
            best = by_id.get(fact_id(p.chunk_id, quote))
        elif quote:
            span = span_of(quote, chunk_norm)
            scored = [(overlap(span, f.span), i) for i, f in enumerate(facts) if span and f.span]
            share, i = max(scored, default=(0.0, -1))
            best = facts[i] if share >= _MIN_OVERLAP else None
        out.append(with_fact(p, best, is_reverse(p.question, p.answer, best)) if best else p)
    return out


@dataclass(frozen=True)
class TopUp:
    """What one fact still needs: ``need`` new questions, the first reversed when ``reverse``."""

    fact: Fact
    need: int
    reverse: bool
    asked: tuple[str, ...]  # the questions it already has (the new ones must differ)


def plan_top_up(facts: Sequence[Fact], linked: Sequence[QAPair], k: int, reversal: bool) -> list[TopUp]:
    """The facts below k exposures (or lacking a reverse question, with ``reversal``), and what each needs.

    ``linked`` are the chunk's pairs that passed the filters, tagged by :func:`link`.
    """
    exposures: Counter[str] = Counter()
    reversed_: set[str] = set()
    asked: dict[str, list[str]] = {}
    for p in linked:
        extra = dict(p.extra)
        fid = extra.get("fact_id")
        if fid:
            exposures[fid] += 1
            asked.setdefault(fid, []).append(p.question)
            if extra.get("direction") == "reverse":
                reversed_.add(fid)
    plans = []
    for f in facts:
        if f.span is None:
            continue  # its quote is not in the chunk: asking it again would spread an invented fact
        reverse = reversal and f.reversible and f.fact_id not in reversed_
        need = max(k - exposures[f.fact_id], 1 if reverse else 0)
        if need > 0:
            plans.append(TopUp(f, need, reverse, tuple(asked.get(f.fact_id, ()))))
    return plans


@dataclass
class Coverage:
    """Exposures per fact in a run's exported pairs: the summary's and the report's view."""

    k: int = 0
    facts: int = 0
    histogram: dict[str, int] = field(default_factory=dict)  # exposures ("0".."k-1", "k+") -> facts
    below_k: int = 0
    reverse_pairs: int = 0
    chunks: int = 0  # chunks with at least one fact
    chunk_share_at_k: float = 0.0  # mean over those chunks of the share of their facts that reached k
    examples_below_k: list[str] = field(default_factory=list)


def coverage(rows: Iterable[tuple[str, str, str, bool, bool]], k: int, examples: int = 5) -> Coverage:
    """From (fact_id, chunk_id, question, exported, reverse) rows, one per linked pair of the run."""
    exposures: Counter[str] = Counter()
    chunk_of: dict[str, str] = {}
    first_question: dict[str, str] = {}
    reverse = 0
    for fid, chunk_id, question, exported, is_rev in rows:
        chunk_of.setdefault(fid, chunk_id)
        first_question.setdefault(fid, question[:100])
        if exported:
            exposures[fid] += 1
            reverse += is_rev
    k = max(k, 1)
    hist: Counter[str] = Counter()
    per_chunk: dict[str, list[bool]] = {}
    below = []
    for fid, chunk_id in chunk_of.items():
        n = exposures[fid]
        hist[f"{k}+" if n >= k else str(n)] += 1
        per_chunk.setdefault(chunk_id, []).append(n >= k)
        if n < k:
            below.append(f"{first_question[fid]!r}: {n} of {k}")
    order = [str(i) for i in range(k)] + [f"{k}+"]
    shares = [sum(v) / len(v) for v in per_chunk.values()]
    return Coverage(
        k=k, facts=len(chunk_of), histogram={b: hist[b] for b in order if hist[b]}, below_k=len(below),
        reverse_pairs=reverse, chunks=len(per_chunk),
        chunk_share_at_k=round(sum(shares) / len(shares), 3) if shares else 0.0, examples_below_k=below[:examples],
    )
