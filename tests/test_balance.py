"""Several endpoints: load balancing, failover when one dies mid-run, health checks, adaptive concurrency."""

from __future__ import annotations

import asyncio
import json

import pytest

from qagen.llm.balance import AdaptiveLimit, Balanced
from qagen.llm.base import ChatRequest, LLMError, Message
from qagen.testing import StubReply, StubServer
from qagen.testing.stub_server import default_handler

SCHEMA = json.dumps({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]})


def request(i: int) -> ChatRequest:
    return ChatRequest(model="stub-model", messages=(Message("user", f"question {i}"),), temperature=0.0,
                       max_tokens=32, json_schema=SCHEMA)


def slow(delay: float):
    def handler(req: dict) -> StubReply:
        reply = default_handler(req)
        reply.delay = delay
        return reply

    return handler


async def run_all(llm: Balanced, n: int) -> list[object]:
    try:
        return await asyncio.gather(*(llm.complete(request(i)) for i in range(n)), return_exceptions=True)
    finally:
        await llm.aclose()


def test_load_is_spread_over_endpoints():
    with StubServer(slow(0.01)) as a, StubServer(slow(0.01)) as b:
        llm = Balanced([a.base_url, b.base_url], per_endpoint=4, max_retries=1)
        replies = asyncio.run(run_all(llm, 80))
        assert all(json.loads(r.content)["answer"] for r in replies)  # type: ignore[union-attr]
        assert a.count() + b.count() == 80
        assert min(a.count(), b.count()) >= 25  # least-loaded choice keeps both busy


def test_failover_when_an_endpoint_dies_mid_run():
    a, b = StubServer(slow(0.05)).start(), StubServer(slow(0.05)).start()
    try:
        llm = Balanced([a.base_url, b.base_url], per_endpoint=4, max_retries=3, backoff_max=0.05)

        async def scenario() -> list[object]:
            work = asyncio.gather(*(llm.complete(request(i)) for i in range(120)), return_exceptions=True)
            while a.count() < 10:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(a.stop)  # drops A's in-flight connections
            try:
                return await work
            finally:
                await llm.aclose()

        replies = asyncio.run(scenario())
        errors = [r for r in replies if isinstance(r, BaseException)]
        assert errors == []  # every request finished, on B after A died
        stats = {s["endpoint"]: s for s in llm.stats()}
        assert stats[a.base_url]["downs"] == 1 and stats[a.base_url]["healthy"] is False
        assert llm.failovers >= 1
        assert b.count() >= 120 - a.count()
    finally:
        a.stop()
        b.stop()


def test_health_probe_brings_an_endpoint_back():
    a, b = StubServer(slow(0.01)).start(), StubServer(slow(0.01)).start()
    port = a.port
    try:
        llm = Balanced([a.base_url, b.base_url], per_endpoint=2, max_retries=2, health_interval=0.1, backoff_max=0.05)

        async def scenario() -> tuple[bool, int]:
            a.stop()
            await asyncio.gather(*(llm.complete(request(i)) for i in range(10)))  # A fails once, is marked down
            down = llm.endpoints[0].healthy
            restarted = StubServer(slow(0.01), port=port).start()  # same address comes back
            try:
                await asyncio.sleep(0.5)  # a few probe intervals
                await asyncio.gather(*(llm.complete(request(100 + i)) for i in range(20)))
                return down, restarted.count()
            finally:
                await llm.aclose()
                restarted.stop()

        was_healthy, served_after = asyncio.run(scenario())
        assert was_healthy is False
        assert llm.endpoints[0].healthy is True
        assert served_after >= 5  # it takes work again
    finally:
        b.stop()


def test_client_errors_are_not_retried_or_failed_over():
    with StubServer(lambda req: StubReply(status=400)) as a, StubServer() as b:
        llm = Balanced([a.base_url, b.base_url], per_endpoint=1, max_retries=3)

        async def one() -> LLMError:
            try:
                with pytest.raises(LLMError) as info:
                    # per_endpoint=1 and no load: the first pick is A (listed first)
                    await llm.complete(request(0))
                return info.value
            finally:
                await llm.aclose()

        error = asyncio.run(one())
        assert error.retryable is False and error.attempts == 1 and "HTTP 400" in str(error)
        assert b.count() == 0


