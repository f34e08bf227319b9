"""Core value types. Small, frozen, and free of I/O."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    """One readable source document.

    ``text`` is the normalised text (markdown for converted formats);
    ``path`` is metadata only and takes no part in ``doc_id``.
    """

    doc_id: str
    path: str  # relative to the ingested folder, POSIX separators
    title: str
    text: str
    fmt: str  # "markdown", "rst", "text"
    meta: tuple[tuple[str, str], ...] = ()  # e.g. (("date", "1790-01-08"),)
    # Where the title came from: metadata | heading | first_line (a short line that reads as a heading) |
    # filename (the document states none: the pipeline asks the model for a short one) | model
    title_from: str = "heading"


@dataclass(frozen=True)
class SkippedFile:
    """A file the reader could not use, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    index: int  # position within the document, 0-based
    text: str
    title: str  # the document title
    section: str  # heading path, e.g. "Methods > Sampling"; "" if none
    n_tokens: int  # length in the chunker's unit (tokens or estimated tokens)


@dataclass(frozen=True)
class QAPair:
    pair_id: str
    chunk_id: str
    doc_id: str
    perspective: str
    question: str
    answer: str
    request_key: str  # the LLM request it came from ("" when built by code)
    model: str
    extra: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class Rewrite:
    """A chunk said again in other words, for continued pretraining (``--cpt``; ``qagen/generate/rewrite.py``).

    Only rewrites that state no number, name or date the chunk does not are kept; ``OUT/cpt.jsonl`` holds them
    beside the chunk's own text.
    """

    rewrite_id: str
    chunk_id: str
    doc_id: str
    request_key: str  # the LLM request it came from
    style: str  # relations | brief | encyclopedia | facts (qagen.prompting.schemas.REWRITE_STYLES)
    text: str


@dataclass(frozen=True)
class Fact:
    """One entry of a chunk's fact ledger (``qagen/generate/ledger.py``): a short answer span that occurs verbatim in
    the chunk, with the sentence it comes from. Its ``fact_id`` hashes the chunk's text, the normalised span and the
    normalised sentence, so it is stable across runs and under any edit outside its chunk."""

    fact_id: str
    chunk_id: str
    doc_id: str
    span: str  # as written in the chunk
    sentence: str
    start: int  # the span's character offset in the chunk text
    kind: str  # code | number | date | name | quoted | phrase
    source: str  # "code" (found by qagen/corpus/spans.py) | "model" (the extraction request's, verified by code)
