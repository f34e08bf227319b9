"""The human-rated pairs as a regression set: what a run's own checks do to them.

A decision is keyed by the pair's content (:func:`qagen.store.reviews.review_key`), so it finds its pair in any
run that writes the same text. Replaying a prompt or filter change is then: copy the output folder, run
``qagen ingest`` on the copy with the change (the cache answers every request that did not change), and read the
new run's *own* verdicts (no human override) against the ratings:

- ``lost``: pairs the human accepted that the run drops (``dropped``, with the check) or no longer writes
  (``absent``: a changed prompt wrote other text);
- ``kept``: pairs the human rejected (or had to edit) that the run exports as they were.

``benchmarks/review_replay.py`` prints it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from qagen.store import Store
from qagen.store.reviews import review_key


@dataclass
class Replay:
    run_id: int
    accepted: int = 0  # rated good: accepted, not edited
    rejected: int = 0  # rated bad: rejected, or edited (the text as generated was not kept)
    lost_dropped: list[tuple[str, str]] = field(default_factory=list)  # (question, the check that dropped it)
    lost_absent: list[str] = field(default_factory=list)  # questions no longer generated
    kept_rejected: list[str] = field(default_factory=list)  # questions exported although the human rejected them

    @property
    def lost(self) -> int:
        return len(self.lost_dropped) + len(self.lost_absent)

    def by_check(self) -> dict[str, int]:
        return dict(Counter(check for _, check in self.lost_dropped).most_common())

    def to_dict(self) -> dict[str, object]:
        return {"run_id": self.run_id, "accepted": self.accepted, "rejected": self.rejected, "lost": self.lost,
                "lost_dropped": len(self.lost_dropped), "lost_absent": len(self.lost_absent),
                "lost_by_check": self.by_check(), "kept_rejected": len(self.kept_rejected),
                "examples": {"lost": [q for q, _ in self.lost_dropped[:5]] + self.lost_absent[:5],
                             "kept_rejected": self.kept_rejected[:5]}}


def replay(store: Store, run_id: int) -> Replay:
    """The run's own verdicts on every human-rated pair (see the module's docstring)."""
    verdicts = {review_key(rp.pair.chunk_id, rp.pair.question, rp.pair.answer): rp.verdict or "exported"
                for rp in store.run_pairs(run_id)}
    result = Replay(run_id)
    for review in store.reviews().values():
        good = review.decision == "accept" and not review.edited
        bad = review.decision == "reject" or review.edited
        verdict = verdicts.get(review.key)
        if good:
            result.accepted += 1
            if verdict is None:
                result.lost_absent.append(review.original_question)
            elif verdict != "exported":
                result.lost_dropped.append((review.original_question, verdict))
        elif bad:
            result.rejected += 1
            if verdict == "exported":
                result.kept_rejected.append(review.original_question)
    return result
