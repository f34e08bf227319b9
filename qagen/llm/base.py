"""The LLM seam: the wire types and the protocol every backend implements.

``ChatRequest`` is the wire-level request (what the model sees); its ``key``
hashes everything that can change the reply, so the state store can serve a
repeated request without calling anything. Backends implement ``LLM``:
``openai_http`` (every OpenAI-compatible server), ``embedded`` (llama.cpp as a
child process) and ``vllm`` (in process).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Protocol

from qagen.core import ids
from qagen.core.errors import QagenError

# Model families whose chat template rejects a "system" role.
_NO_SYSTEM_ROLE = ("mistral", "mixtral")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    temperature: float
    max_tokens: int
    json_schema: str | None = None  # JSON text; sent as response_format json_schema
    schema_name: str = "output"
    top_logprobs: int = 0
    prompt_id: str = ""
    prompt_hash: str = ""  # hash of the prompt file(s) that produced this request
    role: str = "generator"  # which configured role (endpoint) serves it
    # "chat" (/v1/chat/completions) or "completion" (/v1/completions, one raw
    # prompt in messages[0]: HelixNet's critic/regenerator format).
    mode: str = "chat"
    seed: int | None = None  # sampling seed; best-of-n asks for distinct samples with distinct seeds
    stop: tuple[str, ...] = ()

    def wire(self) -> dict[str, object]:
        """What the model is sent (stored with the response, and hashed into ``key``)."""
        wire: dict[str, object] = {
            "model": self.model,
            "messages": [[m.role, m.content] for m in self.messages],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "schema": self.json_schema,
            "top_logprobs": self.top_logprobs,
        }
        # Only when set, so requests that don't use them keep their keys.
        if self.mode != "chat":
            wire["mode"] = self.mode
        if self.seed is not None:
            wire["seed"] = self.seed
        if self.stop:
            wire["stop"] = list(self.stop)
        return wire

    @cached_property
    def key(self) -> str:
        """Hash of the full request: model, messages, schema, params, prompt hash (computed once)."""
        return ids.hash_json({**self.wire(), "schema_name": self.schema_name, "prompt_hash": self.prompt_hash})

    def sampling_options(self) -> dict[str, object]:
        """``seed`` and ``stop`` when set: the same keys for chat, completions and vLLM's SamplingParams."""
        options: dict[str, object] = {}
        if self.seed is not None:
            options["seed"] = self.seed
        if self.stop:
            options["stop"] = list(self.stop)
        return options

    def with_messages(self, *extra: Message) -> ChatRequest:
        return replace(self, messages=self.messages + extra)


@dataclass(frozen=True)
class ChatResponse:
    content: str
    finish_reason: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    top_logprobs: tuple[tuple[str, float], ...] = field(default=())  # first token's alternatives


class LLMError(QagenError):
    """A request failed for good (after any retries). ``retryable`` says whether a later run may succeed."""

    def __init__(self, message: str, *, retryable: bool, attempts: int = 1):
        super().__init__(message)
        self.retryable = retryable
        self.attempts = attempts


class LLM(Protocol):
    name: str

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None: ...



def wants_system_fold(model: str, setting: str) -> bool:
    if setting == "yes":
        return False
    if setting == "no":
        return True
    return any(tag in model.lower() for tag in _NO_SYSTEM_ROLE)


def fold_system(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """Merge system text into the first user turn, for templates without a system role."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return tuple(rest)
    if rest and rest[0].role == "user":
        rest[0] = Message("user", f"{system}\n\n{rest[0].content}")
    else:
        rest.insert(0, Message("user", system))
    return tuple(rest)
