"""Closed-book answer scoring: SQuAD-style EM / F1 / contains, and paired bootstrap intervals.

Normalisation is SQuAD's official one: lowercase, drop ASCII punctuation, drop the
articles a/an/the, collapse whitespace. Every metric takes one prediction and the
gold answers of a question and keeps the best match (max over golds).

The bootstrap resamples question indices (the same resample for both models:
paired), so "tuned minus base" gets an interval that accounts for questions being
easier or harder for both. Pure functions: no model, no network, deterministic for
a seed.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_CHUNK = 4_000_000  # resample cells (resamples x questions) drawn at a time: bounds memory


def normalize_tokens(text: str) -> list[str]:
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def normalize_answer(text: str) -> str:
    """SQuAD's ``normalize_answer``: the normalised tokens joined by single spaces."""
    return " ".join(normalize_tokens(text))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1: overlap of the bags of normalised tokens."""
    pred, ref = normalize_tokens(prediction), normalize_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _golds(golds: str | Sequence[str]) -> Sequence[str]:
    return (golds,) if isinstance(golds, str) else golds  # a bare string is one gold, not its characters


def exact_match(prediction: str, golds: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals some normalised gold, else 0.0 (0.0 with no golds)."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _golds(golds)))


def f1(prediction: str, golds: str | Sequence[str]) -> float:
    """The best token F1 over the golds, 0..1 (0.0 with no golds)."""
    return max((token_f1(prediction, g) for g in _golds(golds)), default=0.0)


def contains(prediction: str, golds: str | Sequence[str]) -> float:
    """1.0 if some non-empty normalised gold occurs in the normalised prediction as a run of whole tokens.

    "paris" is in "it is in paris france" but not in "parisian"; a gold that normalises to
    nothing (``""``, ``"the"``) never matches.
    """
    pred = normalize_tokens(prediction)
    for gold in _golds(golds):
        g = normalize_tokens(gold)
        if g and any(pred[i:i + len(g)] == g for i in range(len(pred) - len(g) + 1)):
            return 1.0
    return 0.0


@dataclass(frozen=True)
class Scores:
    """EM, F1 and contains: of one answer (0/1, 0..1, 0/1) or the means over a group."""

    em: float
    f1: float
    contains: float


def score_answer(prediction: str, golds: str | Sequence[str]) -> Scores:
    return Scores(exact_match(prediction, golds), f1(prediction, golds), contains(prediction, golds))


# --- declines ------------------------------------------------------------------
_SOURCE = (r"(?:(?:the|these|this|those|my|your|provided|given|available|input)\s+)*(?:documents?|passages?|texts?|"
           r"sources?|articles?|context|materials?|records?|data|information|blocks?|excerpts?)"
           r"(?:\s+(?:provided|given|above|below|here))?")  # "the context provided does not contain ..."
_NEGATION = r"(?:do(?:es)?n'?t|do(?:es)?\s+not|did\s+not|didn'?t|never|cannot|can'?t|can\s+not)"
_SAY = (r"(?:say|state|mention|contain|specify|include|provide|give|tell|cover|discuss|indicate|address|reveal|"
        r"list|name|describe|report|answer)s?")
_DECLINES = re.compile("|".join((
    # "The documents don't say ...", "the passage does not explicitly mention ...", "It doesn't specify."
    rf"\b{_SOURCE}\s+{_NEGATION}\s+(?:\w+\s+){{0,2}}?{_SAY}\b",
    rf"\bit\s+{_NEGATION}\s+(?:\w+\s+)?(?:say|mention|specify|state)s?\b",
    # "The attendance is not mentioned", "it isn't stated"; "... is not given in the text" (a source named:
    # "he was not given a medal" answers)
    r"\b(?:is|are|was|were)(?:n'?t|\s+not)\s+(?:\w+\s+)?(?:mentioned|stated|specified)\b",
    (rf"\b(?:is|are|was|were)(?:n'?t|\s+not)\s+(?:\w+\s+)?(?:given|provided|included|covered|listed|named|"
     rf"described|reported|known)\s+(?:in|by|from)\s+{_SOURCE}\b"),
    r"\binformation\s+(?:is|was)(?:n'?t|\s+not)\s+(?:given|provided|available|included)\b",
    r"^\W*not\s+(?:mentioned|stated|specified)\b",  # "Not mentioned in the passage."
    # "There is no information about ...", "There's no mention of ..."
    r"\bthere(?:\s+is|'s|\s+are)\s+no\s+(?:\w+\s+)?(?:information|mention|details?|data|record|indication)\b",
    r"\bno\s+(?:information|mention|details?|data|record)\s+(?:is|are|was|were)\s+(?:given|provided|available)\b",
    # "I don't know", "I'm not sure", "I cannot find ..."
    r"\bi\s+(?:do\s+not|don'?t)\s+know\b",
    r"\bi(?:'m|\s+am)\s+not\s+sure\b",
    r"\bi\s+(?:cannot|can'?t|can\s+not|could\s+not|couldn'?t)\s+(?:find|tell|say|answer|determine|know)\b",
)), re.IGNORECASE)


def is_decline(answer: str) -> bool:
    """Whether an answer declines: it says the documents (passage, text, sources...) don't say, mention, contain or
    specify it, that it is not mentioned or stated, that there is no information, or "I don't know". A plain
    answer, or one saying what the documents *do* say, is not. Wording only, English only: it does not check that
    declining was right, and an answer that declines in other words ("Nobody recorded it") is missed."""
    text = answer.translate(_APOSTROPHES)
    return _DECLINES.search(text) is not None


_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})


# --- bootstrap -----------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap percentile interval over ``n`` questions.

    With no questions (``n == 0``) mean, low and high are all NaN (there is nothing to
    estimate; a zero would read as "no difference"): check :attr:`empty` before printing.
    """

    mean: float
    low: float
    high: float
    n: int

    @property
    def empty(self) -> bool:
        return self.n == 0

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (a difference that stands out)."""
        return not self.empty and (self.low > 0 or self.high < 0)


def _as_vector(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a flat sequence of numbers, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: NaN or infinite values")
    return arr


def _bootstrap(values: np.ndarray, n: int, seed: int, level: float) -> Interval:
    if n < 1:
        raise ValueError(f"n must be at least 1 resample, got {n}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (exclusive), got {level}")
    m = len(values)
    if m == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if (values == values[0]).all():  # every resample has the same mean: skip the float noise of averaging
        return Interval(float(values[0]), float(values[0]), float(values[0]), m)
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    step = max(1, _CHUNK // m)
    for start in range(0, n, step):
        k = min(step, n - start)
        means[start:start + k] = values[rng.integers(0, m, size=(k, m))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(mean, float(low), float(high), m)


def mean_interval(values: Sequence[float], *, n: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """The mean of ``values`` and its bootstrap percentile interval (``n`` resamples of the indices)."""
    return _bootstrap(_as_vector(values, "values"), n, seed, level)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n: int = 2000, seed: int = 0,
                     level: float = 0.95) -> Interval:
    """Mean of ``a - b`` with a paired percentile bootstrap interval.

    ``a[i]`` and ``b[i]`` are two scores of question ``i``; each resample draws question
    indices with replacement and uses the same draw for both. Different lengths raise
    ValueError; empty input gives ``Interval(nan, nan, nan, 0)``.
    """
    va, vb = _as_vector(a, "a"), _as_vector(b, "b")
    if len(va) != len(vb):
        raise ValueError(f"paired scores need equal lengths, got {len(va)} and {len(vb)}")
    return _bootstrap(va - vb, n, seed, level)


# --- aggregation -----------------------------------------------------------------
class PairedRow(Protocol):
    """What :func:`score_table` needs of a row: the base and tuned scores of one question."""

    @property
    def base(self) -> Scores: ...

    @property
    def tuned(self) -> Scores: ...


R = TypeVar("R", bound=PairedRow)


@dataclass(frozen=True)
class ScoredQuestion:
    """A ready-made row: one question's scores for both models, with labels to group by."""

    base: Scores
    tuned: Scores
    source: str = ""
    doc_id: str = ""
    kind: str = ""


