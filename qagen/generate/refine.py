"""Refinement: critic -> regenerator, until the critic says no revision is needed.

HelixNet's actor/critic/regenerator design with SelFee's stopping rule. For
each draft pair, round k (1..max_rounds): the critic judges the current
(question, answer) against the chunk; if it needs no revision (and k is past
``min_rounds``, SelFee's "revision enforce" mode) the loop stops; otherwise the
regenerator rewrites the pair from the critique. Every round is stored, with
the number of revisions and the reason the loop stopped.

Critic and regenerator calls use the same shared prefix (system text + chunk)
as generation, so prefix caches still apply, and they are cached like every
other request: changing the critic prompt re-runs refinement, not generation.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace

from qagen.core import ids
from qagen.core.records import RefineRound
from qagen.core.types import Chunk, Document, QAPair
from qagen.generate.caller import Caller
from qagen.prompting.prompts import PromptSet
from qagen.prompting.requests import build_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineSettings:
    max_rounds: int = 3
    min_rounds: int = 0

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError("--max-rounds must be at least 1")
        if not 0 <= self.min_rounds <= self.max_rounds:
            raise ValueError("--min-rounds must be between 0 and --max-rounds")


@dataclass(frozen=True)
class RefineOutcome:
    final: QAPair
    revisions: int
    stop: str  # no_revision_needed | max_rounds | critic_failed | regenerator_failed


@dataclass
class RefineStats:
    drafted: int = 0
    revisions: Counter[int] = field(default_factory=Counter)  # histogram: revisions per pair
    stops: Counter[str] = field(default_factory=Counter)

    def add(self, other: RefineStats) -> None:
        self.drafted += other.drafted
        self.revisions.update(other.revisions)
        self.stops.update(other.stops)

    def to_dict(self) -> dict[str, object]:
        return {"drafted": self.drafted, "revisions": dict(self.revisions), "stops": dict(self.stops)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> RefineStats:
        revisions = Counter({int(k): int(v) for k, v in d["revisions"].items()})  # type: ignore[attr-defined]
        return cls(int(d["drafted"]), revisions, Counter(d["stops"]))  # type: ignore[call-overload, arg-type]


# Outputs whose question is written by code from the prompt's ``questions:`` templates.
TEMPLATED_OUTPUTS = ("answers", "entities", "identity")


class Refiner:
    def __init__(self, caller: Caller, prompts: PromptSet, settings: RefineSettings):
        self.caller = caller
        self.critic = prompts.by_id("critic")
        self.regenerator = prompts.by_id("regenerator")
        self.prompts = prompts
        self.settings = settings
        self.stats = RefineStats()

    async def refine(self, draft: QAPair, doc: Document, chunk: Chunk) -> RefineOutcome:
        self.stats.drafted += 1
        question, answer = draft.question, draft.answer
        quote = dict(draft.extra).get("quote", "")
        # A question built by code from a template (about, summaries, metadata, entities, identity) stays as
        # built: the regenerator may improve the answer, not replace the question (it turned "Give a short
        # summary of ..." into "copy.copy").
        templated = self._templated(draft.perspective)
        rounds: list[RefineRound] = []
        stop = "max_rounds"
        for k in range(1, self.settings.max_rounds + 1):
            if k > 1:
                self.caller.progress.requests_added(1)
            v = await self._critique(doc, chunk, question, answer)
            if v is None:
                stop = "critic_failed"
                break
            forced = not v["needs_revision"] and k <= self.settings.min_rounds
            if not v["needs_revision"] and not forced:
                rounds.append(RefineRound(question, answer, v["critique"], list(v["problems"]), False))
                stop = "no_revision_needed"
                break
            self.caller.progress.requests_added(1)
            r = await self._regenerate(doc, chunk, question, answer, v["critique"], bool(quote))
            if r is None:
                rounds.append(RefineRound(question, answer, v["critique"], list(v["problems"]), v["needs_revision"], forced))
                stop = "regenerator_failed"
                break
            new_question = question if templated else r["question"].strip()
            rounds.append(
                RefineRound(question, answer, v["critique"], list(v["problems"]), v["needs_revision"], forced,
                            new_question, r["answer"].strip())
            )
            question, answer = new_question, r["answer"].strip()
            quote = r.get("quote", quote).strip()
        revisions = sum(1 for r in rounds if r.revised_answer is not None)
        # The refined pair gets its own id (even when unchanged): it records that the pair went through the loop.
        final = replace(
            draft,
            pair_id=ids.hash_str("refined", draft.pair_id, question, answer),
            question=question,
            answer=answer,
            extra=((("quote", quote),) if quote else ()) + (("revisions", str(revisions)), ("stop", stop)),
        )
        self.caller.store.add_refinement(final.pair_id, draft.pair_id, rounds, stop)
        self.stats.revisions[revisions] += 1
        self.stats.stops[stop] += 1
        return RefineOutcome(final, revisions, stop)

    def _templated(self, perspective: str) -> bool:
        try:
            return self.prompts.by_id(perspective).output in TEMPLATED_OUTPUTS
        except KeyError:
            return False

    async def _critique(self, doc: Document, chunk: Chunk, question: str, answer: str) -> dict[str, object] | None:
        request = build_request(
            self.prompts, self.critic, doc, chunk, self.caller.model_for("critic"), question=question, answer=answer
        )
        if self.critic.output == "text":  # HelixNet's critic writes free text
            reply = await self.caller.ask(request, chunk)
            if reply is None or not reply.content.strip():
                return None
            critique = reply.content.strip()
            return {"critique": critique[:2000], "problems": [], "needs_revision": needs_revision(critique)}
        verdict = await self.caller.ask_structured(self.critic, request, chunk)
        return None if verdict is None else verdict[0].model_dump()

    async def _regenerate(
        self, doc: Document, chunk: Chunk, question: str, answer: str, critique: object, quote: bool
    ) -> dict[str, str] | None:
        request = build_request(
            self.prompts, self.regenerator, doc, chunk, self.caller.model_for("regenerator"),
            quote=quote, question=question, answer=answer, critique=critique,
        )
        if self.regenerator.output == "text":  # HelixNet's regenerator writes the new answer only
            reply = await self.caller.ask(request, chunk)
            if reply is None or not reply.content.strip():
                return None
            return {"question": question, "answer": reply.content.strip()[: self.regenerator.max_answer_chars]}
        revised = await self.caller.ask_structured(self.regenerator, request, chunk, quote=quote)
        return None if revised is None else revised[0].model_dump()


_SATISFIED = re.compile(
    r"\b(no (further )?(revision|changes?|improvements?|corrections?)s? (is |are )?(needed|required|necessary)"
    r"|(is|looks) (correct|accurate|good) as (it is|is))\b",
    re.IGNORECASE,
)


def needs_revision(critique: str) -> bool:
    """Read a free-text critique: the loop stops only when it says nothing needs changing."""
    return _SATISFIED.search(critique) is None
