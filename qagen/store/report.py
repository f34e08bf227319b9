"""The read queries behind ``OUT/report.html`` and the dataset card (``OUT/README.md``).

Flat in memory by design (see :mod:`qagen.output.report`): every figure is an SQL aggregate
(``GROUP BY`` counts and sums, length histograms binned in SQL), the row lists stop at the
caller's limit, and long results are cursors the caller streams, never fetched whole.
Which pairs are in ``train.jsonl``/``eval.jsonl`` is joined from a TEMP table of this
connection that :meth:`ReportQueries.report_tables` fills from the pair ids the caller
streams in; per-chunk counts go to another TEMP table. Both are dropped on exit.

Rows are plain tuples; the report turns them into its own dataclasses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from qagen.store.db import Database

# A run's pairs with their verdicts; a pair without a verdict row counts as exported.
_PAIRS = ("FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
          "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=r.pair_id ")
_EXPORTED = "coalesce(v.verdict,'exported')='exported'"
_SPLITS = "temp.qagen_report_splits"  # pair_id -> train|eval, from the JSONL files
_CHUNKS = "temp.qagen_report_chunks"  # (chunk_id, doc_id) -> pairs, non-identity pairs, exported pairs
_RUN_DOCS = "FROM run_docs rd JOIN documents d ON d.doc_id=rd.doc_id WHERE rd.run_id=?"
_ZERO = ("FROM chunks c JOIN run_docs rd ON rd.doc_id=c.doc_id AND rd.run_id=? WHERE NOT EXISTS "
         f"(SELECT 1 FROM {_CHUNKS} a WHERE a.chunk_id=c.chunk_id AND a.exported>0)")
_REFINED = "FROM refined rf JOIN run_pairs r ON r.pair_id=rf.final_pair_id AND r.run_id=? "

PairGroup = tuple[str, str, int, int, int, int, list[str], int, int, int, int]
DocFigures = tuple[str, str, str, int, int, int, int]


class ReportQueries(Database):
    # --- over the run's pairs (no TEMP tables needed) -------------------------
    def report_pair_groups(self, run_id: int) -> list[PairGroup]:
        """Per (perspective, verdict), in run order: (perspective, verdict, pairs, distinct chunks,
        not grounded, grounding checked, models, question min/max length, answer min/max length)."""
        rows = self.db.execute(
            "SELECT p.perspective, coalesce(v.verdict,'exported') AS verdict, count(*), count(DISTINCT p.chunk_id), "
            "coalesce(sum(v.grounded=0), 0), count(v.grounded), json_group_array(DISTINCT p.model), "
            "min(length(p.question)), max(length(p.question)), min(length(p.answer)), max(length(p.answer)) "
            f"{_PAIRS} WHERE r.run_id=? GROUP BY 1, 2 ORDER BY min(r.sort_key)",
            (run_id,),
        ).fetchall()
        return [(*r[:6], json.loads(r[6]), *r[7:]) for r in rows]

    def report_length_bins(
        self, run_id: int, question: tuple[int, int], answer: tuple[int, int], bins: int
    ) -> Iterator[tuple[int, int, int]]:
        """(question bin, answer bin, exported pairs), binned in SQL: ``bins`` equal bins from lo to hi
        (integer arithmetic: bin i holds lo + (hi-lo)*i/bins <= x < lo + (hi-lo)*(i+1)/bins, hi goes in
        the last); a (lo, hi) with hi <= lo is one bin, 0."""
        exprs: list[str] = []
        params: list[int] = []
        for column, (lo, hi) in (("p.question", question), ("p.answer", answer)):
            if hi > lo:
                exprs.append(f"min(?, (length({column}) - ?) * ? / ?)")
                params += [bins - 1, lo, bins, hi - lo]
            else:
                exprs.append("0")
        return self.db.execute(
            f"SELECT {exprs[0]}, {exprs[1]}, count(*) {_PAIRS} WHERE r.run_id=? AND {_EXPORTED} GROUP BY 1, 2",
            (*params, run_id),
        )

    def report_has_verdicts(self, run_id: int) -> bool:
        return self.db.execute("SELECT EXISTS(SELECT 1 FROM verdicts WHERE run_id=?)", (run_id,)).fetchone()[0] == 1

    def report_judge_scores(self, run_id: int) -> Iterator[float]:
        """Every judge score of the run's pairs, streamed."""
        scores = self.db.execute(
            f"SELECT v.judge_score {_PAIRS} WHERE r.run_id=? AND v.judge_score IS NOT NULL", (run_id,)
        )
        return (float(s) for (s,) in scores)

    def report_judge_methods(self, run_id: int) -> dict[str, int]:
        """judge method -> verdict rows, in order of their first pair id."""
        return dict(self.db.execute(
            "SELECT judge_method, count(*) FROM verdicts WHERE run_id=? GROUP BY judge_method ORDER BY min(pair_id)",
            (run_id,),
        ))

    def report_duplicates(self, run_id: int, limit: int) -> list[tuple[str, str, str, str]]:
        """The first ``limit`` pairs dropped as duplicates, in run order: (pair_id, perspective, question,
        the question it repeats, or that pair's id when it is not in the run)."""
        return self.db.execute(
            "SELECT p.pair_id, p.perspective, p.question, coalesce(q.question, v.duplicate_of, '') "
            f"{_PAIRS}LEFT JOIN run_pairs r2 ON r2.run_id=r.run_id AND r2.pair_id=v.duplicate_of "
            "LEFT JOIN pairs q ON q.pair_id=r2.pair_id "
            "WHERE r.run_id=? AND v.verdict='duplicate' ORDER BY r.sort_key LIMIT ?",
            (run_id, limit),
        ).fetchall()

    def report_refinement_groups(self, run_id: int) -> list[tuple[int | None, int, str, int]]:
        """(critic rounds, revisions, stop reason, refined pairs) over the run's refined pairs."""
        return self.db.execute(
            "SELECT (SELECT max(round) FROM refinements x WHERE x.final_pair_id=rf.final_pair_id), rf.revisions, "
            f"rf.stop_reason, count(*) {_REFINED} GROUP BY 1, 2, 3",
            (run_id,),
        ).fetchall()

    def report_revised_pairs(self, run_id: int, limit: int) -> list[tuple[str, str, str, str]]:
        """(final pair_id, perspective, question, answer) of the ``limit`` most revised refined pairs
        that have critic rounds (most revisions first, then by pair id)."""
        return self.db.execute(
            f"SELECT rf.final_pair_id, p.perspective, p.question, p.answer {_REFINED} "
            "JOIN pairs p ON p.pair_id=rf.final_pair_id WHERE rf.revisions != 0 "
            "AND EXISTS (SELECT 1 FROM refinements x WHERE x.final_pair_id=rf.final_pair_id) "
            "ORDER BY rf.revisions DESC, rf.final_pair_id LIMIT ?",
            (run_id, limit),
        ).fetchall()

    def prompt_uses(self, run_id: int) -> list[tuple[str, str, str, str, int]]:
        """(prompt_id, prompt_hash, role, model, requests) behind a run's requests: sent by it, or cached
        ones its pairs (and their drafts) came from; by role, then prompt id."""
        rows = self.db.execute(
            "SELECT prompt_id, prompt_hash, role, model, count(*) FROM requests WHERE run_id=? OR key IN ("
            " SELECT p.request_key FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id WHERE r.run_id=?"
            " UNION SELECT d.request_key FROM run_pairs r JOIN refined rf ON rf.final_pair_id=r.pair_id"
            " JOIN pairs d ON d.pair_id=rf.draft_pair_id WHERE r.run_id=?) "
            "GROUP BY prompt_id, prompt_hash, role, model ORDER BY role, prompt_id",
            (run_id, run_id, run_id),
        )
        return [(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    # --- joined with the TEMP tables (inside report_tables) ------------------------
    @contextmanager
    def report_tables(self, run_id: int, split_ids: Iterable[tuple[str, str]]) -> Iterator[None]:
        """The TEMP tables the queries below join, for one run, dropped on exit.

        ``split_ids``: (pair_id, train|eval) as read from the JSONL files, consumed as a stream
        (never held); a later row for a pair wins. Per-chunk pair counts are computed in SQL.
        """
        db = self.db
        drop = (f"DROP TABLE IF EXISTS {_SPLITS}", f"DROP TABLE IF EXISTS {_CHUNKS}")
        for sql in drop:
            db.execute(sql)
        with self.transaction():  # one atomic write for the inserts, inside the group transaction if open
            db.execute(f"CREATE TABLE {_SPLITS}(pair_id TEXT PRIMARY KEY, split TEXT NOT NULL) WITHOUT ROWID")
            db.executemany(f"INSERT OR REPLACE INTO {_SPLITS} VALUES(?,?)", split_ids)
            db.execute(f"CREATE TABLE {_CHUNKS}(chunk_id TEXT, doc_id TEXT, pairs INTEGER, generated INTEGER, "
                       "exported INTEGER, PRIMARY KEY(chunk_id, doc_id)) WITHOUT ROWID")
            db.execute(f"INSERT INTO {_CHUNKS} SELECT p.chunk_id, p.doc_id, count(*), sum(p.perspective!='identity'), "
                       f"sum({_EXPORTED}) {_PAIRS} WHERE r.run_id=? GROUP BY p.chunk_id, p.doc_id", (run_id,))
        try:
            yield
        finally:
            for sql in drop:
                db.execute(sql)

    def report_pairs(self, run_id: int, limit: int) -> Iterator[tuple[Any, ...]]:
        """The first ``limit`` pairs in run order, streamed: (pair_id, perspective, question, answer, doc_id,
        path, chunk_id, chunk idx, section, model, extra (JSON), verdict, detail, judge_score, grounded,
        grounding, quote, duplicate_of, split); None where the joined row is missing."""
        return self.db.execute(
            "SELECT p.pair_id, p.perspective, p.question, p.answer, p.doc_id, rd.path, p.chunk_id, c.idx, c.section, "
            "p.model, p.extra, v.verdict, v.detail, v.judge_score, v.grounded, v.grounding, v.quote, v.duplicate_of, "
            "s.split "
            "FROM (SELECT r.run_id, r.pair_id, r.sort_key FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
            "      WHERE r.run_id=? ORDER BY r.sort_key LIMIT ?) r JOIN pairs p ON p.pair_id=r.pair_id "
            "LEFT JOIN run_docs rd ON rd.run_id=r.run_id AND rd.doc_id=p.doc_id "
            "LEFT JOIN chunks c ON c.chunk_id=p.chunk_id "
            "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=r.pair_id "
            f"LEFT JOIN {_SPLITS} s ON s.pair_id=r.pair_id ORDER BY r.sort_key",
            (run_id, limit),
        )

    def report_split_counts(self, run_id: int) -> dict[str, int]:
        """split -> the run's exported pairs that the JSONL files hold in it."""
        return dict(self.db.execute(
            f"SELECT s.split, count(*) {_PAIRS} JOIN {_SPLITS} s ON s.pair_id=r.pair_id "
            f"WHERE r.run_id=? AND {_EXPORTED} GROUP BY s.split", (run_id,)))

    def report_document_count(self, run_id: int) -> int:
        return int(self.db.execute(f"SELECT count(*) {_RUN_DOCS}", (run_id,)).fetchone()[0])

    def report_chunk_count(self, run_id: int) -> int:
        return int(self.db.execute(
            f"SELECT count(*) FROM chunks c WHERE c.doc_id IN (SELECT d.doc_id {_RUN_DOCS})", (run_id,)).fetchone()[0])

    def report_documents(self, run_id: int, limit: int, *, most_pairs_first: bool = False) -> list[DocFigures]:
        """(doc_id, path, title, n_chars, chunks, generated pairs, exported pairs) of the first ``limit`` run
        documents, by path (or by generated pairs, most first, then path)."""
        order = "generated DESC, rd.path" if most_pairs_first else "rd.path"
        return self.db.execute(
            f"WITH da AS (SELECT doc_id, sum(pairs) g, sum(exported) e FROM {_CHUNKS} GROUP BY doc_id) "
            "SELECT d.doc_id, rd.path, d.title, d.n_chars, (SELECT count(*) FROM chunks c WHERE c.doc_id=d.doc_id), "
            "coalesce(da.g, 0) AS generated, coalesce(da.e, 0) "
            f"FROM run_docs rd JOIN documents d ON d.doc_id=rd.doc_id LEFT JOIN da ON da.doc_id=d.doc_id "
            f"WHERE rd.run_id=? ORDER BY {order} LIMIT ?",
            (run_id, limit),
        ).fetchall()

    def report_zero_chunk_count(self, run_id: int) -> int:
        """Chunks of the run's documents without an exported pair."""
        return int(self.db.execute(f"SELECT count(*) {_ZERO}", (run_id,)).fetchone()[0])

    def report_zero_chunks(self, run_id: int, limit: int) -> list[tuple[str, str, int, str, int, int]]:
        """The first ``limit`` of them by path and index: (chunk_id, path, idx, section, n_tokens, pairs
        generated from it that are not identity pairs)."""
        return self.db.execute(
            "SELECT c.chunk_id, rd.path, c.idx, c.section, c.n_tokens, "
            f"(SELECT coalesce(sum(a.generated), 0) FROM {_CHUNKS} a WHERE a.chunk_id=c.chunk_id) "
            f"{_ZERO} ORDER BY rd.path, c.idx LIMIT ?",
            (run_id, limit),
        ).fetchall()
