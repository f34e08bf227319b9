"""An in-process LLM double: scripted replies, no HTTP, every request recorded.

``FakeLLM`` implements the ``LLM`` protocol, so it plugs in wherever a real
backend does (``Caller``, the pipeline). Replies come from per-key queues
(a prompt id or a role, consumed in order) and then from an optional script
function; each reply may be a ``str`` (the content), a ``FakeReply`` (content
plus finish_reason, first-token top logprobs, token counts), a ready
``ChatResponse``, or an exception to raise (e.g. ``LLMError``)::

    llm = FakeLLM(lambda req: '{"answer": "42"}')
    llm.add("judge", FakeReply("Yes", top_logprobs=[("Yes", -0.1), ("No", -2.3)], finish_reason="length"))
    llm.add("critic", LLMError("server down", retryable=True))
    ...
    assert [r.prompt_id for r in llm.requests] == ["critic", "judge"]

A request nothing answers raises ``AssertionError`` (not ``LLMError``), so a
test fails loudly instead of the caller recording it as a transport failure.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from qagen.llm.base import ChatRequest, ChatResponse


@dataclass(frozen=True)
class FakeReply:
    """A reply that takes its ``model`` from the request it answers."""

    content: str = ""
    finish_reason: str = "stop"  # "length": cut off at max_tokens
    top_logprobs: Sequence[tuple[str, float]] = field(default=())  # first token's alternatives, best first
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def response(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(
            content=self.content, finish_reason=self.finish_reason, model=request.model,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            top_logprobs=tuple((str(t), float(lp)) for t, lp in self.top_logprobs),
        )


Reply = str | FakeReply | ChatResponse | BaseException
Script = Callable[[ChatRequest], Reply | Awaitable[Reply]]


class FakeLLM:
    """Scripted ``LLM``: queues by prompt id / role first, then ``script``; records ``requests``.

    ``delay`` seconds are awaited before each reply (0 still yields to the
    event loop once, so concurrent identical requests really overlap).
    """

    def __init__(self, script: Script | None = None, *, name: str = "fake", delay: float = 0.0):
        self.name = name
        self.script = script
        self.delay = delay
        self.requests: list[ChatRequest] = []  # every request received, in arrival order
        self.closed = False
        self._queues: dict[str, deque[Reply]] = {}

    def add(self, key: str, *replies: Reply) -> FakeLLM:
        """Queue replies for requests whose ``prompt_id`` (checked first) or ``role`` is ``key``."""
        self._queues.setdefault(key, deque()).extend(replies)
        return self

    def pending(self) -> dict[str, int]:
        """Queued replies not used yet, per key (a test can assert they were all consumed)."""
        return {k: len(q) for k, q in self._queues.items() if q}

    def requests_for(self, key: str) -> list[ChatRequest]:
        """The recorded requests whose prompt id or role is ``key``."""
        return [r for r in self.requests if key in (r.prompt_id, r.role)]

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        reply = self._next(request)
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, str):
            reply = FakeReply(reply)
        if isinstance(reply, FakeReply):
            return reply.response(request)
        if isinstance(reply, ChatResponse):
            return reply
        raise TypeError(f"FakeLLM: a reply must be str, FakeReply, ChatResponse or an exception, not {reply!r}")

    def _next(self, request: ChatRequest) -> Reply | Awaitable[Reply]:
        for key in (request.prompt_id, request.role):
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
        if self.script is not None:
            return self.script(request)
        raise AssertionError(
            f"FakeLLM {self.name!r} has no reply for prompt_id={request.prompt_id!r} role={request.role!r}"
        )

    async def aclose(self) -> None:
        self.closed = True
