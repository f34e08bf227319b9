"""Flaky servers: every fault kind, bounded retries, failures recorded with their cause, resumable runs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest

from qagen.config import load_settings
from qagen.llm.base import ChatRequest, LLMError, Message
from qagen.llm.openai_http import OpenAIHTTP
from qagen.pipeline.ingest import ingest
from qagen.pipeline.summary import Summary
from qagen.testing import FaultInjector, StubReply, StubServer
from tests.helpers import passage_reply

SEED = 23  # this seed's fault sequence holds all 7 kinds within its first 34 calls
MAX_RETRIES = 4
TRANSPORT_CAUSES = {  # fault kind -> how the failures table names it
    "500": "HTTP 500",
    "503": "HTTP 503",
    "429": "HTTP 429",
    "timeout": "APITimeoutError",
    "reset": "APIConnectionError",
    "malformed": "JSONDecodeError",
}


def make_docs(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"report{i:02d}.md").write_text(
            f"# Council report {i}\n\nThe council approved plan {i} on Monday. "
            f"The budget for item {i} is {100 * (i + 1)} euros, and Ana Souza will follow it up.\n"
        )
    return root


def bodies(requests: list[dict]) -> Counter[str]:
    """How many HTTP requests the stub received per identical call (message list and sampling: a prompt's samples
    differ only by seed and temperature)."""
    return Counter(json.dumps([r["messages"], r.get("temperature"), r.get("seed")], sort_keys=True)
                   for r in requests if r["_path"].endswith("/chat/completions"))


def cause_of(error: str) -> str:
    for cause in TRANSPORT_CAUSES.values():
        if error.startswith(cause):
            return cause
    return error.split(":")[0]


def failures(out: Path) -> list[tuple[int, str, str, int]]:
    with sqlite3.connect(out / "qagen.sqlite") as db:
        return list(db.execute("SELECT run_id, stage, error, retryable FROM failures ORDER BY id"))


def cached_bodies(out: Path) -> set[str]:
    with sqlite3.connect(out / "qagen.sqlite") as db:
        rows = [json.loads(r[0]) for r in db.execute("SELECT request FROM requests")]
    return {json.dumps([[{"role": a, "content": b} for a, b in d["messages"]], d.get("temperature"), d.get("seed")],
                       sort_keys=True) for d in rows}


def report(label: str, http_requests: int, injector: FaultInjector, summary: Summary, out: Path) -> None:
    causes = Counter(cause_of(error) for _, _, error, _ in failures(out))
    print(
        f"\n[{label}] status={summary.status} http_requests={http_requests} injected={dict(sorted(injector.injected.items()))} "
        f"(total faults {sum(injector.injected.values())}) sent={summary.requests_sent} failed={summary.requests_failed} "
        f"http_retries={summary.http_retries} corrective_retries={summary.corrective_retries} "
        f"invalid={summary.invalid_replies} length_cutoffs={summary.length_cutoffs} failures_by_cause (all runs)={dict(causes)}"
    )


def test_flaky_server_every_fault_kind_run_completes(tmp_path):
    """rate 0.2 over all 7 fault kinds; retries bounded per request body; the run (or its re-run) ends ok."""
    # Grow the corpus until every kind has fired (the fault sequence is fixed by the seed,
    # so ~40 calls are enough; the bound keeps the test finite if the prompt suite shrinks).
    with ExitStack() as stack:
        for n_docs in (6, 10, 16, 24):
            injector = FaultInjector(rate=0.2, seed=SEED, handler=passage_reply, timeout_delay=3.0)
            stub = stack.enter_context(StubServer(injector))
            out = tmp_path / f"out{n_docs}"
            settings = load_settings(base_url=stub.base_url, model="stub-model", request_timeout=1.0,
                                     max_retries=MAX_RETRIES, concurrency=4)
            summary = ingest(make_docs(tmp_path / f"docs{n_docs}", n_docs), out, settings)
            if set(injector.injected) == set(FaultInjector.ALL_KINDS):
                break
        _check_flaky_run(tmp_path / f"docs{n_docs}", out, stub, injector, settings, summary)


def _check_flaky_run(docs, out, stub, injector, settings, summary) -> None:
    report("flaky", stub.count(), injector, summary, out)
    assert set(injector.injected) == set(FaultInjector.ALL_KINDS), injector.injected
    assert injector.total == stub.count() == len(stub.requests)

    # bounded retries: no identical body was sent more than max_retries + 1 times
    per_body = bodies(stub.requests)
    assert max(per_body.values()) <= MAX_RETRIES + 1, per_body.most_common(3)
    # every HTTP request is a first attempt or a counted retry
    assert stub.count() == summary.requests_sent + summary.requests_failed + summary.http_retries
    # a "length" fault is a 200 with cut-off JSON: answered by a corrective retry, never an HTTP retry
    assert summary.length_cutoffs >= 1 and summary.corrective_retries >= 1
    # transient faults were retried: each transport fault costs one retry or one recorded failure
    # (">=": on a busy box a healthy request can time out too)
    transport_faults = sum(n for kind, n in injector.injected.items() if kind != "length")
    assert summary.http_retries + summary.requests_failed >= transport_faults
    for _, stage, error, retryable in failures(out):
        if stage == "generate":  # retries exhausted: named cause, retryable on the next run
            assert cause_of(error) in TRANSPORT_CAUSES.values() and retryable == 1, error

    if summary.status == "partial":
        first_sent = stub.count()
        stub.handler = passage_reply
        stub.requests.clear()
        again = ingest(docs, out, settings)
        report("flaky re-run", stub.count() - first_sent, injector, again, out)
        assert again.status == "ok" and again.requests_failed == 0
        assert 0 < again.requests_sent < first_sent
    else:
        assert summary.status == "ok" and summary.requests_failed == 0
    assert summary.pairs_total > 0


def test_failures_are_recorded_with_cause_and_rerun_sends_only_those(tmp_path, settings_for, stub):
    """No HTTP retries: every transport fault becomes a failure row naming its cause; the re-run repairs exactly those."""
    docs = make_docs(tmp_path / "docs", 6)
    out = tmp_path / "out"
    injector = FaultInjector(rate=0.2, seed=SEED, handler=passage_reply, timeout_delay=3.0)
    stub.handler = injector
    settings = settings_for(request_timeout=1.0, max_retries=0, concurrency=4)
    first = ingest(docs, out, settings)
    report("no-retry", stub.count(), injector, first, out)
    assert first.status == "partial" and first.requests_failed > 0
    assert first.http_retries == 0
    assert max(bodies(stub.requests).values()) == 1

    rows = failures(out)
    generate_rows = [r for r in rows if r[1] == "generate"]
    assert len(generate_rows) == first.requests_failed
    assert all(retryable == 1 for _, _, _, retryable in generate_rows)  # transport errors: a later run may succeed
    causes = Counter(cause_of(error) for _, _, error, _ in generate_rows)
    assert set(causes) <= set(TRANSPORT_CAUSES.values()), causes
    for kind in ("500", "503", "429", "reset", "malformed"):
        assert causes[TRANSPORT_CAUSES[kind]] == injector.injected[kind], (kind, causes, injector.injected)
    # a request can also time out on a busy box, so at least the injected ones
    assert causes["APITimeoutError"] >= injector.injected["timeout"]
    # parse failures (cut-off reply, then a second bad one) are retryable: the cut-off reply was not cached
    assert all(retryable == 1 for _, stage, _, retryable in rows if stage == "parse")

    # The re-run (server healthy now) sends exactly the first-attempt requests that have no stored reply.
    originals = {b for b in bodies(stub.requests) if len(json.loads(b)[0]) == 2}  # system + user: not corrective
    missing = originals - cached_bodies(out)
    first_count = stub.count()
    stub.handler = passage_reply
    stub.requests.clear()
    second = ingest(docs, out, settings)
    report("re-run", stub.count() - first_count, injector, second, out)
    assert second.status == "ok" and second.requests_failed == 0
    assert set(bodies(stub.requests)) == missing
    assert second.requests_sent == stub.count() - first_count == len(missing)
    assert 0 < second.requests_sent < first_count
    # each perspective call asks once now (from the store or, for exactly those missing, the server),
    # plus one stored corrective request per repaired chain (a cut-off reply and its fix are both cached)
    calls = sum(first.calls_per_perspective.values())
    assert sum(second.calls_per_perspective.values()) == calls
    assert calls == second.requests_cached + second.requests_sent - second.corrective_retries
    assert second.corrective_retries == first.corrective_retries - first.invalid_replies


def test_non_retryable_400_is_never_retried(tmp_path, settings_for, stub):
    def reject_entities(req: dict) -> StubReply:
        if req["response_format"]["json_schema"]["name"] == "entities":
            return StubReply(status=400)
        return passage_reply(req)

    stub.handler = reject_entities
    out = tmp_path / "out"
    summary = ingest(make_docs(tmp_path / "docs", 3), out, settings_for(max_retries=MAX_RETRIES))
    rejected = [r for r in stub.requests if r["response_format"]["json_schema"]["name"] == "entities"]
    assert rejected and summary.requests_failed == len(rejected)
    assert set(bodies(rejected).values()) == {1}  # exactly one request per 400'd body
    assert summary.http_retries == 0
    rows = failures(out)
    assert len(rows) == len(rejected)
    assert all(error.startswith("HTTP 400") and retryable == 0 for _, _, error, retryable in rows)
    assert summary.status == "partial"


def test_backoff_retries_then_raises_retryable_error():
    calls: list[dict] = []

    def always_503(req: dict) -> StubReply:
        calls.append(req)
        return StubReply(status=503)

    async def call(base_url: str) -> None:
        llm = OpenAIHTTP(base_url, max_retries=3, backoff_max=0.05, timeout=5.0)
        request = ChatRequest(model="m", messages=(Message("user", "hi"),), temperature=0.0, max_tokens=16)
        try:
            await llm.complete(request)
        finally:
            await llm.aclose()

    with StubServer(always_503) as server:
        with pytest.raises(LLMError) as info:
            asyncio.run(call(server.base_url))
        assert server.count() == 4 == len(calls)
    assert info.value.retryable is True
    assert info.value.attempts == 4
    assert "HTTP 503" in str(info.value)
