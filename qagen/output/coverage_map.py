"""report.html's coverage map: each document's text with its ledger facts shaded by how often the export asks them.

What the tuned model will be taught is what the exported pairs ask; the fact ledger (``qagen/generate/ledger.py``)
says what each chunk states. This puts the two side by side: every fact's span in the chunk's text, shaded
``none`` (no exported row asks it), ``some`` (fewer than k) or ``full`` (k or more), with its questions a
click away. Documents come one at a time from the store (facts and pairs in document order), and the page holds
at most ``MAX_DOCS`` documents and ``MAX_CHARS`` characters of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby

from qagen.core.exposure import is_cloze, pairs_by_fact
from qagen.core.types import Fact, QAPair
from qagen.store import Store

MAX_DOCS = 40
MAX_CHARS = 20_000  # of one document's chunk texts
MAX_QUESTIONS = 8  # a fact's questions listed on the page


@dataclass(frozen=True)
class Segment:
    text: str
    fact_id: str = ""  # "" for plain text
    level: str = ""  # none | some | full
    exposures: int = 0


@dataclass
class FactView:
    fact_id: str
    span: str
    level: str
    exposures: int
    questions: list[str] = field(default_factory=list)  # exported questions that ask it (the first few)
    cloze: int = 0  # of its exported rows, those built by code


@dataclass
class DocMap:
    path: str
    title: str
    facts: list[FactView] = field(default_factory=list)
    chunks: list[list[Segment]] = field(default_factory=list)
    cut: bool = False  # the text was cut at MAX_CHARS

    @property
    def covered(self) -> int:
        return sum(1 for f in self.facts if f.exposures)


def level(n: int, k: int) -> str:
    return "full" if n >= k else ("some" if n else "none")


def segments(text: str, facts: list[tuple[Fact, str, int]]) -> list[Segment]:
    """The chunk's text cut at its facts' spans (facts in text order; an overlapping one is left unmarked)."""
    out, pos = [], 0
    for fact, lvl, n in sorted(facts, key=lambda x: x[0].start):
        start, end = fact.start, fact.start + len(fact.span)
        if start < pos or text[start:end] != fact.span:
            continue
        if start > pos:
            out.append(Segment(text[pos:start]))
        out.append(Segment(fact.span, fact.fact_id, lvl, n))
        pos = end
    if pos < len(text):
        out.append(Segment(text[pos:]))
    return out


def coverage_map(store: Store, run_id: int, k: int, max_docs: int = MAX_DOCS) -> list[DocMap]:
    """The first ``max_docs`` documents (by path) that have facts, each with its shaded text and its facts."""
    facts = groupby(store.run_facts(run_id), key=lambda row: row[0])
    out: list[DocMap] = []
    pair_stream = groupby(((rp.path, rp) for rp in store.run_pairs(run_id) if rp.exported), key=lambda r: r[0])
    pending = next(pair_stream, None)
    for path, rows in facts:
        doc_facts = [f for _, f in rows]
        while pending is not None and pending[0] < path:
            pending = next(pair_stream, None)
        doc_pairs = [rp for _, rp in pending[1]] if pending is not None and pending[0] == path else []
        title = doc_pairs[0].title if doc_pairs else ""
        if pending is not None and pending[0] == path:
            pending = next(pair_stream, None)
        out.append(_doc_map(store, path, title, doc_facts, [rp.pair for rp in doc_pairs], k))
        if len(out) >= max_docs:
            break
    return out


def _doc_map(store: Store, path: str, title: str, facts: list[Fact], pairs: list[QAPair], k: int) -> DocMap:
    linked = pairs_by_fact(facts, pairs)
    doc = DocMap(path, title)
    by_chunk: dict[str, list[tuple[Fact, str, int]]] = {}
    for f in facts:
        questions = linked[f.fact_id]  # the teacher's questions and the rows built by code
        lvl = level(len(questions), k)
        doc.facts.append(FactView(f.fact_id, f.span, lvl, len(questions),
                                  [p.question for p in questions[:MAX_QUESTIONS]],
                                  sum(1 for p in questions if is_cloze(p))))
        by_chunk.setdefault(f.chunk_id, []).append((f, lvl, len(questions)))
    chars = 0
    for chunk_id, chunk_facts in by_chunk.items():
        text = store.chunk_text(chunk_id) or ""
        if chars + len(text) > MAX_CHARS:
            doc.cut = True
            break
        chars += len(text)
        doc.chunks.append(segments(text, chunk_facts))
    return doc
