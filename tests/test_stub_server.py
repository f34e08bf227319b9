"""Tests for qagen.testing.stub_server (real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

aiohttp = pytest.importorskip("aiohttp")
openai = pytest.importorskip("openai")

from qagen.testing import FaultInjector, StubReply, StubServer, schema_instance  # noqa: E402

MSGS = [{"role": "user", "content": "what is two plus two"}]

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["pairs", "kind", "n", "ok"],
    "properties": {
        "pairs": {
            "type": "array", "minItems": 2, "maxItems": 5,
            "items": {"$ref": "#/$defs/Pair"},
        },
        "kind": {"type": "string", "enum": ["factual", "reasoning"]},
        "n": {"type": "integer", "minimum": 3, "maximum": 9},
        "ok": {"type": "boolean"},
        "note": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "null"}]},
    },
    "$defs": {
        "Pair": {
            "type": "object",
            "required": ["question", "answer"],
            "properties": {
                "question": {"type": "string", "maxLength": 8},
                "answer": {"type": "string", "minLength": 20},
                "score": {"type": "number", "exclusiveMaximum": 1, "minimum": 0},
            },
        }
    },
}


def _check_known(obj):
    assert set(obj) <= {"pairs", "kind", "n", "ok", "note"}
    assert {"pairs", "kind", "n", "ok"} <= set(obj)
    assert 2 <= len(obj["pairs"]) <= 5
    for p in obj["pairs"]:
        assert isinstance(p["question"], str) and len(p["question"]) <= 8
        assert isinstance(p["answer"], str) and len(p["answer"]) >= 20
        if "score" in p:
            assert 0 <= p["score"] < 1
    assert obj["kind"] == "factual"
    assert isinstance(obj["n"], int) and 3 <= obj["n"] <= 9
    assert obj["ok"] is True
    assert obj.get("note") is None or len(obj["note"]) <= 4


@pytest.fixture
def server():
    with StubServer() as srv:
        yield srv


def client(srv, key="k", **kw):
    return openai.OpenAI(base_url=srv.base_url, api_key=key, max_retries=0, **kw)


def test_chat_round_trip_and_request_log(server):
    server.handler = lambda req: f"echo {req['messages'][-1]['content']}"
    r = client(server).chat.completions.create(model="my-model", messages=MSGS, temperature=0.3)
    assert r.choices[0].message.content == "echo what is two plus two"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "my-model" and r.object == "chat.completion"
    assert r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 6 and r.usage.total_tokens == 11
    assert server.count() == 1 and server.count("/v1/completions") == 0
    body = server.requests[0]
    assert body["_path"] == "/v1/chat/completions"
    assert body["messages"] == MSGS and body["temperature"] == 0.3 and body["model"] == "my-model"


def test_default_handler_schema_valid(server):
    rf = {"type": "json_schema", "json_schema": {"name": "qa", "schema": SCHEMA, "strict": True}}
    c = client(server)
    r1 = c.chat.completions.create(model="m", messages=MSGS, response_format=rf)
    r2 = c.chat.completions.create(model="m", messages=MSGS, response_format=rf)
    obj = json.loads(r1.choices[0].message.content)
    assert r1.choices[0].message.content == r2.choices[0].message.content  # cached
    _check_known(obj)
    try:
        import jsonschema
    except ImportError:
        pass
    else:
        jsonschema.validate(obj, SCHEMA)
    # no response_format -> plain text
    assert c.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == "stub reply"


def test_async_client_and_guided_json(server):
    async def go():
        c = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        rs = await asyncio.gather(*(c.chat.completions.create(
            model="m", messages=MSGS, extra_body={"guided_json": SCHEMA}) for _ in range(8)))
        await c.close()
        return rs

    for r in asyncio.run(go()):
        _check_known(json.loads(r.choices[0].message.content))
    assert server.count() == 8


def test_schema_instance_misc():
    assert schema_instance({"type": "array", "items": {"type": "integer"}}) == [1]
    assert schema_instance({"type": ["null", "string"], "maxLength": 3}) == "stu"
    assert schema_instance({"const": 7}) == 7
    inst = schema_instance({"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]},
                                      {"properties": {"b": {"type": "boolean"}}}]})
    assert inst == {"a": 1, "b": True}
    # recursive optional refs terminate
    tree = {"$defs": {"N": {"type": "object", "required": ["v"],
                            "properties": {"v": {"type": "string"}, "kids": {"type": "array",
                                                                             "items": {"$ref": "#/$defs/N"}}}}},
            "$ref": "#/$defs/N"}
    assert "v" in schema_instance(tree)


def test_error_statuses(server):
    c = client(server)
    server.handler = lambda req: StubReply(status=500)
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="m", messages=MSGS)
    server.handler = lambda req: StubReply(status=503)
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="m", messages=MSGS)
    server.handler = lambda req: StubReply(status=429)
    with pytest.raises(openai.RateLimitError) as ei:
        c.chat.completions.create(model="m", messages=MSGS)
    assert ei.value.status_code == 429 and "429" in ei.value.message
    server.handler = lambda req: StubReply(status=400)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="m", messages=MSGS)

    def boom(req):
        raise RuntimeError("handler bug")

    server.handler = boom
    with pytest.raises(openai.InternalServerError, match="handler bug"):
        c.chat.completions.create(model="m", messages=MSGS)


def test_faults_reset_malformed_truncated(server):
    c = client(server)
    server.handler = lambda req: StubReply(fault="reset")
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="m", messages=MSGS)
    server.handler = lambda req: StubReply(fault="malformed")
    with pytest.raises(Exception):  # openai v3 surfaces json.JSONDecodeError (a ValueError)
        c.chat.completions.create(model="m", messages=MSGS)
    server.handler = lambda req: StubReply(content='{"question": "what is the capital", "answer": "Paris"}',
                                           fault="truncated_json")
    r = c.chat.completions.create(model="m", messages=MSGS)
    assert r.choices[0].finish_reason == "length"
    with pytest.raises(ValueError):
        json.loads(r.choices[0].message.content)
    assert server.count() == 3


def test_timeout_and_fast_stop():
    srv = StubServer(lambda req: StubReply(content="late", delay=30)).start()
    c = client(srv, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="m", messages=MSGS)
    # a client still waiting while the server stops must not hang the stop
    errs = []
    th = threading.Thread(target=lambda: errs.append(
        pytest.raises(openai.APIConnectionError, client(srv, timeout=60).chat.completions.create,
                      model="m", messages=MSGS)))
    th.start()
    while srv.count() < 2:
        time.sleep(0.01)
    srv.stop()
    th.join(5)
    assert not th.is_alive() and errs
    assert time.monotonic() - t0 < 5
    assert not [t for t in threading.enumerate() if t.name == "qagen-stub-server"]


def test_chat_logprobs(server):
    server.handler = lambda req: StubReply(content="yes", logprobs=[("yes", -0.1), ("no", -2.3)])
    c = client(server)
    r = c.chat.completions.create(model="m", messages=MSGS, logprobs=True, top_logprobs=2, max_tokens=1)
    first = r.choices[0].logprobs.content[0]
    assert first.token == "yes" and first.logprob == -0.1 and first.bytes == list(b"yes")
    assert [(t.token, t.logprob) for t in first.top_logprobs] == [("yes", -0.1), ("no", -2.3)]
    # not requested -> not returned
    assert c.chat.completions.create(model="m", messages=MSGS).choices[0].logprobs is None


def test_completions_endpoint(server):
    server.handler = lambda req: StubReply(content=" yes", logprobs=[(" yes", -0.05), (" no", -3.0)])
    c = client(server)
    r = c.completions.create(model="base", prompt="Is the sky blue? Answer:", max_tokens=1, logprobs=2)
    assert r.choices[0].text == " yes" and r.object == "text_completion" and r.model == "base"
    assert r.choices[0].logprobs.tokens == [" yes"]
    assert r.choices[0].logprobs.top_logprobs == [{" yes": -0.05, " no": -3.0}]
    assert r.usage.prompt_tokens == 5
    assert server.count("/v1/completions") == 1 and server.requests[-1]["_path"] == "/v1/completions"
    assert server.requests[-1]["prompt"] == "Is the sky blue? Answer:"


def test_api_key_models_health():
    with StubServer(api_key="sekrit") as srv:
        with pytest.raises(openai.AuthenticationError):
            client(srv, key="wrong").chat.completions.create(model="m", messages=MSGS)
        assert srv.count() == 0
        c = client(srv, key="sekrit")
        assert c.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == "stub reply"
        assert [m.id for m in c.models.list()] == ["stub-model"]
        import urllib.request

        with urllib.request.urlopen(srv.base_url.removesuffix("/v1") + "/health") as resp:
            assert json.load(resp) == {"status": "ok"}
        req = urllib.request.Request(srv.base_url + "/chat/completions", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(req)
        assert ei.value.code == 401
        ei.value.close()


def test_fault_injector_rate_and_determinism():
    def run(seed):
        fi = FaultInjector(0.2, seed=seed)
        replies = [fi({"_path": "/v1/chat/completions", "messages": MSGS}) for _ in range(2000)]
        return fi, replies

    fi, replies = run(1)
    n = sum(fi.injected.values())
    assert 300 < n < 500, fi.injected
    assert set(fi.injected) == set(FaultInjector.ALL_KINDS)
    assert run(1)[0].injected == fi.injected and run(2)[0].injected != fi.injected
    assert sum(r.status == 429 for r in replies) == fi.injected["429"]
    assert sum(r.fault == "truncated_json" for r in replies) == fi.injected["length"]
    with pytest.raises(ValueError):
        FaultInjector(0.1, seed=0, kinds=("nope",))


async def _hammer(url, n, conc, body, timeout=None):
    statuses = []
    it = iter(range(n))
    to = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc), timeout=to) as s:
        async def worker():
            for _ in it:
                try:
                    async with s.post(url, json=body) as r:
                        await r.read()
                        statuses.append(r.status)
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    statuses.append(type(e).__name__)
        await asyncio.gather(*(worker() for _ in range(conc)))
    return statuses


def test_fault_injector_over_http():
    fi = FaultInjector(0.3, seed=3, timeout_delay=5)
    body = {"model": "m", "messages": MSGS}
    with StubServer(fi) as srv:
        t0 = time.monotonic()
        statuses = asyncio.run(_hammer(srv.base_url + "/chat/completions", 300, 32, body, timeout=0.5))
    assert time.monotonic() - t0 < 5
    assert len(statuses) == 300 and fi.total == 300
    assert 60 < sum(fi.injected.values()) < 120
    assert statuses.count(429) == fi.injected["429"]
    assert statuses.count(503) == fi.injected["503"]
    assert statuses.count(500) == fi.injected["500"]


def test_serves_many_concurrent_requests():
    """2,000 schema-constrained requests, 64 at a time, all answered (its speed: benchmarks/instant_stub.py)."""
    rf = {"type": "json_schema", "json_schema": {"name": "qa", "schema": SCHEMA}}
    body = {"model": "m", "messages": MSGS, "response_format": rf}
    with StubServer() as srv:
        statuses = asyncio.run(_hammer(srv.base_url + "/chat/completions", 2000, 64, body))
        assert statuses == [200] * 2000 and srv.count() == 2000