def overloaded_server(capacity: int, delay: float, rejected: list[int]):
    """A server that answers 429 whenever more than ``capacity`` requests are in flight (counted in ``rejected``)."""
    active = 0

    async def handler(req: dict) -> StubReply:
        nonlocal active
        if active >= capacity:
            rejected[0] += 1
            return StubReply(status=429, headers={"Retry-After": "0"})
        active += 1
        try:
            await asyncio.sleep(delay)
            return default_handler(req)
        finally:
            active -= 1

    return handler


def test_adaptive_limit_backs_off_on_429_and_every_request_succeeds():
    rejected = [0]
    with StubServer(overloaded_server(capacity=4, delay=0.02, rejected=rejected)) as server:
        llm = Balanced([server.base_url], per_endpoint=32, adaptive=True, max_retries=10, backoff_max=0.5)
        replies = asyncio.run(run_all(llm, 300))
        attempts = server.count()
    assert [r for r in replies if isinstance(r, BaseException)] == []
    limit = llm.endpoints[0].limit
    assert limit.cuts >= 2 and limit.limit < 32  # cut from 32 towards the server's capacity of 4
    # at a fixed 32 in flight, 28 of every 32 attempts would be refused; adapting keeps refusals a minority
    assert rejected[0] / attempts < 0.5, (rejected[0], attempts)


def test_adaptive_limit_grows_while_latency_holds():
    with StubServer(slow(0.01)) as server:
        llm = Balanced([server.base_url], per_endpoint=2, adaptive=True, max_retries=1)
        replies = asyncio.run(run_all(llm, 400))
        assert [r for r in replies if isinstance(r, BaseException)] == []
        assert llm.endpoints[0].limit.limit >= 8  # from 2, no overload seen
        assert llm.endpoints[0].limit.cuts == 0


def test_fixed_limit_never_moves():
    limit = AdaptiveLimit(8, adaptive=False)
    for _ in range(100):
        limit.on_success(0.01)
    limit.on_overload()
    assert limit.limit == 8
    grown = AdaptiveLimit(4, maximum=6)
    for _ in range(100):
        grown.on_success(0.01)
    assert grown.limit == 6  # capped at the maximum
    grown.on_overload()
    assert grown.limit == 3


def test_ingest_over_two_endpoints_survives_one_dying(tmp_path):
    """`qagen ingest --base-url A --base-url B`, A stopped mid-run: the dataset equals a one-endpoint run's."""
    import threading
    import time

    from qagen.config import load_settings
    from qagen.pipeline.ingest import ingest
    from qagen.testing.crash import write_corpus
    from tests.helpers import passage_reply

    def reply(req: dict) -> StubReply:
        out = passage_reply(req)
        out.delay = 0.02
        return out

    docs = tmp_path / "docs"
    write_corpus(docs, 12)
    common = {"model": "stub-model", "concurrency": 4, "max_retries": 3, "refine": False, "judge": False}
    with StubServer(reply) as ref_server:
        reference = ingest(docs, tmp_path / "ref", load_settings(base_url=ref_server.base_url, **common))
    a, b = StubServer(reply).start(), StubServer(reply).start()
    try:

        def kill_a() -> None:
            deadline = time.monotonic() + 60
            while a.count() < 15 and time.monotonic() < deadline:
                time.sleep(0.005)
            a.stop()

        killer = threading.Thread(target=kill_a)
        killer.start()
        settings = load_settings(base_url=a.base_url, extra_base_urls=[b.base_url], **common)
        summary = ingest(docs, tmp_path / "out", settings)
        killer.join()
    finally:
        a.stop()
        b.stop()
    assert summary.status == "ok" and summary.requests_failed == 0
    assert a.count() >= 15 and b.count() > 0
    assert summary.requests_sent == reference.requests_sent
    for name in ("train.jsonl", "eval.jsonl"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
