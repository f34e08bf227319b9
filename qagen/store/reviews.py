"""Human review (``qagen review``, schema 8): a decision per pair, keyed by the pair's content, and how export
applies it.

A decision is keyed by :func:`review_key` (the chunk, the question and the answer as generated), not by the
request that made the pair, so it survives a re-run, a changed setting or an edited prompt that writes the same
pair again. :meth:`ReviewQueries.reviewed_run_pairs` is a run's pairs with the decisions applied, the one place
export (``qagen/output/export.py``) learns of them:

- ``reject``: never exported (verdict ``human_rejected``), whatever the checks said;
- ``accept``: exported even when a check dropped it (a human overrides a heuristic; ``overrode`` names the check);
- an edit: exported in its edited form, marked ``edited: human`` with the original beside it (an edit accepts
  the pair unless it is also rejected).

Held-out exam pairs (verdicts ``exam*``) never become training rows, accepted or not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import xxhash

from qagen.core import ids
from qagen.core.records import Review, RunPair
from qagen.store.db import utc_now
from qagen.store.pairs import PairQueries

HUMAN_REJECTED = "human_rejected"
DECISIONS = ("accept", "reject", "")


def review_key(chunk_id: str, question: str, answer: str) -> str:
    """A pair's content key: the same chunk, question and answer get the same key in any run."""
    return ids.hash_str("review", chunk_id, question, answer)


def never_trained(verdict: str | None) -> bool:
    """The held-out exam's pairs: a review never turns them into training rows."""
    return verdict is not None and verdict.startswith("exam")


def apply_review(rp: RunPair, review: Review | None) -> RunPair:
    """The pair as export should see it once the human's decision is applied (``rp`` itself when there is none)."""
    if review is None:
        return rp
    if review.decision == "reject":
        return replace(rp, verdict=HUMAN_REJECTED, notes=(*rp.notes, ("review", "rejected")))
    if not (review.decision == "accept" or review.edited) or never_trained(rp.verdict):
        return rp
    notes = [*rp.notes, ("review", "accepted")]
    if not rp.exported:
        notes.append(("overrode", rp.verdict))
    pair = rp.pair
    if review.edited:
        pair = replace(pair, question=review.question if review.question is not None else pair.question,
                       answer=review.answer if review.answer is not None else pair.answer)
        notes += [("edited", "human"),
                  ("original", {"question": review.original_question, "answer": review.original_answer})]
    return replace(rp, pair=pair, verdict="exported", notes=tuple(notes))


