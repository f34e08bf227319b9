"""The cache-first caller: how every stage asks the model.

Every call goes to the store first: it answers a request it has seen. The
same request already in flight waits for that call instead of paying twice.
A reply that fails validation gets one corrective retry with the error shown
to the model; a second failure is recorded, never silently turned into
``[]``. The caller also counts (``GenStats``) and raises the fail-fast alarms.

Stages (perspectives, refine, judge) depend on this, not on each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel

from qagen.core import ids
from qagen.core.errors import FailFast
from qagen.core.progress import NullProgress, Progress
from qagen.core.types import Chunk
from qagen.llm.base import LLM, ChatRequest, ChatResponse, LLMError
from qagen.prompting.prompts import Prompt
from qagen.prompting.requests import corrective_request
from qagen.prompting.schemas import schema_for
from qagen.store import Store

log = logging.getLogger(__name__)


@dataclass
class GenStats:
    sent: int = 0  # requests that went to the model in this run
    cached: int = 0  # requests answered by the store
    failed: int = 0  # requests that failed for good (transport), retried on the next run
    corrective_retries: int = 0  # validation failures answered with a corrective retry
    invalid: int = 0  # perspective calls with no valid reply after the corrective retry
    length_cutoffs: int = 0  # replies that hit max_tokens
    screened: int = 0  # pairs a deterministic filter caught before the judge (one judge call each saved)
    rewrites: int = 0  # rewrites of chunks kept for continued pretraining (--cpt, qagen/generate/rewrite.py)
    rewrites_dropped: int = 0  # rewrites that stated a number, name or date their chunk does not
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt + completion tokens of the replies the store answered (paid by an earlier run)
    pairs: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)  # perspective calls (one per chunk x prompt)
    # the fact ledger (qagen/generate/ledger.py): facts listed, the extraction request's spans kept and rejected,
    # answers it could not match, questions kept, facts that reached k
    ledger: Counter[str] = field(default_factory=Counter)
    role_tokens: Counter[str] = field(default_factory=Counter)  # role -> tokens of its replies, sent or cached
    steps: Counter[str] = field(default_factory=Counter)  # per-pair step -> pairs it saw (qagen/generate/steps.py)
    failure_examples: list[str] = field(default_factory=list)

    def add(self, other: GenStats) -> None:
        """Another shard's counters into these."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.pairs.update(other.pairs)
        self.calls.update(other.calls)
        self.ledger.update(other.ledger)
        self.role_tokens.update(other.role_tokens)
        self.steps.update(other.steps)
        self.failure_examples += other.failure_examples[: max(0, 5 - len(self.failure_examples))]

_COUNTS = ("sent", "cached", "failed", "corrective_retries", "invalid", "length_cutoffs", "screened",
           "prompt_tokens", "completion_tokens", "cached_tokens", "rewrites", "rewrites_dropped")



@dataclass
class Alarm:
    """Counts one stage's outcomes and trips once the first ``after`` items fail at more than ``limit``."""

    stage: str
    limit: float
    after: int
    seen: int = 0
    bad: int = 0
    example: str = ""

    def record(self, bad: bool, example: str = "") -> None:
        self.seen += 1
        if bad:
            self.bad += 1
            self.example = self.example or example
        if self.after and self.seen == self.after and self.bad / self.seen > self.limit:
            raise FailFast(self.stage, self.bad / self.seen, self.seen, self.limit, self.example)



