"""Documents, their chunks, and which documents a run read (``run_docs``)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from qagen.core.types import Chunk, Document
from qagen.store.db import Database, utc_now


class CorpusQueries(Database):
    def add_document(self, run_id: int, doc: Document, chunks: Iterable[Chunk]) -> None:
        now = utc_now()
        with self.transaction():
            self.db.execute(
                "INSERT INTO documents VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(doc_id) DO UPDATE SET "
                "path=excluded.path, title=excluded.title, last_seen=excluded.last_seen",
                (doc.doc_id, doc.path, doc.title, doc.fmt, len(doc.text), json.dumps(doc.meta), now, now),
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO chunks VALUES(?,?,?,?,?,?,?)",
                [(c.chunk_id, c.doc_id, c.index, c.title, c.section, c.n_tokens, c.text) for c in chunks],
            )
            self.db.execute("INSERT OR REPLACE INTO run_docs VALUES(?,?,?)", (run_id, doc.doc_id, doc.path))

    def run_doc_ids(self, run_id: int) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT doc_id FROM run_docs WHERE run_id=? ORDER BY path", (run_id,))]

    def run_documents(self, run_id: int) -> list[tuple[str, str, str]]:
        """(doc_id, path in this run, title) of every document the run read, in path order."""
        return [(r[0], r[1], r[2]) for r in self.db.execute(
            "SELECT r.doc_id, r.path, d.title FROM run_docs r JOIN documents d ON d.doc_id=r.doc_id "
            "WHERE r.run_id=? ORDER BY r.path", (run_id,))]

    def first_chunk(self, run_id: int, doc_id: str) -> tuple[str, str, str] | None:
        """(chunk_id, document title, path in this run) of a document's first chunk."""
        row = self.db.execute(
            "SELECT c.chunk_id, d.title, r.path FROM chunks c JOIN documents d ON d.doc_id=c.doc_id "
            "JOIN run_docs r ON r.doc_id=d.doc_id AND r.run_id=? WHERE c.doc_id=? ORDER BY c.idx LIMIT 1",
            (run_id, doc_id),
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def chunk_count(self, run_id: int) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM chunks WHERE doc_id IN (SELECT doc_id FROM run_docs WHERE run_id=?)", (run_id,)
        ).fetchone()
        return int(row[0])

    def chunk_text(self, chunk_id: str) -> str | None:
        """One chunk's text (None if the store has no such chunk)."""
        row = self.db.execute("SELECT text FROM chunks WHERE chunk_id=?", (chunk_id,)).fetchone()
        return row[0] if row else None

    def document_meta(self, doc_id: str) -> tuple[tuple[str, str], ...]:
        """The file's own metadata (front matter, PDF/DOCX properties) as stored for a document; () if none."""
        row = self.db.execute("SELECT meta FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        if not row or not row[0]:
            return ()
        return tuple((str(k), str(v)) for k, v in json.loads(row[0]))
