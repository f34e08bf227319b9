"""The one HTTP path for every OpenAI-compatible server (vLLM serve, llama.cpp, Ollama, OpenAI).

``ChatRequest`` is the wire-level request (what the model sees); its ``key``
hashes everything that can change the reply, so the state store can serve a
repeated request without calling anything. Backends implement ``LLM``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import time
from dataclasses import replace
from functools import cached_property, lru_cache
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from qagen.llm import transport

_JSON_BODY: dict[str, Any] = {"headers": {"Content-Type": "application/json"}}  # the body is encoded already

from qagen.llm.base import (
    ChatRequest,
    ChatResponse,
    LLMError,
    fold_system,
    wants_system_fold,
)

log = logging.getLogger(__name__)


class BadReply(Exception):
    """The server answered 200 with something unusable (no choices)."""


def sdk_errors(*names: str) -> tuple[type[BaseException], ...]:
    """The ``openai`` SDK's exception classes of these names, if the SDK is loaded (imported lazily: ~2 s).

    No SDK loaded means no SDK client was made, so none of its errors can occur.
    """
    sdk = sys.modules.get("openai")
    return tuple(getattr(sdk, n) for n in names) if sdk is not None else ()


def is_retryable(exc: BaseException) -> bool:
    connection = sdk_errors("APIConnectionError", "APITimeoutError")
    if isinstance(exc, (*connection, asyncio.TimeoutError, transport.APIConnectionError)):
        return True
    if isinstance(exc, (*sdk_errors("APIStatusError"), transport.APIStatusError)):
        return exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500  # type: ignore[attr-defined]
    # A 200 whose body is not JSON (a proxy hiccup) is worth another try.
    return isinstance(exc, (BadReply, json.JSONDecodeError, *sdk_errors("APIResponseValidationError")))



def _describe(exc: BaseException) -> str:
    if isinstance(exc, (*sdk_errors("APIStatusError"), transport.APIStatusError)):
        return f"HTTP {exc.status_code}: {str(exc.message)[:200]}"  # type: ignore[attr-defined]
    if isinstance(exc, sdk_errors("APITimeoutError")) and (dropped := _dropped_connection(exc)):
        return f"APIConnectionError: {dropped}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _dropped_connection(exc: BaseException) -> str:
    """The SDK's aiohttp transport reports every aiohttp connection error as a timeout; name a reset a reset."""
    import aiohttp

    cause: BaseException | None = exc
    for _ in range(6):  # SDK error <- httpx error <- aiohttp error
        if cause is None:
            return ""
        if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, TimeoutError):
            return f"{type(cause).__name__}: {str(cause)[:200]}"
        cause = cause.__cause__ or cause.__context__
    return ""


@lru_cache(maxsize=256)
def _schema(text: str) -> dict[str, Any]:
    """Parsed JSON schema, once per distinct schema (a handful per run; only read when the body is encoded)."""
    return json.loads(text)  # type: ignore[no-any-return]