@dataclass(frozen=True)
class GroupScore:
    """One group of questions: the count, the mean scores per model, tuned-minus-base intervals."""

    count: int
    base: Scores
    tuned: Scores
    delta_em: Interval
    delta_f1: Interval
    delta_contains: Interval

    def to_dict(self) -> dict[str, float | int]:
        """Flat, JSON-ready numbers (NaN for the intervals of an empty group)."""
        out: dict[str, float | int] = {"count": self.count}
        for model, s in (("base", self.base), ("tuned", self.tuned)):
            out.update({f"{model}_em": s.em, f"{model}_f1": s.f1, f"{model}_contains": s.contains})
        for name, iv in (("em", self.delta_em), ("f1", self.delta_f1), ("contains", self.delta_contains)):
            out.update({f"delta_{name}": iv.mean, f"delta_{name}_low": iv.low, f"delta_{name}_high": iv.high})
        return out


def _means(scores: Sequence[Scores]) -> Scores:
    if not scores:
        return Scores(math.nan, math.nan, math.nan)
    k = len(scores)
    return Scores(sum(s.em for s in scores) / k, sum(s.f1 for s in scores) / k,
                  sum(s.contains for s in scores) / k)


def summarize(rows: Sequence[PairedRow], *, n: int = 2000, seed: int = 0, level: float = 0.95) -> GroupScore:
    """All ``rows`` as one group (mean scores are NaN for no rows)."""
    base, tuned = [r.base for r in rows], [r.tuned for r in rows]

    def delta(metric: Callable[[Scores], float]) -> Interval:
        return paired_bootstrap([metric(t) for t in tuned], [metric(b) for b in base], n=n, seed=seed, level=level)

    return GroupScore(len(rows), _means(base), _means(tuned), delta(lambda s: s.em), delta(lambda s: s.f1),
                      delta(lambda s: s.contains))


def score_table(rows: Sequence[R], group_key: Callable[[R], str], *, n: int = 2000, seed: int = 0,
                level: float = 0.95) -> dict[str, GroupScore]:
    """Rows grouped by ``group_key(row)`` (e.g. ``lambda r: r.kind``), one :class:`GroupScore` each.

    Groups come in sorted key order; every group's bootstrap uses the same ``seed``.
    """
    groups: dict[str, list[R]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    return {key: summarize(groups[key], n=n, seed=seed, level=level) for key in sorted(groups)}
