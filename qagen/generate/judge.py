"""The judge: MiniHF's zero-shot yes/no evaluator.

Each check (supported? self-contained? useful?) is one yes/no question about a
pair, asked after the shared prefix (system text + chunk), with
``max_tokens=1``. The score is P(yes) read from the first token's top
logprobs, normalised over the yes/no tokens found there. When the endpoint
returns no logprobs, the reply's first word is parsed instead (1.0 or 0.0)
and the summary says so. A pair passes when the mean of its checks reaches
the threshold.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from qagen.core import ids
from qagen.core.records import Judgement
from qagen.core.types import Chunk, Document, QAPair
from qagen.generate.caller import Caller
from qagen.prompting.prompts import PromptSet
from qagen.prompting.requests import build_request, prompt_variables

TOP_LOGPROBS = 20  # the most OpenAI-compatible servers return
_YES = frozenset({"yes", "y", "true"})
_NO = frozenset({"no", "n", "false"})
_WORD = re.compile(r"[a-z]+")


def _word(token: str) -> str:
    found = _WORD.search(token.lower())
    return found.group(0) if found else ""


def yes_probability(top: Sequence[tuple[str, float]]) -> float | None:
    """P(yes) among the yes/no tokens of the first position; None if neither is there."""
    yes = sum(math.exp(lp) for t, lp in top if _word(t) in _YES)
    no = sum(math.exp(lp) for t, lp in top if _word(t) in _NO)
    if yes + no <= 0.0:
        return None
    return yes / (yes + no)


def parse_yes_no(text: str) -> float | None:
    """1.0 / 0.0 from a reply's first word (``Yes.``, ``no``, ``"yes"``...); None otherwise."""
    first = _word(text.strip()[:20])
    if first in _YES:
        return 1.0
    if first in _NO:
        return 0.0
    return None


@dataclass
class JudgeStats:
    best_of_replaced: int = 0  # drafts whose answer lost to a sampled one (--best-of)


class Judge:
    def __init__(self, caller: Caller, prompts: PromptSet, threshold: float, best_of: int = 1):
        self.caller = caller
        self.prompts = prompts
        self.prompt = prompts.by_id("judge")
        if not self.prompt.questions:
            raise ValueError(f"{self.prompt.source}: the judge needs a 'questions' mapping (one yes/no check each)")
        self.threshold = threshold
        self.best_of = best_of
        self.answerer = prompts.by_id("answer") if best_of > 1 else None
        self.stats = JudgeStats()

    async def best_of_n(self, pairs: Sequence[QAPair], doc: Document, chunk: Chunk) -> list[QAPair]:
        """MiniHF's rejection sampling: n answers per question (the draft + n-1 samples), keep the best-judged.

        Only for pairs whose answer comes from the passage (quote-grounded
        perspectives). Samples use seeds 1..n-1, so each is a distinct, cached request.
        """
        assert self.answerer is not None
        self.caller.progress.requests_added(len(pairs) * (self.best_of - 1) * (1 + len(self.prompt.questions)))
        return list(await asyncio.gather(*(self._best(p, doc, chunk) for p in pairs)))

    async def _best(self, draft: QAPair, doc: Document, chunk: Chunk) -> QAPair:
        assert self.answerer is not None
        candidates = [draft]
        for seed in range(1, self.best_of):
            request = build_request(
                self.prompts, self.answerer, doc, chunk, self.caller.model_for(self.answerer.role), seed=seed,
                question=draft.question,
            )
            result = await self.caller.ask_structured(self.answerer, request, chunk)
            if result is None:
                continue
            data = result[0].model_dump()
            quote = data.get("quote", "").strip()
            candidates.append(replace(
                draft, pair_id=ids.hash_str("sample", draft.pair_id, str(seed), data["answer"]),
                answer=data["answer"].strip(), request_key=result[1].key,
                extra=(("quote", quote),) if quote else (),
            ))
        judged = await asyncio.gather(*(self.judge(c, doc, chunk) for c in candidates))
        scores = [j.score if j.score is not None else -1.0 for j in judged]
        best = max(range(len(candidates)), key=lambda i: (scores[i], -i))  # ties keep the earliest (the draft)
        self.stats.best_of_replaced += best != 0
        chosen = candidates[best]
        return replace(chosen, extra=(*chosen.extra, ("best_of", f"{best + 1}/{len(candidates)}")))

    async def _check(self, pair: QAPair, doc: Document, chunk: Chunk, name: str) -> tuple[float, str] | None:
        question = self.prompt.render_question(name, **prompt_variables(doc, chunk))
        request = build_request(
            self.prompts, self.prompt, doc, chunk, self.caller.model_for("judge"), top_logprobs=TOP_LOGPROBS,
            question=pair.question, answer=pair.answer, check=question,
        )
        reply = await self.caller.ask(request, chunk, final_at_length=True)
        if reply is None:
            return None
        p = yes_probability(reply.top_logprobs)
        if p is not None:
            return p, "logprobs"
        p = parse_yes_no(reply.content)
        if p is not None:
            return p, "parsed"
        # Neither yes nor no: counted as "no" (the reply is cached, so a re-run
        # would get the same), and recorded so the report can show it.
        self.caller.record_failure(
            "judge", request, chunk, f"{name}: neither yes nor no in the reply {reply.content[:80]!r}; scored 0", False
        )
        return 0.0, "parsed"

    async def judge(self, pair: QAPair, doc: Document, chunk: Chunk) -> Judgement:
        names = [name for name, _ in self.prompt.questions]
        results = await asyncio.gather(*(self._check(pair, doc, chunk, n) for n in names))
        scores = {n: round(r[0], 4) for n, r in zip(names, results, strict=True) if r is not None}
        methods = tuple(r[1] for r in results if r is not None)
        missing = tuple(n for n, r in zip(names, results, strict=True) if r is None)
        return Judgement(scores, methods, missing)

    def passes(self, judgement: Judgement) -> bool:
        score = judgement.score
        return score is not None and score >= self.threshold

    def judges(self, perspective: str) -> bool:
        """Whether this perspective's pairs are judged: not when its prompt says ``judge: false`` (a code-built
        decline, "The documents don't say ...", which the "supported by the passage?" check rejects by design)."""
        try:
            return self.prompts.by_id(perspective).judge
        except KeyError:
            return True

    async def judge_pairs(self, pairs: Sequence[QAPair], doc: Document, chunk: Chunk) -> list[Judgement]:
        """Judge the pairs (those of ``judge: false`` perspectives are left out); their judgements, in order."""
        pairs = [p for p in pairs if self.judges(p.perspective)]
        if not pairs:
            return []
        self.caller.progress.requests_added(len(pairs) * len(self.prompt.questions))
        judgements = await asyncio.gather(*(self.judge(p, doc, chunk) for p in pairs))
        self.caller.store.put_judgements(self.caller.run_id, [(p.pair_id, j) for p, j in zip(pairs, judgements, strict=True)])
        # Pass/reject counts for the summary come from the stored verdicts (qagen/curate/verdicts.py); here only the alarm.
        for pair, j in zip(pairs, judgements, strict=True):
            if j.missing:
                continue
            ok = self.passes(j)
            self.caller.alarm(
                "judge", not ok, f"{pair.perspective} pair {pair.question!r} -> {pair.answer[:120]!r}: scores {j.scores}"
            )
        return list(judgements)
