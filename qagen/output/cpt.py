"""``OUT/cpt.jsonl``: the corpus for continued pretraining (``qagen ingest --cpt``), stage 1 of
``qagen train --recipe cpt+sft``.

One row per text, in axolotl's ``type: completion`` shape (``{"text": ...}``) with its provenance: every chunk
of the run's documents in its own words (``kind: chunk``), each followed by its grounded rewrites
(``kind: rewrite``, with their ``style``; ``qagen/generate/rewrite.py``). Each text is headed with the lines that
name its document in the open-book examples (``qagen/output/contextual.py``: the short doc ID, title, source
and stated date), plus its section, so the tuned model meets the short ID and the title in running text too,
beside what the document says::

    doc: 3f2a9c01be
    title: First Annual Message
    source: speeches/washington.md
    date: 1790-01-08
    section: Defense

    To be prepared for war is one of the most effectual means of preserving peace. ...

Documents in path order, chunks in document order, rewrites in the order they were asked: a re-run writes the
same bytes. Built from the state store; no model is called.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qagen.core import ids
from qagen.output.atomic import atomic_writer
from qagen.output.contextual import Block
from qagen.store import Store

NAME = "cpt.jsonl"
CHUNK, REWRITE = "chunk", "rewrite"


@dataclass(frozen=True)
class CptResult:
    path: Path
    chunks: int
    rewrites: int

    @property
    def texts(self) -> int:
        return self.chunks + self.rewrites


def heading(block: Block, section: str) -> str:
    """The lines a text starts with: the document's short ID, title, source and date, then its section."""
    lines = block.context_lines()
    section = " ".join(section.split())
    if section and section != " ".join(block.title.split()):
        lines += f"\nsection: {section}"
    return lines


def write_cpt(store: Store, run_id: int, out_dir: Path, *, chunk_key: str | None = None) -> CptResult:
    """Write OUT/cpt.jsonl for this run: each chunk's text, then its rewrites.

    ``chunk_key`` (``ChunkerSettings.key()``): only the chunks the run's chunker made; a document chunked
    before with other settings keeps those old chunks in the store, and they are left out.
    """
    path = out_dir / NAME
    chunks = rewrites = 0
    dates: dict[str, str] = {}
    with atomic_writer(path) as fh:
        for source, title, chunk in store.run_chunks(run_id):
            if chunk_key is not None and ids.chunk_id(chunk.doc_id, chunk.text, chunk_key) != chunk.chunk_id:
                continue
            if chunk.doc_id not in dates:
                dates[chunk.doc_id] = dict(store.document_meta(chunk.doc_id)).get("date", "")
            head = heading(Block(chunk.chunk_id, chunk.doc_id, title, source, dates[chunk.doc_id]), chunk.section)
            rows = [(CHUNK, "", chunk.text)]
            rows += [(REWRITE, r.style, r.text) for r in store.chunk_rewrites(run_id, chunk.chunk_id)]
            for kind, style, text in rows:
                line = {"text": f"{head}\n\n{text.strip()}", "doc_id": chunk.doc_id, "chunk_id": chunk.chunk_id,
                        "source": source, "kind": kind, "style": style}
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            chunks += 1
            rewrites += len(rows) - 1
    return CptResult(path, chunks, rewrites)


TEXT_ROWS = "text.jsonl"
TEXT_ROW_CHARS = 1200  # a text row's most characters (about 300 tokens): it fits the CPU templates' 512 with its head


def write_text_rows(store: Store, run_id: int, out_dir: Path, *, chunk_key: str | None = None,
                    max_chars: int = TEXT_ROW_CHARS) -> CptResult:
    """Write OUT/text.jsonl: every chunk of the run in its own words, cut at sentence ends into pieces of at most
    ``max_chars``, each headed like a cpt.jsonl text. ``qagen train`` mixes these completion rows into the same
    run as train.jsonl's pairs (``qagen ingest --text-rows``), the pre-instruction-tuning mix (arXiv 2402.12847:
    documents and QA together, not documents first)."""
    from qagen.corpus.spans import sentences

    path = out_dir / TEXT_ROWS
    pieces = 0
    dates: dict[str, str] = {}
    with atomic_writer(path) as fh:
        for source, title, chunk in store.run_chunks(run_id):
            if chunk_key is not None and ids.chunk_id(chunk.doc_id, chunk.text, chunk_key) != chunk.chunk_id:
                continue
            if chunk.doc_id not in dates:
                dates[chunk.doc_id] = dict(store.document_meta(chunk.doc_id)).get("date", "")
            head = heading(Block(chunk.chunk_id, chunk.doc_id, title, source, dates[chunk.doc_id]), chunk.section)
            for piece in _pieces(chunk.text, [s.end for s in sentences(chunk.text)], max_chars):
                line = {"text": f"{head}\n\n{piece}", "doc_id": chunk.doc_id, "chunk_id": chunk.chunk_id,
                        "source": source, "kind": "text"}
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                pieces += 1
    return CptResult(path, pieces, 0)


def _pieces(text: str, ends: list[int], max_chars: int) -> list[str]:
    """``text`` cut at sentence ends into pieces of at most ``max_chars`` (a longer sentence is a piece alone)."""
    out, start, last = [], 0, 0
    for end in [*ends, len(text)]:
        if end - start > max_chars and last > start:
            out.append(text[start:last].strip())
            start = last
        last = end
    if text[start:].strip():
        out.append(text[start:].strip())
    return [p for p in out if p]
