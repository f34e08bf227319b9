"""The per-pair steps of the generate stage, as one list: what happens to a perspective's drafts before they are
stored. Curation's steps (filters, grounding, dedup, decontamination) run later over the whole run
(qagen/curate/verdicts.py); `qagen stages` prints both lists for the current settings (pipeline/assemble.py's ``pair_step_plan``, which a test
holds to the steps built here).

A step sees the drafts of one perspective call on one chunk and returns the pairs that go on (the same ones, or
better ones). Each counts the pairs it saw in ``GenStats.steps``, so the summary's per-step counts come from the
steps themselves. Exam pairs skip every step: they measure, they do not teach.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from qagen.core.types import Chunk, Document, QAPair
from qagen.generate.caller import Caller
from qagen.prompting.prompts import Prompt

if TYPE_CHECKING:
    from qagen.generate.judge import Judge
    from qagen.generate.refine import Refiner

# A deterministic filter (qagen/curate/filters.py, injected by the pipeline): (verdict, reason) or None.
Screen = Callable[[QAPair, Prompt, Document, Chunk], "tuple[str, str] | None"]


class PairStep(Protocol):
    name: str

    def wants(self, prompt: Prompt) -> bool:
        """Whether this prompt's drafts go through the step."""
        ...

    async def run(self, pairs: list[QAPair], prompt: Prompt, doc: Document, chunk: Chunk) -> list[QAPair]: ...


@dataclass
class BestOf:
    """MiniHF's rejection sampling: n answers per drafted question, the best-judged kept."""

    caller: Caller
    judge: Judge
    name: str = "best-of"

    def wants(self, prompt: Prompt) -> bool:
        return self.judge.best_of > 1 and prompt.grounding == "quote"

    async def run(self, pairs: list[QAPair], prompt: Prompt, doc: Document, chunk: Chunk) -> list[QAPair]:
        self.caller.store.add_drafts(pairs)
        return await self.judge.best_of_n(pairs, doc, chunk)



@dataclass
class Repair:
    """The repair loop (HelixNet, SelFee): pairs that fail a check are rewritten; a rewrite stays only if it
    passes every check (qagen/generate/refine.py). ``refine: false`` prompts (code-built answers) are left alone."""

    caller: Caller
    refiner: Refiner
    name: str = "refine"

    def wants(self, prompt: Prompt) -> bool:
        return prompt.refine

    async def run(self, pairs: list[QAPair], prompt: Prompt, doc: Document, chunk: Chunk) -> list[QAPair]:
        self.caller.store.add_drafts(pairs)
        outcomes = await asyncio.gather(*(self.refiner.refine(p, doc, chunk) for p in pairs))
        return [o.final for o in outcomes]



@dataclass
class JudgeStep:
    """MiniHF's yes/no judge; the deterministic filters first, so a pair they catch costs no judge call."""

    caller: Caller
    judge: Judge
    screen: Screen | None = None
    name: str = "judge"

    def wants(self, prompt: Prompt) -> bool:
        return True

    async def run(self, pairs: list[QAPair], prompt: Prompt, doc: Document, chunk: Chunk) -> list[QAPair]:
        to_judge = pairs
        if self.screen is not None:
            to_judge = [p for p in pairs if self.screen(p, prompt, doc, chunk) is None]
            self.caller.stats.screened += len(pairs) - len(to_judge)
        if to_judge:
            await self.judge.judge_pairs(to_judge, doc, chunk)
        return pairs  # the verdicts are stored; curation exports by them


def pair_steps(caller: Caller, *, refiner: Refiner | None, judge: Judge | None,
               screen: Screen | None) -> list[PairStep]:
    """The steps the settings turn on, in the order drafts meet them."""
    steps: list[PairStep] = []
    if judge is not None and judge.best_of > 1:
        steps.append(BestOf(caller, judge))
    if refiner is not None:
        steps.append(Repair(caller, refiner))
    if judge is not None:
        steps.append(JudgeStep(caller, judge, screen))
    return steps


async def run_steps(steps: list[PairStep], caller: Caller, pairs: list[QAPair], prompt: Prompt, doc: Document,
                    chunk: Chunk) -> list[QAPair]:
    """A perspective's drafts through the steps (exam drafts through none)."""
    if prompt.role == "exam":
        return pairs
    for step in steps:
        if pairs and step.wants(prompt):
            caller.stats.steps[step.name] += len(pairs)
            pairs = await step.run(pairs, prompt, doc, chunk)
    return pairs
