"""Generation: run the perspective suite over chunks.

Prompt layout: the shared prefix (system text, then the chunk with its
title, section and short doc ID) comes first, the perspective's instruction
last. vLLM's and llama.cpp's prefix caches then reuse the chunk's KV across
the whole suite.

Every call is cache-first: the store answers a request it has seen. A reply
that fails validation gets one corrective retry with the error shown to the
model; a second failure is recorded, never silently turned into ``[]``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from . import ids
from .llm import LLM, ChatRequest, ChatResponse, LLMError, Message
from .models import Chunk, Document, QAPair
from .prompts import Prompt, PromptSet
from .schemas import FREE_TEXT, schema_for
from .store import Store

if TYPE_CHECKING:
    from .judge import Judge
    from .refine import Refiner

log = logging.getLogger(__name__)

_EMPTY_ANSWERS = {"", "unknown", "n/a", "na", "none", "not stated", "not given", "not specified", "null"}


class Progress(Protocol):
    def requests_added(self, n: int) -> None: ...

    def request_done(self, *, cached: bool, failed: bool) -> None: ...

    def pairs_added(self, n: int) -> None: ...


class NullProgress:
    def requests_added(self, n: int) -> None:
        pass

    def request_done(self, *, cached: bool, failed: bool) -> None:
        pass

    def pairs_added(self, n: int) -> None:
        pass


@dataclass
class GenStats:
    sent: int = 0  # requests that went to the model in this run
    cached: int = 0  # requests answered by the store
    failed: int = 0  # requests that failed for good (transport), retried on the next run
    corrective_retries: int = 0  # validation failures answered with a corrective retry
    invalid: int = 0  # perspective calls with no valid reply after the corrective retry
    length_cutoffs: int = 0  # replies that hit max_tokens
    prompt_tokens: int = 0
    completion_tokens: int = 0
    pairs: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)  # perspective calls (one per chunk x prompt)
    failure_examples: list[str] = field(default_factory=list)


class FailFast(RuntimeError):
    """A stage's failure rate passed its limit early in the run: stop instead of wasting the rest."""

    def __init__(self, stage: str, rate: float, seen: int, limit: float, example: str):
        super().__init__(
            f"stopped early: {rate:.0%} of the first {seen} {stage} items failed (limit {limit:.0%}). "
            f"Example: {example or '(none recorded)'}"
        )
        self.stage, self.rate, self.seen, self.limit, self.example = stage, rate, seen, limit, example


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


def prompt_variables(doc: Document, chunk: Chunk) -> dict[str, object]:
    return _variables(doc.doc_id, doc.meta, chunk)


def _variables(doc_id: str, meta: tuple[tuple[str, str], ...], chunk: Chunk) -> dict[str, object]:
    return {
        "title": chunk.title,
        "section": chunk.section,
        "short_id": ids.short(doc_id),
        "meta": [(k, v) for k, v in meta if k != "title"],
        "text": chunk.text,
        "part": chunk.index + 1,
    }


@lru_cache(maxsize=64)
def _prefix(system: Prompt, context: Prompt, doc_id: str, meta: tuple[tuple[str, str], ...], chunk: Chunk) -> tuple[str, str]:
    """System text and the chunk's context block, rendered once per chunk (the suite shares them).

    Keyed by what they are rendered from (the prompts, the document's ID and
    metadata, the chunk itself), never by the whole document, so the cache
    holds a few chunks' text at most.
    """
    return system.render(), context.render(**_variables(doc_id, meta, chunk))


def build_request(
    prompts: PromptSet,
    prompt: Prompt,
    doc: Document,
    chunk: Chunk,
    model: str,
    *,
    quote: bool | None = None,
    top_logprobs: int = 0,
    seed: int | None = None,
    **extra: object,
) -> ChatRequest:
    """Shared prefix (system text, then the chunk) first; the prompt's instruction last.

    A ``style: completion`` prompt renders the whole raw prompt itself (with the
    passage as ``text``) and goes to /v1/completions. ``judge``/``text`` outputs
    are read as plain text, so no schema is sent.
    """
    variables = prompt_variables(doc, chunk)
    common = {
        "model": model,
        "temperature": prompt.temperature,
        "max_tokens": prompt.max_tokens,
        "prompt_id": prompt.id,
        "prompt_hash": prompt.hash,
        "role": prompt.role,
        "top_logprobs": top_logprobs,
        "seed": seed,
        "stop": prompt.stop,
    }
    if prompt.style == "completion":
        raw = prompt.render(n=prompt.n, **variables, **extra)
        return ChatRequest(messages=(Message("prompt", raw),), mode="completion", **common)  # type: ignore[arg-type]
    system, context = _prefix(prompts.system, prompts.context, doc.doc_id, doc.meta, chunk)
    instruction = prompt.render(n=prompt.n, **variables, **extra)
    messages = (Message("system", system), Message("user", f"{context}\n\nTask: {instruction}"))
    if prompt.output in FREE_TEXT:
        return ChatRequest(messages=messages, **common)  # type: ignore[arg-type]
    schema = schema_for(prompt, quote=quote)
    return ChatRequest(
        messages=messages, json_schema=schema.json_schema, schema_name=schema.name, **common  # type: ignore[arg-type]
    )


def corrective_request(request: ChatRequest, reply: ChatResponse, error: str) -> ChatRequest:
    hint = " It was cut off at the token limit: keep every field shorter." if reply.finish_reason == "length" else ""
    return request.with_messages(
        Message("assistant", reply.content[:4000]),
        Message("user", f"That reply was not valid: {error}.{hint} Reply again with JSON only, matching the schema."),
    )


