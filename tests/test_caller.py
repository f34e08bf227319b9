"""The cache-first Caller on a FakeLLM (no HTTP) and a real Store: cache, in-flight dedup, corrective retry, failures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from qagen.core.errors import FailFast
from qagen.generate.caller import Alarm, Caller
from qagen.llm.base import ChatRequest, LLMError, Message
from qagen.prompting.prompts import load_prompts
from qagen.prompting.requests import build_request
from qagen.prompting.schemas import schema_for
from qagen.store import Store
from qagen.testing import FakeLLM, FakeReply, schema_instance
from tests.helpers import UNIT_DOC, db_rows, unit_chunk

PROMPTS = load_prompts()
FACTS = PROMPTS.by_id("facts")  # a structured (qa_pairs, with quote) perspective
CHUNK = unit_chunk()


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "out") as s:
        yield s


def facts_request(chunk=CHUNK) -> ChatRequest:
    return build_request(PROMPTS, FACTS, UNIT_DOC, chunk, "gen-model")


def valid_json(request: ChatRequest) -> str:
    return json.dumps(schema_instance(json.loads(request.json_schema)))


def caller_for(store: Store, llm: FakeLLM, **kwargs) -> Caller:
    return Caller(store, llm, "gen-model", store.start_run("test", {}), **kwargs)


def stored_keys(store: Store) -> list[str]:
    return [k for (k,) in db_rows(store, "SELECT key FROM requests")]


def failure_rows(store: Store) -> list[tuple]:
    return db_rows(store, "SELECT stage, request_key, prompt_id, chunk_id, error, retryable FROM failures ORDER BY id")


# --- the cache ---------------------------------------------------------------------------------
def test_a_cache_hit_makes_no_second_call(store):
    llm = FakeLLM(lambda req: "the reply")
    caller = caller_for(store, llm)
    request = facts_request()

    async def twice():
        return await caller.ask(request, CHUNK), await caller.ask(request, CHUNK)

    first, second = asyncio.run(twice())
    assert first.content == second.content == "the reply"
    assert llm.requests == [request]
    assert (caller.stats.sent, caller.stats.cached) == (1, 1)
    assert db_rows(store, "SELECT key, prompt_id, model, content FROM requests") == [
        (request.key, "facts", "gen-model", "the reply")
    ]
    # a later run (a fresh caller on the same store) pays nothing either
    again = caller_for(store, llm)
    assert asyncio.run(again.ask(request, CHUNK)).content == "the reply"
    assert len(llm.requests) == 1 and again.stats.cached == 1 and again.stats.sent == 0


def test_identical_requests_in_flight_share_one_call(store):
    llm = FakeLLM(lambda req: "shared", delay=0.01)
    caller = caller_for(store, llm)
    request = facts_request()

    async def together():
        return await asyncio.gather(caller.ask(request, CHUNK), caller.ask(request, CHUNK))

    replies = asyncio.run(together())
    assert [r.content for r in replies] == ["shared", "shared"]
    assert len(llm.requests) == 1
    assert (caller.stats.sent, caller.stats.cached) == (1, 1)  # the second waited for the first


def test_a_reply_cut_at_max_tokens_is_not_cached(store):
    llm = FakeLLM(lambda req: FakeReply('{"pairs": [{"question": "Wh', finish_reason="length"))
    caller = caller_for(store, llm)
    request = facts_request()
    reply = asyncio.run(caller.ask(request, CHUNK))
    assert reply.finish_reason == "length" and reply.content.startswith('{"pairs"')
    assert caller.stats.length_cutoffs == 1 and stored_keys(store) == []
    asyncio.run(caller.ask(request, CHUNK))  # asked again: nothing was cached
    assert len(llm.requests) == 2 and caller.stats.cached == 0


def test_a_one_token_reply_at_length_is_final_and_cached(store):
    llm = FakeLLM(lambda req: FakeReply("Yes", finish_reason="length"))
    caller = caller_for(store, llm)
    request = facts_request()
    asyncio.run(caller.ask(request, CHUNK, final_at_length=True))
    assert stored_keys(store) == [request.key] and caller.stats.length_cutoffs == 0


# --- validation and the corrective retry -------------------------------------------------------
def test_an_invalid_reply_gets_one_corrective_retry_that_shows_the_error(store):
    request = facts_request()
    good = valid_json(request)
    llm = FakeLLM().add("facts", "not json at all", good)
    caller = caller_for(store, llm)
    obj, used = asyncio.run(caller.ask_structured(FACTS, request, CHUNK))

    assert obj.model_dump() == json.loads(good)
    assert len(llm.requests) == 2 and llm.pending() == {}
    first, retry = llm.requests
    assert first == request and used == retry
    with pytest.raises(ValueError) as error:
        schema_for(FACTS).validate("not json at all")
    assert retry.messages[: len(request.messages)] == request.messages
    assert retry.messages[-2] == Message("assistant", "not json at all")
    assert retry.messages[-1].role == "user" and str(error.value) in retry.messages[-1].content
    assert (caller.stats.corrective_retries, caller.stats.invalid, caller.stats.sent) == (1, 0, 2)
    assert sorted(stored_keys(store)) == sorted([request.key, retry.key])
    assert failure_rows(store) == []


def test_invalid_twice_is_a_recorded_parse_failure(store):
    llm = FakeLLM(lambda req: '{"pairs": []}')  # valid JSON, but at least one pair is required
    caller = caller_for(store, llm)
    request = facts_request()
    assert asyncio.run(caller.ask_structured(FACTS, request, CHUNK)) is None

    assert len(llm.requests) == 2  # exactly one corrective retry
    retry = llm.requests[1]
    assert "That reply was not valid" in retry.messages[-1].content
    (row,) = failure_rows(store)
    stage, key, prompt_id, chunk_id, error, retryable = row
    assert (stage, key, prompt_id, chunk_id, retryable) == ("parse", retry.key, "facts", CHUNK.chunk_id, 0)
    assert "qa_pairs schema" in error and "pairs" in error
    assert (caller.stats.invalid, caller.stats.corrective_retries) == (1, 1)


@pytest.mark.parametrize("retryable", [True, False])
def test_an_llm_error_is_a_recorded_generate_failure(store, retryable):
    llm = FakeLLM(lambda req: LLMError("HTTP 503 from the server", retryable=retryable))
    caller = caller_for(store, llm)
    request = facts_request()
    assert asyncio.run(caller.ask_structured(FACTS, request, CHUNK)) is None

    assert len(llm.requests) == 1  # a transport failure gets no corrective retry
    assert failure_rows(store) == [
        ("generate", request.key, "facts", CHUNK.chunk_id, "HTTP 503 from the server", int(retryable))
    ]
    assert (caller.stats.failed, caller.stats.sent, caller.stats.corrective_retries) == (1, 0, 0)
    assert stored_keys(store) == []  # nothing cached: the next run asks again


# --- fail fast ---------------------------------------------------------------------------------
def test_the_parse_alarm_raises_fail_fast_after_n_bad_items(store):
    llm = FakeLLM(lambda req: "garbage")
    caller = caller_for(store, llm, alarms={"parse": Alarm("parse", limit=0.5, after=2)})
    chunks = [unit_chunk(0), unit_chunk(1, "The bridge reopens in January after the repairs.")]

    async def both():
        assert await caller.ask_structured(FACTS, facts_request(chunks[0]), chunks[0]) is None  # 1 of 1: not yet
        await caller.ask_structured(FACTS, facts_request(chunks[1]), chunks[1])

    with pytest.raises(FailFast) as stopped:
        asyncio.run(both())
    assert (stopped.value.stage, stopped.value.seen, stopped.value.rate) == ("parse", 2, 1.0)
    assert "'garbage'" in stopped.value.example
    assert [r[0] for r in failure_rows(store)] == ["parse", "parse"]


def test_the_alarm_stays_quiet_at_its_limit(store):
    chunks = [unit_chunk(i, f"Passage number {i} about the Eastbay bridge.") for i in range(2)]
    requests = [facts_request(c) for c in chunks]
    good = valid_json(requests[0])
    llm = FakeLLM(lambda req: good if req.messages == requests[0].messages else "garbage")
    caller = caller_for(store, llm, alarms={"parse": Alarm("parse", limit=0.5, after=2)})

    async def both():
        return [await caller.ask_structured(FACTS, r, c) for r, c in zip(requests, chunks, strict=True)]

    ok, bad = asyncio.run(both())  # 1 bad of 2 = 50%, not above the limit
    assert ok is not None and bad is None


# --- the double itself -------------------------------------------------------------------------
def test_fake_llm_queues_before_script_and_fails_loudly_when_unscripted():
    llm = FakeLLM().add("judge", "queued")
    request = facts_request()
    judge_like = ChatRequest(model="m", messages=(Message("user", "q"),), temperature=0.0, max_tokens=1,
                             prompt_id="judge", role="judge")
    assert asyncio.run(llm.complete(judge_like)).content == "queued"
    with pytest.raises(AssertionError, match="no reply for prompt_id='facts'"):
        asyncio.run(llm.complete(request))
    llm.script = lambda req: FakeReply("Yes", top_logprobs=[("Yes", -0.1)], completion_tokens=1)
    reply = asyncio.run(llm.complete(request))
    assert (reply.content, reply.model, reply.top_logprobs, reply.completion_tokens) == (
        "Yes", "gen-model", (("Yes", -0.1),), 1
    )
    assert llm.requests == [judge_like, request, request] and llm.requests_for("judge") == [judge_like]
