"""The fact ledger: each chunk's facts (answer spans with their sentences) and the run that listed them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from qagen.core.types import Fact
from qagen.store.db import Database, utc_now


class FactQueries(Database):

    def add_facts(self, run_id: int, facts: Iterable[tuple[Fact, str]]) -> None:
        """Store facts (content-keyed, idempotent) and mark them as this run's, with a sort key."""
        rows = list(facts)
        now = utc_now()
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO facts VALUES(?,?,?,?,?,?,?,?,?)",
                [(f.fact_id, f.chunk_id, f.doc_id, f.span, f.sentence, f.start, f.kind, f.source, now)
                 for f, _ in rows],
            )
            self.db.executemany("INSERT OR REPLACE INTO run_facts VALUES(?,?,?)",
                                [(run_id, f.fact_id, key) for f, key in rows])

    def run_facts(self, run_id: int) -> Iterator[tuple[str, Fact]]:
        """(document path, fact) for this run's facts, in their sort order (path, chunk, position): streamed, in
        the same document order as ``run_pairs``."""
        rows = self.db.execute(
            "SELECT d.path, f.fact_id, f.chunk_id, f.doc_id, f.span, f.sentence, f.start, f.kind, f.source "
            "FROM run_facts r JOIN facts f ON f.fact_id=r.fact_id "
            "JOIN run_docs d ON d.run_id=r.run_id AND d.doc_id=f.doc_id WHERE r.run_id=? ORDER BY r.sort_key",
            (run_id,))
        for row in rows:
            yield row[0], Fact(*row[1:])

    def fact_count(self, run_id: int) -> int:
        return int(self.db.execute("SELECT count(*) FROM run_facts WHERE run_id=?", (run_id,)).fetchone()[0])
