"""Pairs, the run that produced them (``run_pairs``), their refinement records and their verdicts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from qagen.core.records import Judgement, RefineRound, RunPair, Verdict
from qagen.core.types import QAPair
from qagen.store.db import Database, utc_now


class PairQueries(Database):

    # --- pairs -----------------------------------------------------------
    def _insert_pairs(self, pairs: Iterable[QAPair]) -> None:
        now = utc_now()
        self.db.executemany(
            "INSERT OR IGNORE INTO pairs VALUES(?,?,?,?,?,?,?,?,?,?)",
            [
                (p.pair_id, p.chunk_id, p.doc_id, p.perspective, p.request_key, p.question, p.answer,
                 p.model, json.dumps(p.extra), now)
                for p in pairs
            ],
        )

    def add_pairs(self, run_id: int, pairs: Iterable[tuple[QAPair, str]]) -> None:
        """Store pairs (idempotent) and mark them as produced by this run, with a sort key."""
        rows = list(pairs)
        with self.transaction():
            self._insert_pairs(p for p, _ in rows)
            self.db.executemany(
                "INSERT OR REPLACE INTO run_pairs VALUES(?,?,?)", [(run_id, p.pair_id, key) for p, key in rows]
            )

    def add_drafts(self, pairs: Iterable[QAPair]) -> None:
        """Keep draft pairs (the refinement loop's starting points) without exporting them."""
        with self.transaction():
            self._insert_pairs(pairs)

    def add_refinement(self, final_pair_id: str, draft_pair_id: str, rounds: list[RefineRound], stop: str) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO refinements VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (final_pair_id, i + 1, draft_pair_id, r.question, r.answer, r.critique, json.dumps(r.problems),
                     int(r.needs_revision), int(r.forced), r.revised_question, r.revised_answer, int(r.accepted),
                     json.dumps(r.failed))
                    for i, r in enumerate(rounds)
                ],
            )
            revisions = sum(1 for r in rounds if r.revised_answer is not None and r.accepted)
            self.db.execute(
                "INSERT OR REPLACE INTO refined VALUES(?,?,?,?)", (final_pair_id, draft_pair_id, revisions, stop)
            )

    # --- verdicts (schema 3) -----------------------------------------------
    def put_judgements(self, run_id: int, judged: Iterable[tuple[str, Judgement]]) -> None:
        """Judge scores for this run's pairs; the verdict is settled at the end of the run."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (run_id, pid, "pending", "", json.dumps(j.scores, sort_keys=True), j.method, j.score,
                     None, None, "", None)
                    for pid, j in judged
                ],
            )

    def judgements(self, run_id: int) -> dict[str, tuple[dict[str, float], str, float | None]]:
        """pair_id -> (scores, method, mean score) for this run's judged pairs."""
        rows = self.db.execute("SELECT pair_id, judge, judge_method, judge_score FROM verdicts WHERE run_id=?", (run_id,))
        return {r[0]: (json.loads(r[1]), r[2], r[3]) for r in rows}

    def put_verdicts(self, run_id: int, rows: Iterable[Verdict]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (run_id, v.pair_id, v.verdict, v.detail, json.dumps(v.judge, sort_keys=True), v.judge_method,
                     v.judge_score, v.grounded, v.grounding, v.quote, v.duplicate_of)
                    for v in rows
                ],
            )

    def exported_per_perspective(self, run_id: int) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT p.perspective, count(*) FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
            "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=r.pair_id "
            "WHERE r.run_id=? AND coalesce(v.verdict, 'exported')='exported' GROUP BY p.perspective",
            (run_id,),
        )
        return {r[0]: int(r[1]) for r in rows}

    def chunks_without_pairs(self, run_id: int) -> tuple[int, list[tuple[str, int, str]]]:
        """How many of this run's chunks ended with no exported pair, and the first few (path, index, section)."""
        # NOT IN over an uncorrelated subquery: SQLite builds its set once. (A correlated NOT EXISTS scanned
        # the run's pairs once per chunk: 70,000 chunks x 460,000 pairs at 1 GB of text.)
        rows = self.db.execute(
            "SELECT d.path, c.idx, c.section FROM run_docs d JOIN chunks c ON c.doc_id=d.doc_id WHERE d.run_id=? "
            "AND c.chunk_id NOT IN (SELECT p.chunk_id FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
            "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=r.pair_id "
            "WHERE r.run_id=? AND coalesce(v.verdict, 'exported')='exported') "
            "ORDER BY d.path, c.idx",
            (run_id, run_id),
        )
        count, first = 0, []
        for path, idx, section in rows:  # streamed: only the count and the first few are kept
            count += 1
            if len(first) < 5:
                first.append((path, int(idx), section))
        return count, first

    def mark_duplicates(self, run_id: int, dupes: Iterable[tuple[str, str, str]]) -> None:
        """(pair_id, kept pair_id, detail): turn exported verdicts into ``duplicate``."""
        with self.transaction():
            self.db.executemany(
                "UPDATE verdicts SET verdict='duplicate', duplicate_of=?, detail=? WHERE run_id=? AND pair_id=?",
                [(kept, detail, run_id, pid) for pid, kept, detail in dupes],
            )

    def verdict_counts(self, run_id: int) -> dict[str, int]:
        rows = self.db.execute("SELECT verdict, count(*) FROM verdicts WHERE run_id=? GROUP BY verdict", (run_id,))
        return {r[0]: int(r[1]) for r in rows}

    def run_revisions(self, run_id: int) -> Iterator[tuple[RunPair, str, int, str]]:
        """This run's refined pairs with their first draft's answer, revisions and stop reason."""
        yield from self._run_pairs(run_id, None, refined=True)  # type: ignore[misc]

    def run_pairs(self, run_id: int, perspective: str | None = None) -> Iterator[RunPair]:
        yield from self._run_pairs(run_id, perspective, refined=False)  # type: ignore[misc]

    def _run_pairs(self, run_id: int, perspective: str | None, *, refined: bool) -> Iterator[object]:
        """One query, in export order, with each pair's verdict; ``refined`` joins its refinement record.

        Streams rows (never the whole run in memory), so export stays flat in memory.
        """
        sql = (
            "SELECT p.pair_id, p.chunk_id, p.doc_id, p.perspective, p.question, p.answer, p.request_key, p.model, "
            "p.extra, d.path, docs.title, v.verdict, v.judge, v.judge_method, v.judge_score, v.grounded"
            + (", draft.answer, rf.revisions, rf.stop_reason" if refined else "")
            + " FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
            "JOIN run_docs d ON d.run_id=r.run_id AND d.doc_id=p.doc_id JOIN documents docs ON docs.doc_id=p.doc_id "
            "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=p.pair_id "
            + ("JOIN refined rf ON rf.final_pair_id=p.pair_id JOIN pairs draft ON draft.pair_id=rf.draft_pair_id "
               if refined else "")
            + "WHERE r.run_id=?"
        )
        args: tuple[object, ...] = (run_id,)
        if perspective is not None:
            sql += " AND p.perspective=?"
            args += (perspective,)
        for row in self.db.execute(sql + " ORDER BY r.sort_key", args):
            extra = tuple((str(k), str(v)) for k, v in json.loads(row[8]))
            pair = QAPair(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], extra)
            notes: list[tuple[str, object]] = []
            if row[13] not in (None, "none"):
                notes += [("judge", json.loads(row[12])), ("judge_score", row[14])]
            if row[15] is not None:
                notes.append(("grounded", bool(row[15])))
            rp = RunPair(pair, row[9], row[10], row[11], tuple(notes))
            yield (rp, row[16], int(row[17]), row[18]) if refined else rp

    def refinement_rounds(self, final_pair_id: str) -> list[tuple[int, str, str, str, list[str]]]:
        """(round, question, answer, critique, problems) of one refined pair's critic rounds, in order."""
        rows = self.db.execute(
            "SELECT round, question, answer, critique, problems FROM refinements WHERE final_pair_id=? ORDER BY round",
            (final_pair_id,),
        ).fetchall()
        return [(int(r[0]), r[1], r[2], str(r[3]), [str(x) for x in json.loads(r[4])]) for r in rows]
