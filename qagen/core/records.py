"""Record types: what the stages decide about pairs, kept with the core types so every layer can name them.

``RefineRound`` (one critic verdict and its revision), ``Judgement`` (the
judge's scores), ``Verdict`` (what curation decided) and ``RunPair`` (a pair
as a run exported it) cross module boundaries; they are plain frozen
dataclasses, never ``dict[str, Any]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qagen.core.types import QAPair


@dataclass(frozen=True)
class RefineRound:
    """One round of the loop on (question, answer): the critique (the failed checks' evidence, or the model critic's),
    and the revision it led to, if any, with whether the checks accepted it."""

    question: str
    answer: str
    critique: str
    problems: list[str]
    needs_revision: bool
    forced: bool = False  # revised although nothing was flagged (--min-rounds)
    revised_question: str | None = None
    revised_answer: str | None = None
    accepted: bool = True  # the revision passed every check (a rejected one is recorded, and not used)
    failed: list[str] = field(default_factory=list)  # the checks a rejected revision failed


@dataclass(frozen=True)
class Verdict:
    """What happened to one pair of a run after generation, and why."""

    pair_id: str
    verdict: str  # exported | judge_rejected | judge_failed | ungrounded | duplicate | contaminated | a filter's
    detail: str = ""
    judge: dict[str, float] = field(default_factory=dict)
    judge_method: str = "none"  # logprobs | parsed | mixed | none
    judge_score: float | None = None
    grounded: bool | None = None  # None: not checked (summaries, code-built pairs)
    grounding: float | None = None  # 0-100
    quote: str = ""
    duplicate_of: str | None = None


@dataclass(frozen=True)
class RunPair:
    pair: QAPair
    path: str  # source path of the document in this run
    title: str
    verdict: str | None = None  # from ``verdicts`` (None: not curated, e.g. an interrupted run)
    notes: tuple[tuple[str, object], ...] = ()  # judge scores and grounding flag, for the export

    @property
    def exported(self) -> bool:
        return self.verdict in (None, "exported")


@dataclass(frozen=True)
class Judgement:
    scores: dict[str, float]  # check -> P(yes)
    methods: tuple[str, ...]  # how each score was read: logprobs | parsed
    missing: tuple[str, ...]  # checks whose request failed (the pair is not exported; retried next run)

    @property
    def score(self) -> float | None:
        return sum(self.scores.values()) / len(self.scores) if self.scores and not self.missing else None

    @property
    def method(self) -> str:
        kinds = set(self.methods)
        return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")


@dataclass(frozen=True)
class Review:
    """A human's decision on one pair (``qagen review``), keyed by the pair's content (``review_key``)."""

    key: str
    pair_id: str
    decision: str  # accept | reject | "" (edited, not yet decided: an edit accepts unless rejected)
    question: str | None  # the human's edit (None: not edited)
    answer: str | None
    original_question: str
    original_answer: str
    updated_at: str = ""

    @property
    def edited(self) -> bool:
        return self.question is not None or self.answer is not None


# The deterministic filters' verdicts (qagen/curate/filters.py); "ungrounded" is also the quote check's.
FILTER_VERDICTS = ("repetitive", "too_short", "echo", "truncated", "template", "not_a_sentence", "ungrounded")
# The fact ledger's question checks (qagen/generate/ledger.py), settled as verdicts by curation.
LEDGER_VERDICTS = ("leak", "not_standalone", "not_a_question", "off_target", "surplus")
# Which gate gives each verdict that throws a pair away: the summary and report.html say so.
VERDICT_SOURCES = {
    "judge_rejected": "judge", "judge_failed": "judge", "ungrounded": "grounding check or filter",
    "duplicate": "dedup", "contaminated": "decontamination",
    **{v: "filter" for v in FILTER_VERDICTS if v != "ungrounded"},
    **{v: "ledger check" for v in LEDGER_VERDICTS},
}
