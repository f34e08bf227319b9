"""Refinement that can only help: detect with checks, critique with evidence, repair, and keep a repair only when
it passes every check.

HelixNet's actor -> critic -> regenerator, with SelFee's "until no revision is needed" decided by checks rather
than by the critic's say-so. A prompted critic with no outside check makes answers worse (arXiv 2310.01798; here, a
0.5B critic asked to revise 233 of 233 pairs and its revisions cost held-out F1, benchmarks/RESULTS.md, "Knowledge: the critic loop"), so the
loop flags first, critiques only what is flagged, and accepts a revision only when an outside check says it is not
worse (DCR, arXiv 2407.02397):

1. **Detect.** The deterministic checks are the first critic (``Checks``, composed by the pipeline): grounding,
   the filters (echo, too short, cut off, repetition, template leaks), the fact ledger's span and leak checks. A
   pair that passes them all goes through unchanged (``--refine repair``). With ``--refine full`` the model critic
   also reviews it; its "needs revision" counts as a flag.
2. **Critique.** A flagged pair's critique names each failed check and shows the evidence ("the answer is not
   supported by the passage; the passage says: ...", "the answer is cut off at ...").
3. **Repair, then verify.** The regenerator rewrites the pair from that critique. The revision is accepted only if
   it passes every check (those the draft failed and those it passed). A rejected revision is recorded with the
   checks it failed, and the best earlier version stands. Rounds go on while a check still fails (or, in full mode,
   the critic still asks), up to ``max_rounds``; ``min_rounds`` forces rounds even when nothing is flagged.
4. **A critic that always says "revise" is broken.** If the model critic flags more than ``CRITIC_LIMIT`` of the
   first ``CRITIC_PROBE`` pairs it reviews, it is no longer asked; the summary and the report say so.

A question written by code from a template (about, metadata, identity) keeps its question, and a fact ledger pair
keeps its answer (the span): the regenerator may change only the other side. Every round is stored, accepted or
not; exported pairs carry ``revisions`` (accepted repairs) and ``stop``; accepted repairs are the DPO pairs.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from qagen.core import ids
from qagen.core.records import RefineRound
from qagen.core.types import Chunk, Document, QAPair
from qagen.generate.caller import Caller
from qagen.prompting.prompts import PromptSet
from qagen.prompting.requests import build_request

log = logging.getLogger(__name__)

MODES = ("repair", "full")
CRITIC_PROBE = 50  # the model critic's first reviews, after which an always-revise critic is switched off
CRITIC_LIMIT = 0.9  # the share of those it may flag


@dataclass(frozen=True)
class Flag:
    """One failed check of a pair: its name and a critique that shows the evidence."""

    check: str
    critique: str


# (pair, document, chunk) -> the checks it fails; composed by the pipeline (qagen/pipeline/assemble.py)
Checks = Callable[[QAPair, Document, Chunk], list[Flag]]


def no_checks(pair: QAPair, doc: Document, chunk: Chunk) -> list[Flag]:
    return []


@dataclass(frozen=True)
class RefineSettings:
    max_rounds: int = 3
    min_rounds: int = 0
    mode: str = "repair"  # repair: checks only; full: the model critic reviews pairs that pass them too

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError("--max-rounds must be at least 1")
        if not 0 <= self.min_rounds <= self.max_rounds:
            raise ValueError("--min-rounds must be between 0 and --max-rounds")
        if self.mode not in MODES:
            raise ValueError(f"--refine must be one of off, {', '.join(MODES)}")


@dataclass(frozen=True)
class RefineOutcome:
    final: QAPair
    revisions: int  # accepted repairs
    stop: str  # passed_checks | repaired | no_revision_needed | max_rounds | critic_failed | regenerator_failed


@dataclass
class RefineStats:
    drafted: int = 0
    revisions: Counter[int] = field(default_factory=Counter)  # histogram: accepted repairs per pair
    stops: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)  # check -> pairs it flagged (the critic's flags too)
    tried: int = 0  # revisions the regenerator wrote
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # check a rejected revision failed -> revisions
    rounds: Counter[int] = field(default_factory=Counter)  # histogram: regenerator rounds per pair
    critic_reviews: int = 0  # pairs the model critic reviewed (their first review)
    critic_flags: int = 0  # of those, the pairs it asked to revise
    critic_off: str = ""  # why the model critic was switched off, if it was

    def add(self, other: RefineStats) -> None:
        self.drafted += other.drafted
        self.tried += other.tried
        self.accepted += other.accepted
        self.critic_reviews += other.critic_reviews
        self.critic_flags += other.critic_flags
        self.critic_off = self.critic_off or other.critic_off
        for name in ("revisions", "stops", "flagged", "rejected", "rounds"):
            getattr(self, name).update(getattr(other, name))

    @property
    def critic_flag_rate(self) -> float | None:
        return round(self.critic_flags / self.critic_reviews, 3) if self.critic_reviews else None


# Outputs whose question is written by code from the prompt's ``questions:`` templates.
TEMPLATED_OUTPUTS = ("answers", "entities", "identity")
# Outputs whose answer is fixed by code (the fact ledger's span): only the question may change.
FIXED_ANSWER_OUTPUTS = ("fact_questions",)


class Refiner:
    def __init__(self, caller: Caller, prompts: PromptSet, settings: RefineSettings, checks: Checks | None = None):
        self.caller = caller
        self.critic = prompts.by_id("critic")
        self.regenerator = prompts.by_id("regenerator")
        self.prompts = prompts
        self.settings = settings
        self.checks = checks or no_checks
        self.stats = RefineStats()

    @property
    def critic_on(self) -> bool:
        return self.settings.mode == "full" and not self.stats.critic_off

    async def refine(self, draft: QAPair, doc: Document, chunk: Chunk) -> RefineOutcome:
        self.stats.drafted += 1
        current = draft
        fixed_question, fixed_answer = self._fixed(draft.perspective)
        rounds: list[RefineRound] = []
        flags = self.checks(draft, doc, chunk)
        self.stats.flagged.update({f.check for f in flags})
        stop, accepted, tries = "passed_checks", 0, 0
        for k in range(1, self.settings.max_rounds + 1):
            problems: list[str] = [f.check for f in flags]
            review: dict[str, object] | None = None
            if not flags and self.critic_on:
                self.caller.progress.requests_added(1)
                review = await self._critique(doc, chunk, current.question, current.answer)
                if review is None:
                    stop = "critic_failed"
                    break
                if k == 1:  # the first review of each pair counts toward the critic's flag rate
                    self._count_critic(bool(review["needs_revision"]))
                problems = [str(p) for p in review["problems"]]  # type: ignore[union-attr]
                if review["needs_revision"]:
                    flags = [Flag("critic", str(review["critique"]))]
                    problems = ["critic", *problems]
                    self.stats.flagged["critic"] += 1
            forced = not flags and k <= self.settings.min_rounds
            if not flags and not forced:
                if review is not None:  # the critic has seen the pair as it stands and wants nothing changed
                    rounds.append(RefineRound(current.question, current.answer, str(review["critique"]), problems,
                                              False))
                    stop = "no_revision_needed"
                elif accepted:
                    stop = "repaired"
                break
            critique = "\n".join(f.critique for f in flags) or "Improve this pair: make it more specific and complete."
            if review is not None and not flags:
                critique = str(review["critique"]) or critique
            self.caller.progress.requests_added(1)
            tries += 1
            r = await self._regenerate(doc, chunk, current, critique, k)
            if r is None:
                rounds.append(RefineRound(current.question, current.answer, critique, problems, bool(flags), forced))
                stop = "regenerator_failed"
                break
            candidate = replace(current,
                                question=current.question if fixed_question else r["question"].strip(),
                                answer=current.answer if fixed_answer else r["answer"].strip(),
                                extra=_with_quote(current.extra, r.get("quote", "")))
            failed = self.checks(candidate, doc, chunk)
            self.stats.tried += 1
            ok = not failed and (candidate.question, candidate.answer) != (current.question, current.answer)
            rounds.append(RefineRound(current.question, current.answer, critique, problems, bool(flags), forced,
                                      candidate.question, candidate.answer, accepted=ok,
                                      failed=[f.check for f in failed]))
            if ok:
                self.stats.accepted += 1
                accepted += 1
                current, flags = candidate, []
            else:
                self.stats.rejected.update({f.check for f in failed} or {"unchanged"})
        else:  # out of rounds: a check (or, in full mode, the critic) may still want more
            stop = "max_rounds" if flags or self.critic_on else "repaired"
        self.stats.rounds[tries] += 1
        final = current
        if rounds:  # the pair went through the loop: the result gets its own id, and the rounds are stored
            final = replace(current, pair_id=ids.hash_str("refined", draft.pair_id, current.question, current.answer),
                            extra=tuple((k, v) for k, v in current.extra if k not in ("revisions", "stop"))
                            + (("revisions", str(accepted)), ("stop", stop)))
            self.caller.store.add_refinement(final.pair_id, draft.pair_id, rounds, stop)
        self.stats.revisions[accepted] += 1
        self.stats.stops[stop] += 1
        return RefineOutcome(final, accepted, stop)

    def _count_critic(self, flagged: bool) -> None:
        self.stats.critic_reviews += 1
        self.stats.critic_flags += flagged
        s = self.stats
        if s.critic_reviews == CRITIC_PROBE and s.critic_flags > CRITIC_LIMIT * CRITIC_PROBE:
            s.critic_off = (f"the model critic asked to revise {s.critic_flags} of the first {CRITIC_PROBE} pairs it "
                            f"reviewed (over {CRITIC_LIMIT:.0%}): it is no longer asked, and the checks alone decide")
            log.warning(s.critic_off)

    def _fixed(self, perspective: str) -> tuple[bool, bool]:
        """(question fixed, answer fixed) for a perspective's pairs."""
        try:
            output = self.prompts.by_id(perspective).output
        except KeyError:
            return False, False
        return output in TEMPLATED_OUTPUTS, output in FIXED_ANSWER_OUTPUTS

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

    async def _regenerate(self, doc: Document, chunk: Chunk, pair: QAPair, critique: str,
                          round_: int) -> dict[str, str] | None:
        quote = bool(dict(pair.extra).get("quote"))
        # round 2 on asks with another seed: the same request again would only replay the rejected revision
        request = build_request(
            self.prompts, self.regenerator, doc, chunk, self.caller.model_for("regenerator"),
            quote=quote, question=pair.question, answer=pair.answer, critique=critique,
            seed=round_ if round_ > 1 else None,
        )
        if self.regenerator.output == "text":  # HelixNet's regenerator writes the new answer only
            reply = await self.caller.ask(request, chunk)
            if reply is None or not reply.content.strip():
                return None
            return {"question": pair.question, "answer": reply.content.strip()[: self.regenerator.max_answer_chars]}
        revised = await self.caller.ask_structured(self.regenerator, request, chunk, quote=quote)
        return None if revised is None else revised[0].model_dump()


def _with_quote(extra: tuple[tuple[str, str], ...], quote: str) -> tuple[tuple[str, str], ...]:
    if not quote.strip():
        return extra
    return tuple((k, v) for k, v in extra if k != "quote") + (("quote", quote.strip()),)


_SATISFIED = re.compile(
    r"\b(no (further )?(revision|changes?|improvements?|corrections?)s? (is |are )?(needed|required|necessary)"
    r"|(is|looks) (correct|accurate|good) as (it is|is))\b",
    re.IGNORECASE,
)


def needs_revision(critique: str) -> bool:
    """Read a free-text critique: the loop stops only when it says nothing needs changing."""
    return _SATISFIED.search(critique) is None
