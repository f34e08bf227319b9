"""Several endpoints behind one ``LLM``: client-side load balancing, health checks, failover, adaptive concurrency.

``Balanced`` implements the ``LLM`` protocol, so the pipeline does not know
whether it talks to one server or ten. Each endpoint is an ``OpenAIHTTP``
without retries of its own: every attempt's outcome reaches this layer,
which decides where the next attempt goes.

- **Load**: a request goes to the healthy endpoint with the fewest requests in
  flight relative to its limit; when every endpoint is at its limit it waits.
- **Health**: a connection error or timeout marks an endpoint down and the
  request fails over at once to another one. A background probe
  (``GET /models``) brings it back when it answers again.
- **Adaptive concurrency** (AIMD, as TCP congestion control does): an
  endpoint's limit halves on 429/503 (at most once per cool-down) and grows
  by about one per round of successes while latency stays within
  ``tolerance`` times the best latency seen. With ``adaptive=False`` the limit
  stays at ``initial``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field, replace

from qagen.llm import transport
from qagen.llm.base import ChatRequest, ChatResponse, LLMError
from qagen.llm.openai_http import OpenAIHTTP, sdk_errors

log = logging.getLogger(__name__)

OVERLOAD = (429, 503)


@dataclass
class AdaptiveLimit:
    """Additive-increase / multiplicative-decrease limit on requests in flight."""

    initial: int
    minimum: int = 1
    maximum: int = 256
    adaptive: bool = True
    tolerance: float = 2.0  # grow while latency <= tolerance x best latency seen
    cooldown: float = 0.5  # most seconds between two cuts (less: two round trips once latency is known)
    value: float = field(init=False)
    best_latency: float = field(init=False, default=float("inf"))
    cuts: int = field(init=False, default=0)
    _last_cut: float = field(init=False, default=-1e9)

    def __post_init__(self) -> None:
        self.value = float(min(max(self.initial, self.minimum), self.maximum))

    @property
    def limit(self) -> int:
        return max(self.minimum, int(self.value))

    def on_success(self, latency: float) -> None:
        if not self.adaptive:
            return
        # the best latency drifts up slowly, so a server that got slower for good is re-baselined
        self.best_latency = min(latency, self.best_latency * 1.001)
        if latency <= self.tolerance * self.best_latency:
            self.value = min(float(self.maximum), self.value + 1.0 / self.value)

    def on_overload(self) -> None:
        if not self.adaptive:
            return
        now = time.monotonic()
        # one cut per round trip (as TCP does): refusals of requests already in flight are the same signal
        window = min(self.cooldown, 2 * self.best_latency)
        if now - self._last_cut >= window:
            self.value = max(float(self.minimum), self.value / 2)
            self._last_cut = now
            self.cuts += 1


@dataclass
class Endpoint:
    llm: OpenAIHTTP
    limit: AdaptiveLimit
    healthy: bool = True
    in_flight: int = 0
    sent: int = 0
    failed: int = 0
    downs: int = 0  # times it was marked down

    @property
    def name(self) -> str:
        return self.llm.name

    def load(self) -> float:
        return self.in_flight / self.limit.limit


class Balanced:
    """An ``LLM`` over several OpenAI-compatible endpoints (see the module docstring)."""

    def __init__(
        self,
        base_urls: list[str],
        *,
        api_key: str = "not-needed",
        per_endpoint: int = 8,
        max_per_endpoint: int | None = None,
        adaptive: bool = False,
        timeout: float = 300.0,
        max_retries: int = 4,
        system_role: str = "auto",
        backoff_max: float = 30.0,
        health_interval: float = 5.0,
        transport_kind: str = "openai",
    ):
        if not base_urls:
            raise ValueError("Balanced needs at least one base URL")
        cap = max_per_endpoint or (max(per_endpoint * 8, 64) if adaptive else per_endpoint)
        self.endpoints = [
            Endpoint(
                OpenAIHTTP(url, api_key=api_key, concurrency=cap, timeout=timeout, max_retries=0,
                           system_role=system_role, transport_kind=transport_kind),
                AdaptiveLimit(per_endpoint, maximum=cap, adaptive=adaptive),
            )
            for url in base_urls
        ]
        self.name = " + ".join(base_urls) if len(base_urls) > 1 else base_urls[0]
        self._max_retries = max_retries
        self._backoff_max = backoff_max
        self._health_interval = health_interval
        self._changed: asyncio.Event | None = None  # set whenever a slot frees or an endpoint's health changes
        self._prober: asyncio.Task[None] | None = None
        self.retries = 0  # retried attempts, for the run summary
        self.failovers = 0  # attempts moved to another endpoint after a connection failure

    # --- choosing an endpoint ---------------------------------------------
    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
            self._prober = asyncio.get_running_loop().create_task(self._probe_forever())
        return self._changed

    def _pick(self, avoid: Endpoint | None) -> Endpoint | None:
        healthy = [e for e in self.endpoints if e.healthy]
        pool = [e for e in healthy if e is not avoid] or healthy or self.endpoints  # all down: try anyway
        free = [e for e in pool if e.in_flight < e.limit.limit]
        return min(free, key=Endpoint.load) if free else None

    async def _acquire(self, avoid: Endpoint | None) -> Endpoint:
        changed = self._event()
        while (endpoint := self._pick(avoid)) is None:
            changed.clear()  # no await between the check and the wait: no wake-up is lost
            await changed.wait()
        endpoint.in_flight += 1
        return endpoint

    def _release(self, endpoint: Endpoint) -> None:
        """Synchronous, so it also runs when the caller is cancelled (``finally``)."""
        endpoint.in_flight -= 1
        self._event().set()

    async def _set_health(self, endpoint: Endpoint, healthy: bool) -> None:
        if endpoint.healthy == healthy:
            return
        endpoint.healthy = healthy
        endpoint.downs += not healthy
        log.warning("endpoint %s is %s", endpoint.name, "back" if healthy else "down; failing over")
        self._event().set()

    async def _probe_forever(self) -> None:
        """Health checks: every ``health_interval`` s, endpoints marked down are probed and brought back."""
        while True:
            await asyncio.sleep(self._health_interval)
            for endpoint in self.endpoints:
                if not endpoint.healthy and await endpoint.llm.ping():
                    await self._set_health(endpoint, True)

    # --- the LLM protocol -------------------------------------------------
    async def complete(self, request: ChatRequest) -> ChatResponse:
        last: LLMError | None = None
        avoid: Endpoint | None = None
        for attempt in range(1, self._max_retries + 2):
            if attempt > 1:
                self.retries += 1
            endpoint = await self._acquire(avoid)
            endpoint.sent += 1
            try:
                reply = await endpoint.llm.complete(request)
            except LLMError as exc:
                endpoint.failed += 1
                last = exc
                self._release(endpoint)
                if not exc.retryable:
                    raise LLMError(str(exc), retryable=False, attempts=attempt) from exc
                await self._after_failure(endpoint, exc, attempt)
                avoid = endpoint
                continue
            except BaseException:  # cancelled: give the slot back
                self._release(endpoint)
                raise
            endpoint.limit.on_success(reply.latency_s)
            self._release(endpoint)
            return replace(reply, attempts=attempt)
        assert last is not None
        raise LLMError(str(last), retryable=True, attempts=self._max_retries + 1) from last

    async def _after_failure(self, endpoint: Endpoint, exc: LLMError, attempt: int) -> None:
        """Classify a retryable failure: overload -> cut the limit and back off; dead -> fail over at once."""
        cause = exc.__cause__
        # Both transports' error types: the openai SDK's (default) and the lean one's.
        connection = (transport.APIConnectionError, *sdk_errors("APIConnectionError"))
        if isinstance(cause, connection):  # refused, reset, timeout
            await self._set_health(endpoint, False)
            if any(e.healthy for e in self.endpoints):
                self.failovers += 1
                return  # another endpoint takes it now
        elif (isinstance(cause, (transport.APIStatusError, *sdk_errors("APIStatusError")))
              and cause.status_code in OVERLOAD):
            endpoint.limit.on_overload()
        delay = random.uniform(0, min(self._backoff_max, 0.5 * 2 ** (attempt - 1)))
        await asyncio.sleep(delay)

    def stats(self) -> list[dict[str, object]]:
        """Per endpoint: requests sent, failed, times marked down, the current limit."""
        return [
            {"endpoint": e.name, "sent": e.sent, "failed": e.failed, "downs": e.downs, "limit": e.limit.limit,
             "healthy": e.healthy}
            for e in self.endpoints
        ]

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        for endpoint in self.endpoints:
            await endpoint.llm.aclose()