class ReviewQueries(PairQueries):

    def put_review(self, key: str, pair_id: str, original_question: str, original_answer: str, *,
                   decision: str | None = None, question: str | None = None, answer: str | None = None) -> Review:
        """Set a pair's decision (``decision``) and/or its edit (``question``/``answer``); returns the new row.

        An edit equal to the original is no edit (the column goes back to NULL)."""
        if decision is not None and decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
        old = self.review(key)
        new = Review(key, pair_id, old.decision if old else "", old.question if old else None,
                     old.answer if old else None, original_question, original_answer, utc_now())
        if decision is not None:
            new = replace(new, decision=decision)
        if question is not None:
            new = replace(new, question=None if question == original_question else question)
        if answer is not None:
            new = replace(new, answer=None if answer == original_answer else answer)
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO reviews VALUES(?,?,?,?,?,?,?,?)",
                (new.key, new.pair_id, new.decision, new.question, new.answer, new.original_question,
                 new.original_answer, new.updated_at))
        self.flush()  # a human's decision is durable at once
        return new

    def review(self, key: str) -> Review | None:
        row = self.db.execute("SELECT * FROM reviews WHERE review_key=?", (key,)).fetchone()
        return None if row is None else Review(*row)

    def reviews(self) -> dict[str, Review]:
        """Every decision, by content key (a human rates hundreds, not millions: held in memory)."""
        return {row[0]: Review(*row) for row in self.db.execute("SELECT * FROM reviews ORDER BY review_key")}

    def reviews_digest(self) -> str:
        """A hash of every decision and edit ("" when there is none): part of the ingest's unchanged check, so a
        new decision makes the next `qagen ingest` write the dataset again."""
        h, any_row = xxhash.xxh3_128(), False
        for row in self.db.execute("SELECT review_key, decision, question, answer FROM reviews ORDER BY review_key"):
            h.update(json.dumps(row).encode())
            any_row = True
        return h.hexdigest() if any_row else ""

    def reviewed_run_pairs(self, run_id: int) -> Iterator[RunPair]:
        """``run_pairs`` with the human's decisions applied (streamed, in export order)."""
        decided = self.reviews()
        for rp in self.run_pairs(run_id):
            p = rp.pair
            yield apply_review(rp, decided.get(review_key(p.chunk_id, p.question, p.answer))) if decided else rp

    def reviewed_revisions(self, run_id: int) -> Iterator[tuple[RunPair, str, int, str]]:
        """``run_revisions`` with the human's decisions applied: a rejected final pair is not exported (so it is
        no DPO "chosen" either), an edited one is chosen in its edited form."""
        decided = self.reviews()
        for rp, draft, revisions, stop in self.run_revisions(run_id):
            p = rp.pair
            review = decided.get(review_key(p.chunk_id, p.question, p.answer)) if decided else None
            yield apply_review(rp, review), draft, revisions, stop

    def review_counts(self, run_id: int) -> dict[str, int]:
        """What the decisions did to this run's export: rejected, accepted, edited, and ``overrides`` (accepted
        pairs a check had dropped)."""
        counts = {"accepted": 0, "rejected": 0, "edited": 0, "overrides": 0}
        if not self.reviews():
            return counts
        for rp in self.reviewed_run_pairs(run_id):
            notes = dict(rp.notes)
            if notes.get("review") == "rejected":
                counts["rejected"] += 1
            elif notes.get("review") == "accepted":
                counts["accepted"] += 1
                counts["edited"] += notes.get("edited") == "human"
                counts["overrides"] += "overrode" in notes
        return counts

    def review_preferences(self, run_id: int) -> list[tuple[RunPair, str]]:
        """Preference pairs from the review, as (chosen pair, rejected answer):

        - an edited answer is chosen over the answer it replaced;
        - a rejected pair's answer loses to an accepted or edited sibling's: the same chunk, the same question.
        """
        decided = self.reviews()
        if not decided:
            return []
        chosen: dict[tuple[str, str], RunPair] = {}
        rejected: list[RunPair] = []
        found: list[tuple[RunPair, str]] = []
        for rp in self.run_pairs(run_id):
            p = rp.pair
            review = decided.get(review_key(p.chunk_id, p.question, p.answer))
            if review is None:
                continue
            after = apply_review(rp, review)
            if review.decision == "reject":
                rejected.append(rp)
            elif after.verdict == "exported" and dict(after.notes).get("review") == "accepted":
                chosen.setdefault((p.chunk_id, _norm(p.question)), after)
                if review.answer is not None and review.answer.strip() != p.answer.strip():
                    found.append((after, p.answer))
        for rp in rejected:
            sibling = chosen.get((rp.pair.chunk_id, _norm(rp.pair.question)))
            if sibling is not None and sibling.pair.answer.strip() != rp.pair.answer.strip():
                found.append((sibling, rp.pair.answer))
        return found

    def review_rows(self, run_id: int) -> Iterator[tuple[object, ...]]:
        """The review page's rows, in export order: (pair_id, chunk_id, doc_id, perspective, question, answer,
        extra, path, title, chunk idx, section, verdict, detail, judge_score, grounded, quote)."""
        yield from self.db.execute(
            "SELECT p.pair_id, p.chunk_id, p.doc_id, p.perspective, p.question, p.answer, p.extra, d.path, "
            "docs.title, c.idx, c.section, v.verdict, v.detail, v.judge_score, v.grounded, v.quote "
            "FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
            "JOIN run_docs d ON d.run_id=r.run_id AND d.doc_id=p.doc_id JOIN documents docs ON docs.doc_id=p.doc_id "
            "LEFT JOIN chunks c ON c.chunk_id=p.chunk_id "
            "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=p.pair_id WHERE r.run_id=? ORDER BY r.sort_key",
            (run_id,))

    def fact_span(self, fact_id: str) -> tuple[str, int] | None:
        """A ledger fact's answer span and its offset in the chunk (the page highlights it)."""
        row = self.db.execute("SELECT span, start FROM facts WHERE fact_id=?", (fact_id,)).fetchone()
        return None if row is None else (row[0], int(row[1]))

    def add_calibration(self, run_id: int, check: str, threshold: float, metric: str, value: float,
                        rated: int) -> None:
        with self.transaction():
            self.db.execute("INSERT INTO calibrations(run_id, check_name, threshold, metric, value, rated, "
                            "created_at) VALUES(?,?,?,?,?,?,?)",
                            (run_id, check, threshold, metric, value, rated, utc_now()))
        self.flush()


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())
