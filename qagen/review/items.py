"""The review page's data: a run's pairs by document, each with its chunk and the span to highlight, and the
human's decisions on them.

The highlight is the pair's own evidence: the fact ledger's span (its offset in the chunk), else the supporting
quote the generator gave, else the answer itself where it occurs in the chunk. Dropped pairs come with the check
that dropped them (the verdict and its detail), so a user can rescue one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from qagen.core.records import Review
from qagen.store import Store
from qagen.store.reviews import review_key


@dataclass(frozen=True)
class Item:
    """One pair as the page shows it."""

    key: str  # the review key (content: chunk, question, answer)
    pair_id: str
    doc_id: str
    chunk_id: str
    perspective: str
    question: str  # as generated
    answer: str
    verdict: str  # exported, or the check that dropped it
    detail: str
    judge_score: float | None
    grounded: bool | None
    highlight: tuple[int, int] | None  # [start, end) in the chunk text
    highlight_from: str  # ledger | quote | answer | ""
    decision: str = ""  # accept | reject | ""
    edited_question: str | None = None
    edited_answer: str | None = None


@dataclass
class Document:
    doc_id: str
    path: str
    title: str
    chunks: dict[str, tuple[int, str, str]]  # chunk_id -> (index, section, text)
    items: list[Item]


def find(needle: str, text: str) -> tuple[int, int] | None:
    """Where ``needle`` occurs in ``text`` (case aside), as [start, end); None when it does not."""
    needle = needle.strip()
    if not needle:
        return None
    at = text.find(needle)
    if at < 0:
        at = text.casefold().find(needle.casefold())  # casefold can change lengths: only trusted if it does not
        if at < 0 or len(text.casefold()) != len(text):
            return None
    return at, at + len(needle)


def _highlight(store: Store, extra: dict[str, str], quote: str, answer: str,
               text: str) -> tuple[tuple[int, int] | None, str]:
    fact = store.fact_span(extra["fact_id"]) if extra.get("fact_id") else None
    if fact is not None:
        span, start = fact
        if text[start:start + len(span)] == span:
            return (start, start + len(span)), "ledger"
        found = find(span, text)
        if found:
            return found, "ledger"
    for source, needle in (("quote", quote or extra.get("quote", "")), ("answer", answer)):
        found = find(needle, text)
        if found:
            return found, source
    return None, ""


def load(store: Store, run_id: int) -> list[Document]:
    """Every pair of the run, grouped by document in export order, with its chunk and its review."""
    decided = store.reviews()
    docs: dict[str, Document] = {}
    for row in store.review_rows(run_id):
        (pair_id, chunk_id, doc_id, perspective, question, answer, extra_json, path, title, idx, section,
         verdict, detail, judge_score, grounded, quote) = row
        doc = docs.get(str(doc_id))
        if doc is None:
            doc = docs[str(doc_id)] = Document(str(doc_id), str(path), str(title), {}, [])
        if chunk_id not in doc.chunks:
            text = store.chunk_text(str(chunk_id)) or ""
            doc.chunks[str(chunk_id)] = (int(idx) if idx is not None else 0, str(section or ""), text)
        text = doc.chunks[str(chunk_id)][2]
        extra = {str(k): str(v) for k, v in json.loads(str(extra_json))}
        span, how = _highlight(store, extra, str(quote or ""), str(answer), text)
        key = review_key(str(chunk_id), str(question), str(answer))
        review = decided.get(key)
        doc.items.append(Item(
            key, str(pair_id), str(doc_id), str(chunk_id), str(perspective), str(question), str(answer),
            str(verdict or "exported"), str(detail or ""), None if judge_score is None else float(judge_score),
            None if grounded is None else bool(grounded), span, how,
            review.decision if review else "", review.question if review else None,
            review.answer if review else None))
    return list(docs.values())


def page_data(store: Store, run_id: int) -> dict[str, object]:
    """The page's JSON: documents, their chunks and pairs."""
    documents = []
    for doc in load(store, run_id):
        documents.append({
            "doc_id": doc.doc_id, "path": doc.path, "title": doc.title,
            "chunks": {cid: {"idx": idx, "section": section, "text": text}
                       for cid, (idx, section, text) in doc.chunks.items()},
            "items": [asdict(item) for item in doc.items],
        })
    return {"run_id": run_id, "documents": documents}


class Decisions:
    """What the page may change: a pair of this run, by its review key (the key names only pairs it showed)."""

    def __init__(self, store: Store, run_id: int):
        self.store = store
        self.originals: dict[str, tuple[str, str, str]] = {}  # key -> (pair_id, question, answer)
        for doc in load(store, run_id):
            for item in doc.items:
                self.originals.setdefault(item.key, (item.pair_id, item.question, item.answer))

    def apply(self, key: str, *, decision: str | None = None, question: str | None = None,
              answer: str | None = None) -> Review:
        """Store a decision and/or an edit; KeyError for a key the run does not hold, ValueError for a bad one."""
        pair_id, q, a = self.originals[key]
        if question is not None and not question.strip() or answer is not None and not answer.strip():
            raise ValueError("an edited question or answer cannot be empty")
        return self.store.put_review(key, pair_id, q, a, decision=decision,
                                     question=None if question is None else question.strip(),
                                     answer=None if answer is None else answer.strip())
