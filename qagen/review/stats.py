"""The judge meets the human: how each check's verdicts agree with a human's ratings, and a judge threshold set
from them.

Over the *rated* pairs of a run (a decision, or an edit), the human's label is "bad" for a rejected pair and for
an edited one (the text as generated was not good enough to keep as it was), "good" for an accepted one. Each
check is a classifier of "drop this pair", scored against "the human says bad":

- ``judge``: the judge's mean P(yes) under the run's ``judge_threshold``, over the rated pairs it scored;
- ``grounding``: the grounding check failed (quote or span not found), over the rated pairs it checked;
- one row per other verdict (each filter, the ledger's checks, dedup, decontamination): the verdict the run stored
  for the pair (a pair keeps its *first* verdict, so a check seen after another's is not counted);
- ``any check``: the pair was not exported.

precision = TP / (TP + FP) (of the pairs the check dropped, the share the human also rejected);
recall = TP / (TP + FN) (of the pairs the human rejected, the share the check dropped). None where undefined.

``--calibrate`` picks the judge threshold that maximises *balanced accuracy* against the human (the mean of the
share of human-accepted pairs the judge passes and the share of human-rejected pairs it drops), with a score
``>= threshold`` passing, as curation does. Balanced accuracy, not plain accuracy or F1: rejections are usually
few, and plain accuracy then rewards a threshold of 0 (pass everything), while F1 on rejects ignores the good
pairs a strict threshold throws away. Ties go to the threshold nearest the current one (the smallest change).
It needs at least :data:`MIN_RATINGS` judged, rated pairs with both labels present.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from qagen.core.errors import InputError
from qagen.review.items import Item, load
from qagen.store import Store

MIN_RATINGS = 30


@dataclass(frozen=True)
class Agreement:
    """One check against the human over the rated pairs it saw."""

    check: str
    rated: int
    tp: int  # the check dropped it, the human rejected it
    fp: int  # dropped, the human accepted it
    fn: int  # kept, the human rejected it
    tn: int  # kept, accepted

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def to_dict(self) -> dict[str, object]:
        return {"check": self.check, "rated": self.rated, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "tn": self.tn, "precision": self.precision, "recall": self.recall}


@dataclass(frozen=True)
class Calibration:
    threshold: float
    balanced_accuracy: float
    current: float
    current_balanced_accuracy: float
    rated: int


def rated(store: Store, run_id: int) -> list[tuple[Item, bool]]:
    """(pair, the human says bad) for every rated pair of the run."""
    found = []
    for doc in load(store, run_id):
        for item in doc.items:
            edited = item.edited_question is not None or item.edited_answer is not None
            if item.decision or edited:
                found.append((item, item.decision == "reject" or edited))
    return found


def judge_threshold(store: Store, run_id: int) -> float:
    record = store.run_record(run_id)
    value = record.settings.get("judge_threshold", 0.5) if record else 0.5
    return float(value) if isinstance(value, (int, float, str)) else 0.5


def _score(check: str, pairs: list[tuple[bool, bool]]) -> Agreement:
    """pairs: (the check dropped it, the human says bad)."""
    tp = sum(d and b for d, b in pairs)
    fp = sum(d and not b for d, b in pairs)
    fn = sum(not d and b for d, b in pairs)
    return Agreement(check, len(pairs), tp, fp, fn, len(pairs) - tp - fp - fn)


def agreement(store: Store, run_id: int, labelled: list[tuple[Item, bool]] | None = None) -> list[Agreement]:
    """One row per check (judge, grounding, each verdict seen on a rated pair, any check), in that order
    (``labelled``: :func:`rated`'s answer, when the caller has it)."""
    labelled = rated(store, run_id) if labelled is None else labelled
    threshold = judge_threshold(store, run_id)
    rows = []
    judged = [(i.judge_score < threshold, bad) for i, bad in labelled if i.judge_score is not None]
    if judged:
        rows.append(_score("judge", judged))
    grounded = [(not i.grounded, bad) for i, bad in labelled if i.grounded is not None]
    if grounded:
        rows.append(_score("grounding", grounded))
    verdicts = sorted({i.verdict for i, _ in labelled} - {"exported", "judge_rejected"})
    for verdict in verdicts:
        rows.append(_score(verdict, [(i.verdict == verdict, bad) for i, bad in labelled]))
    if labelled:
        rows.append(_score("any check", [(i.verdict != "exported", bad) for i, bad in labelled]))
    return rows


def _balanced(threshold: float, scored: list[tuple[float, bool]]) -> float:
    good = [s for s, bad in scored if not bad]
    bad = [s for s, b in scored if b]
    passed_good = sum(s >= threshold for s in good) / len(good)
    dropped_bad = sum(s < threshold for s in bad) / len(bad)
    return (passed_good + dropped_bad) / 2


def calibrate(store: Store, run_id: int, *, minimum: int = MIN_RATINGS) -> Calibration:
    """The judge threshold that best agrees with the human (see the module's docstring); InputError when the
    ratings are too few or all of one kind."""
    scored = [(float(i.judge_score), bad) for i, bad in rated(store, run_id) if i.judge_score is not None]
    bad = sum(b for _, b in scored)
    if len(scored) < minimum:
        raise InputError(f"--calibrate needs at least {minimum} rated pairs the judge scored; this run has "
                         f"{len(scored)}: rate {minimum - len(scored)} more in `qagen review`")
    if bad == 0 or bad == len(scored):
        raise InputError("--calibrate needs both accepted and rejected pairs among the judged ones; the ratings "
                         f"are all {'rejections' if bad else 'acceptances'}")
    current = judge_threshold(store, run_id)
    scores = sorted({s for s, _ in scored})
    candidates = {0.0, *(round((a + b) / 2, 4) for a, b in itertools.pairwise(scores))}
    if scores[-1] < 1.0:
        candidates.add(round(min(1.0, (scores[-1] + 1.0) / 2), 4))
    best = max(sorted(candidates), key=lambda t: (round(_balanced(t, scored), 9), -abs(t - current)))
    result = Calibration(best, round(_balanced(best, scored), 4), current, round(_balanced(current, scored), 4),
                         len(scored))
    store.add_calibration(run_id, "judge", best, "balanced_accuracy", result.balanced_accuracy, len(scored))
    return result