def chat_response(body: dict[str, Any], model: str, latency: float) -> ChatResponse:
    """Read an OpenAI chat-completion JSON body; a body without a usable first choice raises BadReply."""
    try:
        choice = body["choices"][0]
        message = choice.get("message") or {}
        content = message.get("content") or ""
        top: tuple[tuple[str, float], ...] = ()
        logprobs = choice.get("logprobs") or {}
        if logprobs.get("content"):
            first = logprobs["content"][0]
            top = tuple((str(t["token"]), float(t["logprob"])) for t in (first.get("top_logprobs") or []))
        usage = body.get("usage") or {}
        return ChatResponse(
            content=str(content),
            finish_reason=choice.get("finish_reason") or "",
            model=body.get("model") or model,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency,
            top_logprobs=top,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise BadReply(f"reply has no usable choice ({type(exc).__name__}: {exc})") from None


class OpenAIHTTP:
    """Async client for any OpenAI-compatible endpoint (vLLM, llama.cpp, Ollama, OpenAI).

    Up to ``concurrency`` requests are in flight at once, so the server's
    continuous batching has work to batch. Retries use exponential backoff
    with jitter and apply only to retryable errors (connection, timeout,
    408/409/429/5xx, unparseable body).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "not-needed",
        concurrency: int = 8,
        timeout: float = 300.0,
        max_retries: int = 4,
        system_role: str = "auto",
        backoff_max: float = 30.0,
        transport_kind: str = "openai",
    ):
        self.name = base_url
        self.base_url = base_url
        # "openai": chat calls go through the openai SDK (the default; ~1.4 ms of client CPU per
        # request, ~680 requests/s end to end on 2 cores: more than one vLLM GPU serving a 7B
        # model absorbs). "aiohttp": a lean transport speaking the same JSON (~0.85 ms per
        # request, ~1,100 end to end), for many endpoints at once (benchmarks/RESULTS.md,
        # "Throughput"). Health checks use it too.
        if transport_kind not in ("openai", "aiohttp"):
            raise ValueError(f"unknown transport {transport_kind!r} (choose openai or aiohttp)")
        self._lean = transport_kind == "aiohttp"
        self._http = transport.JSONTransport(base_url, api_key=api_key, timeout=timeout, limit=concurrency)
        self._sem = asyncio.Semaphore(concurrency)
        self._max_retries = max_retries
        self._system_role = system_role
        self._backoff_max = backoff_max
        self.retries = 0  # total retried attempts, for the run summary
        self._sdk_args = {"base_url": base_url, "api_key": api_key, "timeout": timeout, "max_retries": 0}

    @cached_property
    def _client(self) -> Any:
        """The ``openai`` SDK client, made (and the SDK imported) on the first call that needs it.

        It runs on the SDK's own aiohttp transport (``DefaultAioHttpClient``, the SDK's
        documented way to swap its HTTP client), which cost 1.1 ms of client CPU per
        request against httpx's 1.9 here (benchmarks/RESULTS.md, "Overhead"). SDK
        releases without it keep their default client.
        """
        import openai

        args: dict[str, Any] = dict(self._sdk_args)
        try:
            args["http_client"] = openai.DefaultAioHttpClient(timeout=self._sdk_args["timeout"])
        except (AttributeError, RuntimeError, TypeError):  # an older SDK, or no aiohttp support in it
            pass
        return openai.AsyncOpenAI(**args)

    @cached_property
    def _raw_response(self) -> type:
        """httpx.Response: the SDK hands the reply back undecoded (httpx comes with the SDK)."""
        import httpx

        return httpx.Response

    async def ping(self) -> bool:
        """Health check: does the endpoint answer ``GET /models`` (any status below 500)?"""
        return await self._http.get_ok("/models")

    async def complete(self, request: ChatRequest) -> ChatResponse:
        # Fast path: almost every call succeeds at once, and building a tenacity
        # loop per call cost about a quarter of the client's CPU at ~1,000
        # requests/s (benchmarks/overhead.py profile). Failures go to the loop.
        try:
            async with self._sem:
                return await self._once(request)
        except Exception as exc:  # translated into one error type below
            if not is_retryable(exc) or self._max_retries == 0:
                raise LLMError(_describe(exc), retryable=is_retryable(exc), attempts=1) from exc
        await asyncio.sleep(random.uniform(0, min(0.5, self._backoff_max)))  # tenacity's first wait
        return await self._retry(request)

    async def _retry(self, request: ChatRequest) -> ChatResponse:
        """Attempts 2.. after a retryable failure: exponential backoff with jitter, bounded."""
        attempts = 1
        try:
            # attempt 2 waited above; multiplier 1.0 keeps the old 0.5 * 2**(n-1) waits for attempts 3..
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_retryable),
                wait=wait_random_exponential(multiplier=1.0, max=self._backoff_max),
                stop=stop_after_attempt(self._max_retries),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    self.retries += 1
                    async with self._sem:
                        response = await self._once(request)
                    return replace(response, attempts=attempts)
        except Exception as exc:
            raise LLMError(_describe(exc), retryable=is_retryable(exc), attempts=attempts) from exc
        raise AssertionError("unreachable")

    async def _once(self, request: ChatRequest) -> ChatResponse:
        if request.mode == "completion":
            return await self._once_completion(request)
        messages = request.messages
        if wants_system_fold(request.model, self._system_role):
            messages = fold_system(messages)
        kwargs: dict[str, object] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": _schema(request.json_schema), "strict": True},
            }
        if request.top_logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = request.top_logprobs
        kwargs.update(request.sampling_options())
        started = time.perf_counter()
        if self._lean:
            body = await self._http.post("/chat/completions", kwargs)
        else:
            # The raw reply, decoded once here: building the SDK's pydantic ChatCompletion and
            # dumping it back to a dict cost ~0.3 ms of client CPU per request for nothing.
            # Error statuses still raise the SDK's APIStatusError before this returns.
            # The SDK's own POST with the body already encoded: its resource method's deep transform of the
            # arguments (the JSON schema, every message) and the pydantic reply cost over 1 ms of client CPU per
            # request (benchmarks/RESULTS.md, "Throughput"). Auth, base URL, headers and error statuses (the SDK's
            # APIStatusError) are the SDK's, as before.
            client = self._client
            raw = await client.post("/chat/completions", content=transport.encode(kwargs),
                                    options=_JSON_BODY, cast_to=self._raw_response)
            body = transport.decode_object(raw.content)
        return chat_response(body, request.model, time.perf_counter() - started)

    async def _once_completion(self, request: ChatRequest) -> ChatResponse:
        """``/v1/completions`` with one raw prompt (models trained on a fixed text format, e.g. HelixNet)."""
        kwargs: dict[str, object] = {
            "model": request.model,
            "prompt": request.messages[0].content,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.top_logprobs:
            kwargs["logprobs"] = request.top_logprobs
        kwargs.update(request.sampling_options())
        started = time.perf_counter()
        result = await self._client.completions.create(**kwargs)  # type: ignore[call-overload]
        latency = time.perf_counter() - started
        if not result.choices:
            raise BadReply("reply has no choices")
        choice = result.choices[0]
        top: tuple[tuple[str, float], ...] = ()
        if choice.logprobs is not None and choice.logprobs.top_logprobs:
            first = choice.logprobs.top_logprobs[0] or {}
            top = tuple(sorted(((str(t), float(lp)) for t, lp in first.items()), key=lambda t: -t[1]))
        usage = result.usage
        return ChatResponse(
            content=choice.text or "",
            finish_reason=choice.finish_reason or "",
            model=result.model or request.model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_s=latency,
            top_logprobs=top,
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        if "_client" in self.__dict__:
            await self._client.close()