class Caller:
    """Asks the LLM of each role through the store's cache; one per run (or per Ray shard)."""

    def __init__(
        self,
        store: Store,
        llm: LLM,
        model: str,
        run_id: int,
        progress: Progress | None = None,
        *,
        roles: dict[str, tuple[LLM, str]] | None = None,
        alarms: dict[str, Alarm] | None = None,
    ):
        self.store = store
        self.llm = llm
        self.model = model
        self.run_id = run_id
        self.progress = progress or NullProgress()
        self.stats = GenStats()
        self.roles = roles or {}  # role -> (backend, model) where it has its own
        self.alarms = alarms or {}  # stage -> fail-fast alarm (parse, judge)
        self._inflight: dict[str, asyncio.Future[ChatResponse | None]] = {}  # request key -> the call under way

    def backends(self) -> list[LLM]:
        """Every distinct backend this generator calls (to close them at the end)."""
        return list({id(x): x for x in [self.llm, *(r[0] for r in self.roles.values())]}.values())

    def llm_for(self, role: str) -> LLM:
        return self.roles[role][0] if role in self.roles else self.llm

    def model_for(self, role: str) -> str:
        return self.roles[role][1] if role in self.roles else self.model

    def alarm(self, stage: str, bad: bool, example: str = "") -> None:
        if stage in self.alarms:
            self.alarms[stage].record(bad, example)

    async def ask(self, request: ChatRequest, chunk: Chunk, *, final_at_length: bool = False) -> ChatResponse | None:
        """Cache-first call. ``final_at_length``: a reply cut at max_tokens is complete (a 1-token judge reply).

        The same request already in flight (duplicate documents, identical
        pairs) waits for that call instead of paying for a second one.
        """
        cached = self.store.get_response(request.key)
        if cached is not None:  # what this reply cost when it was paid for: the dataset's teacher tokens
            self.stats.cached_tokens += cached.prompt_tokens + cached.completion_tokens
            self.stats.role_tokens[request.role] += cached.prompt_tokens + cached.completion_tokens
        if cached is None and request.key in self._inflight:
            cached = await asyncio.shield(self._inflight[request.key])
            if cached is None:  # that call failed, and recorded why
                self.progress.request_done(cached=False, failed=True)
                return None
        if cached is not None:
            self.stats.cached += 1
            self.progress.request_done(cached=True, failed=False)
            return cached
        waiting: asyncio.Future[ChatResponse | None] = asyncio.get_running_loop().create_future()
        self._inflight[request.key] = waiting
        reply = None
        try:
            reply = await self._call(request, chunk, final_at_length)
            return reply
        finally:
            del self._inflight[request.key]
            waiting.set_result(reply)

    async def _call(self, request: ChatRequest, chunk: Chunk, final_at_length: bool) -> ChatResponse | None:
        try:
            reply = await self.llm_for(request.role).complete(request)
        except LLMError as exc:
            self.stats.failed += 1
            self._example(f"{request.prompt_id} on chunk {ids.short(chunk.chunk_id)}: {exc}")
            self.store.record_failure(
                self.run_id, "generate", request.key, request.prompt_id, chunk.chunk_id, str(exc), exc.retryable
            )
            self.progress.request_done(cached=False, failed=True)
            return None
        self.stats.sent += 1
        self.stats.prompt_tokens += reply.prompt_tokens
        self.stats.completion_tokens += reply.completion_tokens
        self.stats.role_tokens[request.role] += reply.prompt_tokens + reply.completion_tokens
        if reply.finish_reason == "length" and not final_at_length:
            # Cut off at max_tokens: not a final answer (a flaky server truncates
            # too), so it is not cached; the corrective retry deals with it now and
            # a later run asks again if that fails.
            self.stats.length_cutoffs += 1
        else:
            self.store.put_response(self.run_id, request, reply)
        self.progress.request_done(cached=False, failed=False)
        return reply

    def _keep(self, request: ChatRequest, reply: ChatResponse) -> None:
        """Store a reply that is part of a valid result (idempotent)."""
        if reply.finish_reason == "length":
            self.store.put_response(self.run_id, request, reply)

    def _example(self, text: str) -> None:
        if len(self.stats.failure_examples) < 5:
            self.stats.failure_examples.append(text)

    async def ask_structured(
        self, prompt: Prompt, request: ChatRequest, chunk: Chunk, *, quote: bool | None = None,
        size: tuple[int, int] = (0, 0),
    ) -> tuple[BaseModel, ChatRequest] | None:
        """Cache-first call + validation, with at most one corrective retry.

        Returns the validated object and the request that produced it, or
        None after recording why (transport failure or a reply still invalid).
        """
        schema = schema_for(prompt, quote=quote, facts=size[0], per_fact=size[1])
        reply = await self.ask(request, chunk)
        if reply is None:
            return None
        try:
            obj = schema.validate(reply.content)
            self._keep(request, reply)
            self.alarm("parse", False)
            return obj, request
        except ValueError as first_error:
            self.stats.corrective_retries += 1
            self.progress.requests_added(1)
            retry = corrective_request(request, reply, str(first_error))
            first_request, first_reply = request, reply
            reply = await self.ask(retry, chunk)
            if reply is None:
                return None
            try:
                obj = schema.validate(reply.content)
            except ValueError as second_error:
                self.stats.invalid += 1
                example = f"{prompt.id} on chunk {ids.short(chunk.chunk_id)}: {second_error}"
                self._example(example)
                self.store.record_failure(
                    self.run_id, "parse", retry.key, prompt.id, chunk.chunk_id, str(second_error),
                    reply.finish_reason == "length",  # retryable: a cut-off reply was not cached
                )
                self.alarm("parse", True, f"{example}; reply: {reply.content[:200]!r}")
                return None
            # The chain worked: keep every link (a cut-off first reply too),
            # so the same command again makes zero calls.
            self._keep(first_request, first_reply)
            self._keep(retry, reply)
            self.alarm("parse", False)
            return obj, retry

    def record_failure(self, stage: str, request: ChatRequest, chunk: Chunk, error: str, retryable: bool) -> None:
        """A reply that could be read but not used (e.g. a judge reply that is neither yes nor no)."""
        self.store.record_failure(self.run_id, stage, request.key, request.prompt_id, chunk.chunk_id, error, retryable)
