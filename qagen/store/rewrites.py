"""Rewrites of chunks for continued pretraining (``--cpt``), the run that produced them (``run_rewrites``), and
the chunks ``OUT/cpt.jsonl`` is written from."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from qagen.core.types import Chunk, Rewrite
from qagen.store.db import Database, utc_now


class RewriteQueries(Database):
    def add_rewrites(self, run_id: int, rewrites: Iterable[tuple[Rewrite, str]]) -> None:
        """Store rewrites (idempotent: content-keyed) and mark them as this run's, with a sort key."""
        rows = list(rewrites)
        now = utc_now()
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO rewrites VALUES(?,?,?,?,?,?,?)",
                [(r.rewrite_id, r.chunk_id, r.doc_id, r.request_key, r.style, r.text, now) for r, _ in rows],
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO run_rewrites VALUES(?,?,?)", [(run_id, r.rewrite_id, key) for r, key in rows]
            )

    def chunk_rewrites(self, run_id: int, chunk_id: str) -> list[Rewrite]:
        """The rewrites this run produced (or found cached) for one chunk, in their sort order."""
        return [Rewrite(*row) for row in self.db.execute(
            "SELECT w.rewrite_id, w.chunk_id, w.doc_id, w.request_key, w.style, w.text FROM rewrites w "
            "JOIN run_rewrites r ON r.rewrite_id=w.rewrite_id AND r.run_id=? WHERE w.chunk_id=? "
            "ORDER BY r.sort_key, w.rewrite_id", (run_id, chunk_id))]

    def run_chunks(self, run_id: int) -> Iterator[tuple[str, str, Chunk]]:
        """(path in this run, document title, chunk) of every stored chunk of the run's documents, in path and
        chunk order. Streamed. A document chunked before with other settings has those chunks here too: the
        caller tells them apart by their chunk ID (``qagen.output.cpt``)."""
        rows = self.db.execute(
            "SELECT r.path, d.title, c.chunk_id, c.doc_id, c.idx, c.text, c.title, c.section, c.n_tokens "
            "FROM run_docs r JOIN documents d ON d.doc_id=r.doc_id JOIN chunks c ON c.doc_id=r.doc_id "
            "WHERE r.run_id=? ORDER BY r.path, c.idx, c.chunk_id", (run_id,))
        for path, title, *chunk in rows:
            yield path, title, Chunk(*chunk)