def outputs_to_qa(prompt: Prompt, obj: BaseModel, variables: dict[str, object]) -> list[tuple[str, str, str]]:
    """Turn a validated reply into (question, answer, quote) triples. The model never writes IDs."""
    data = obj.model_dump()
    found: list[tuple[str, str, str]] = []
    if prompt.output == "qa_pairs":
        found = [(p["question"], p["answer"], p.get("quote", "")) for p in data["pairs"]]
    elif prompt.output == "answers":
        for name, _ in prompt.questions:
            answer = str(data[name]).strip()
            if answer.strip(" .").lower() not in _EMPTY_ANSWERS:
                found.append((prompt.render_question(name, **variables), answer, ""))
    elif prompt.output == "entities":
        for ent in data["entities"]:
            question = prompt.render_question("entity", name=ent["name"], **variables)
            found.append((question, ent["description"], ""))
        for rel in data["relations"]:
            if rel["subject"].strip().lower() == rel["object"].strip().lower():
                continue  # "X is related to X" teaches nothing
            question = prompt.render_question("relation", subject=rel["subject"], object=rel["object"], **variables)
            found.append((question, f"{rel['subject']} {rel['relation']} {rel['object']}.", ""))
    seen: set[str] = set()
    unique = []
    for q, a, quote in found:
        q, a = q.strip(), a.strip()
        if q and a and q.lower() not in seen:
            seen.add(q.lower())
            unique.append((q, a, quote.strip()))
    return unique


def sort_key(doc: Document, chunk: Chunk, perspective: str, index: int) -> str:
    return f"{doc.path}\x00{chunk.index:06d}\x00{perspective}\x00{index:04d}"


class Generator:
    def __init__(
        self, store: Store, llm: LLM, prompts: PromptSet, model: str, run_id: int, progress: Progress | None = None
    ):
        self.store = store
        self.llm = llm
        self.prompts = prompts
        self.model = model
        self.run_id = run_id
        self.progress = progress or NullProgress()
        self.stats = GenStats()
        self.refiner: Refiner | None = None  # set by the pipeline when --refine is on
        self.judge: Judge | None = None  # set by the pipeline when the judge is on
        self.roles: dict[str, tuple[LLM, str]] = {}  # role -> (backend, model) where it has its own
        self.alarms: dict[str, Alarm] = {}  # stage -> fail-fast alarm (parse, judge)
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

    def plan(self, chunk: Chunk) -> list[Prompt]:
        """The LLM perspectives to run on this chunk (document-scope ones run on the first chunk)."""
        return [
            p
            for p in self.prompts.perspectives
            if p.role == "generator" and (p.scope == "chunk" or chunk.index == 0)
        ]

    async def ask(self, request: ChatRequest, chunk: Chunk, *, final_at_length: bool = False) -> ChatResponse | None:
        """Cache-first call. ``final_at_length``: a reply cut at max_tokens is complete (a 1-token judge reply).

        The same request already in flight (duplicate documents, identical
        pairs) waits for that call instead of paying for a second one.
        """
        cached = self.store.get_response(request.key)
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
        self, prompt: Prompt, request: ChatRequest, chunk: Chunk, *, quote: bool | None = None
    ) -> tuple[BaseModel, ChatRequest] | None:
        """Cache-first call + validation, with at most one corrective retry.

        Returns the validated object and the request that produced it, or
        None after recording why (transport failure or a reply still invalid).
        """
        schema = schema_for(prompt, quote=quote)
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

    async def run_prompt(self, prompt: Prompt, doc: Document, chunk: Chunk) -> list[QAPair]:
        """One perspective call on one chunk; drafts go through the refiner when one is set."""
        self.stats.calls[prompt.id] += 1
        model = self.model_for(prompt.role)
        result = await self.ask_structured(prompt, build_request(self.prompts, prompt, doc, chunk, model), chunk)
        if result is None:
            return []
        obj, request = result
        variables = prompt_variables(doc, chunk)
        qa = outputs_to_qa(prompt, obj, variables)
        pairs = [
            QAPair(
                pair_id=ids.hash_str("pair", request.key, str(i), q, a),
                chunk_id=chunk.chunk_id,
                doc_id=doc.doc_id,
                perspective=prompt.id,
                question=q,
                answer=a,
                request_key=request.key,
                # the name we asked for: servers may report a local file path instead
                model=model,
                extra=(("quote", quote),) if quote else (),
            )
            for i, (q, a, quote) in enumerate(qa)
        ]
        if self.judge is not None and self.judge.best_of > 1 and prompt.grounding == "quote" and pairs:
            self.store.add_drafts(pairs)
            pairs = await self.judge.best_of_n(pairs, doc, chunk)
        if self.refiner is not None and pairs:
            self.store.add_drafts(pairs)
            self.progress.requests_added(len(pairs))  # at least one critic call each
            outcomes = await asyncio.gather(*(self.refiner.refine(p, doc, chunk) for p in pairs))
            pairs = [o.final for o in outcomes]
        if self.judge is not None and pairs:
            await self.judge.judge_pairs(pairs, doc, chunk)
        self.store.add_pairs(self.run_id, [(p, sort_key(doc, chunk, prompt.id, i)) for i, p in enumerate(pairs)])
        self.stats.pairs[prompt.id] += len(pairs)
        self.progress.pairs_added(len(pairs))
        return pairs
