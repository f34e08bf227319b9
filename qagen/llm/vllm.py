"""In-process vLLM: ``vllm.LLM`` chat batches with JSON-schema structured outputs and prefix caching.

Same prompts and schemas as the HTTP path: the backend receives the very
``ChatRequest`` objects the generator builds (so request keys, the state
store and resume behave the same), and turns each into vLLM sampling
parameters. Requests that arrive while a batch runs are gathered into the
next batch, so the engine sees large batches, never one request at a time.
The shared prefix (system text + chunk) comes first in every prompt, and
``enable_prefix_caching`` reuses its KV across a chunk's perspective suite.

vLLM is an optional extra (``pip install 'qagen[vllm]'``, GPU machine) and
is imported only when this backend is chosen. Structured outputs use
``SamplingParams(structured_outputs=StructuredOutputsParams(json=...))``
(vLLM >= 0.10.2; the only form since 0.12) or, on older releases,
``SamplingParams(guided_decoding=GuidedDecodingParams(json=...))``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from qagen.core.errors import BackendError
from qagen.llm.base import (
    ChatRequest,
    ChatResponse,
    LLMError,
    fold_system,
    wants_system_fold,
)

if TYPE_CHECKING:
    from qagen.config import Settings

log = logging.getLogger(__name__)

INSTALL_HINT = "the vllm backend needs vLLM and a GPU: pip install 'qagen[vllm]'"


class VLLMMissing(BackendError):
    """vLLM is not installed."""


def vllm_api() -> SimpleNamespace:
    """The parts of vLLM this backend uses, from whichever release is installed."""
    try:
        import vllm
        from vllm import SamplingParams
    except ImportError as exc:
        raise VLLMMissing(f"{INSTALL_HINT} ({exc})") from None
    api = SimpleNamespace(LLM=vllm.LLM, SamplingParams=SamplingParams, StructuredOutputsParams=None,
                          GuidedDecodingParams=None)
    try:
        from vllm.sampling_params import StructuredOutputsParams

        api.StructuredOutputsParams = StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams  # vLLM < 0.10.2

        api.GuidedDecodingParams = GuidedDecodingParams
    return api


def sampling_params(api: Any, request: ChatRequest) -> Any:
    """vLLM sampling parameters for one request: the same temperature, limit, schema, logprobs, seed, stop."""
    kwargs: dict[str, object] = {"temperature": request.temperature, "max_tokens": request.max_tokens}
    if request.json_schema is not None:
        schema = json.loads(request.json_schema)
        if api.StructuredOutputsParams is not None:
            kwargs["structured_outputs"] = api.StructuredOutputsParams(json=schema)
        else:
            kwargs["guided_decoding"] = api.GuidedDecodingParams(json=schema)
    if request.top_logprobs:
        kwargs["logprobs"] = request.top_logprobs
    kwargs.update(request.sampling_options())
    return api.SamplingParams(**kwargs)


def _top_logprobs(completion: Any) -> tuple[tuple[str, float], ...]:
    """The first generated position's alternatives, best first (vLLM: {token_id: Logprob})."""
    positions = getattr(completion, "logprobs", None)
    if not positions:
        return ()
    first = positions[0] or {}
    found = [(str(lp.decoded_token), float(lp.logprob)) for lp in first.values()]
    return tuple(sorted(found, key=lambda t: -t[1]))


def to_response(output: Any, model: str, latency: float) -> ChatResponse:
    """One vLLM ``RequestOutput`` as a ChatResponse (usage from token ids, as the server reports it)."""
    completion = output.outputs[0]
    return ChatResponse(
        content=completion.text,
        finish_reason=completion.finish_reason or "",
        model=model,
        prompt_tokens=len(output.prompt_token_ids or ()),
        completion_tokens=len(completion.token_ids or ()),
        latency_s=latency,
        top_logprobs=_top_logprobs(completion),
    )


@dataclass
class _Pending:
    request: ChatRequest
    future: asyncio.Future[ChatResponse]


class VLLMBackend:
    """An ``LLM`` over an in-process vLLM engine (``vllm.LLM`` or an object with the same chat/generate API)."""

    def __init__(self, engine: Any, api: Any, model: str, *, system_role: str = "auto", max_batch: int = 512):
        self.name = f"vllm:{model}"
        self.model = model
        self.engine = engine
        self.api = api
        self._system_role = system_role
        self._max_batch = max_batch
        self._queue: list[_Pending] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches: list[int] = []  # size of each batch sent to the engine
        self.retries = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> VLLMBackend:
        api = vllm_api()
        assert settings.model
        engine = api.LLM(model=settings.model, enable_prefix_caching=True)
        return cls(engine, api, settings.model, system_role=settings.system_role)

    def _messages(self, request: ChatRequest) -> list[dict[str, str]]:
        messages = request.messages
        if wants_system_fold(request.model, self._system_role):
            messages = fold_system(messages)
        return [{"role": m.role, "content": m.content} for m in messages]

    async def complete(self, request: ChatRequest) -> ChatResponse:
        future: asyncio.Future[ChatResponse] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(request, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Run batches until the queue is empty; requests queued meanwhile form the next batch."""
        await asyncio.sleep(0)  # let the callers scheduled in this tick queue up first
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            self.batches.append(len(batch))
            started = time.perf_counter()
            try:
                outputs = await asyncio.to_thread(self._run, [p.request for p in batch])
            except Exception as exc:  # noqa: BLE001 - an engine error fails this batch's requests, not the run
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(LLMError(f"vLLM: {type(exc).__name__}: {exc}", retryable=True))
                continue
            latency = time.perf_counter() - started
            for p, output in zip(batch, outputs, strict=True):
                if not p.future.done():
                    p.future.set_result(to_response(output, self.model, latency))

    def _run(self, requests: list[ChatRequest]) -> list[Any]:
        """One engine call per mode, results in request order."""
        outputs: list[Any] = [None] * len(requests)
        chats = [i for i, r in enumerate(requests) if r.mode == "chat"]
        raws = [i for i, r in enumerate(requests) if r.mode != "chat"]
        if chats:
            done = self.engine.chat(
                [self._messages(requests[i]) for i in chats],
                [sampling_params(self.api, requests[i]) for i in chats],
                use_tqdm=False,
            )
            for i, out in zip(chats, done, strict=True):
                outputs[i] = out
        if raws:
            done = self.engine.generate(
                [requests[i].messages[0].content for i in raws],
                [sampling_params(self.api, requests[i]) for i in raws],
                use_tqdm=False,
            )
            for i, out in zip(raws, done, strict=True):
                outputs[i] = out
        return outputs

    async def aclose(self) -> None:
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
