"""A small OpenAI-compatible HTTP server for tests and benchmarks.

Real HTTP on loopback (aiohttp.web in a background thread with its own event
loop), so synchronous tests and separate asyncio code can both talk to it::

    with StubServer() as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
GET /health. aiohttp is a test extra, not a base dependency of qagen.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from qagen.testing.json_schema import schema_instance

try:  # optional speed-up; stdlib json otherwise
    import orjson

    _loads, _dumps = orjson.loads, orjson.dumps

    def _key(obj: Any) -> Any:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
except ImportError:  # pragma: no cover
    _loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False).encode()

    def _key(obj: Any) -> Any:
        return json.dumps(obj, sort_keys=True)

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODEL_NAME = "stub-model"


@dataclass
class StubReply:
    """What a handler returns for one request."""

    content: str = ""  # assistant message content (chat) or text (completions)
    finish_reason: str = "stop"
    status: int = 200  # non-200 -> OpenAI-style error JSON body
    delay: float = 0.0  # seconds to wait before replying (cut short by stop())
    fault: str | None = None  # None | "reset" | "malformed" | "truncated_json"
    logprobs: list[tuple[str, float]] | None = None  # first-token top logprobs, best first
    prompt_tokens: int | None = None  # usage; default: rough word counts
    completion_tokens: int | None = None
    headers: dict[str, str] | None = None  # extra response headers (e.g. Retry-After)


# gets the request body plus "_path"; may also be async (return an awaitable)
Handler = Callable[[dict], StubReply | str | Awaitable[StubReply | str]]


_schema_cache: dict[Any, str] = {}  # sorted JSON dump of a schema -> instance JSON


def default_handler(req: dict) -> StubReply:
    """Schema-valid JSON when the request carries a JSON schema, else "stub reply".

    Looks at response_format (json_schema / json_object) and the vLLM
    extensions guided_json / structured_outputs.json. The instance is built
    once per distinct schema and cached: same schema -> same content.
    """
    schema, rf = None, req.get("response_format")
    if isinstance(rf, dict):
        if rf.get("type") == "json_schema":
            schema = (rf.get("json_schema") or {}).get("schema")
        elif rf.get("type") == "json_object":
            schema = {"type": "object"}
    if schema is None:
        schema = req.get("guided_json") or (req.get("structured_outputs") or {}).get("json")
        schema = json.loads(schema) if isinstance(schema, str) else schema
    if not isinstance(schema, dict):
        return StubReply(content="stub reply")
    key = _key(schema)
    text = _schema_cache.get(key)
    if text is None:
        text = _schema_cache[key] = json.dumps(schema_instance(schema))
    return StubReply(content=text)


class FaultInjector:
    """Wraps a handler; turns ~``rate`` of requests into faults, deterministically per seed.

    kinds: "500", "503", "429" (HTTP errors; 429 carries Retry-After: 0),
    "timeout" (reply delayed ``timeout_delay`` s; cut short by StubServer.stop()),
    "reset" (connection dropped), "malformed" (200 with a non-JSON body),
    "length" (content cut mid-string, finish_reason "length").
    ``injected`` counts faults by kind; ``total`` counts calls. The fault
    sequence is fixed by the seed (which request gets which depends on arrival order).
    """

    ALL_KINDS = ("500", "503", "429", "timeout", "reset", "malformed", "length")

    def __init__(self, rate: float, seed: int = 0, kinds=ALL_KINDS, *,
                 handler: Handler | None = None, timeout_delay: float = 30.0):
        if set(kinds) - set(self.ALL_KINDS):
            raise ValueError(f"unknown fault kinds {sorted(set(kinds) - set(self.ALL_KINDS))}")
        self.rate, self.kinds, self.timeout_delay = rate, tuple(kinds), timeout_delay
        self.handler = handler or default_handler
        self.injected: Counter = Counter()
        self.total = 0
        self._rng, self._lock = random.Random(seed), threading.Lock()

    def __call__(self, req: dict) -> Any:
        with self._lock:
            self.total += 1
            kind = self._rng.choice(self.kinds) if self._rng.random() < self.rate else None
            if kind:
                self.injected[kind] += 1
        if kind in ("500", "503", "429"):
            return StubReply(status=int(kind), headers={"Retry-After": "0"} if kind == "429" else None)
        if kind in ("reset", "malformed"):
            return StubReply(fault=kind)
        if kind is None:
            return self.handler(req)
        return self._wrap(self.handler(req), kind)

    async def _await(self, reply: Awaitable, kind: str) -> StubReply:
        return self._wrap(await reply, kind)

    def _wrap(self, reply: Any, kind: str) -> Any:
        if inspect.isawaitable(reply):
            return self._await(reply, kind)
        reply = StubReply(content=reply) if isinstance(reply, str) else reply
        if kind == "timeout":
            reply.delay = max(reply.delay, self.timeout_delay)
        else:  # "length"
            reply.fault = "truncated_json"
        return reply


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                429: "rate_limit_exceeded", 500: "server_error", 503: "service_unavailable"}


def _words(x: Any) -> int:
    if isinstance(x, str):
        return len(x.split())
    if isinstance(x, list):
        return sum(_words(i) for i in x)
    return _words(x.get("content")) + _words(x.get("text")) if isinstance(x, dict) else 0


def _tok(t: str, lp: float) -> dict:
    return {"token": t, "logprob": lp, "bytes": list(t.encode())}


class StubServer:
    """OpenAI-compatible server on 127.0.0.1:<OS port>; see the module docstring.

    ``handler`` may be swapped at any time; ``requests`` holds every request
    body (with "_path") in arrival order unless ``record_requests`` is False.
    """

    def __init__(self, handler: Handler | None = None, *, api_key: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, record_requests: bool = True):
        self.handler: Handler = handler or default_handler
        self.api_key, self.host, self.port, self._want_port = api_key, host, port, port
        self.record_requests = record_requests
        self.requests: list[dict] = []
        self.base_url = ""
        self._counts: Counter = Counter()
        self._lock = threading.Lock()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def start(self) -> StubServer:
        if self._thread is not None:
            raise RuntimeError("StubServer already started")
        ready, err = threading.Event(), []
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            try:
                loop.run_until_complete(self._astart())
            except BaseException as e:  # pragma: no cover - e.g. port in use
                err.append(e)
            ready.set()
            if not err:
                loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="qagen-stub-server", daemon=True)
        self._thread.start()
        ready.wait()
        if err:
            self._thread.join()
            self._thread = None
            raise err[0]
        return self

    async def _astart(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post(CHAT_PATH, self._handle)
        app.router.add_post(COMPLETIONS_PATH, self._handle)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self._want_port, backlog=1024).start()
        self.port = self._runner.addresses[0][1]
        self.base_url = f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        """Shut down (pending delayed requests get their connection dropped); joins the thread."""
        if self._thread is None:
            return

        async def shutdown() -> None:
            self._stopping.set()
            await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, path: str = CHAT_PATH) -> int:
        return self._counts[path]

    # ---- HTTP side (runs on the server thread's loop)
    @staticmethod
    async def _json(obj: Any, status: int = 200, headers: dict | None = None) -> web.Response:
        return web.Response(body=_dumps(obj), status=status, content_type="application/json", headers=headers)

    def _error(self, status: int, message: str, headers: dict | None = None) -> Awaitable[web.Response]:
        etype = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": etype, "code": etype, "param": None}}
        return self._json(body, status, headers)

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _health(self, request: web.Request) -> web.Response:
        return await self._json({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return await self._error(401, "Invalid API key")
        model = {"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "qagen"}
        return await self._json({"object": "list", "data": [model]})

    @staticmethod
    def _reset(request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            try:  # linger 0 -> RST instead of FIN
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (OSError, AttributeError):
                pass
            transport.abort()
        return web.Response(status=500)  # never reaches the client

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        if not self._authorized(request):
            return await self._error(401, "Invalid API key")
        try:
            body = _loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as e:
            return await self._error(400, f"invalid JSON body: {e}")
        body["_path"] = path
        with self._lock:
            if self.record_requests:
                self.requests.append(body)
            self._counts[path] += 1
            self._seq += 1
            seq = self._seq
        try:
            reply = self.handler(body)
            if inspect.isawaitable(reply):
                reply = await reply
        except Exception as e:
            return await self._error(500, f"stub handler raised {type(e).__name__}: {e}")
        if isinstance(reply, str):
            reply = StubReply(content=reply)
        if reply.delay > 0:
            try:  # stop() sets _stopping: drop the connection instead of waiting it out
                await asyncio.wait_for(self._stopping.wait(), reply.delay)
                return self._reset(request)
            except TimeoutError:
                pass
        if reply.fault == "reset":
            return self._reset(request)
        if reply.fault == "malformed":
            return web.Response(text='{"id": "chatcmpl-stub", "choices": [ <html>oops',
                                content_type="application/json", headers=reply.headers)
        if reply.status != 200:
            return await self._error(reply.status, f"stub error {reply.status}", reply.headers)
        content, finish = reply.content, reply.finish_reason
        if reply.fault == "truncated_json":
            content, finish = content[: max(1, len(content) * 2 // 3)], "length"
        elif reply.fault is not None:
            return await self._error(500, f"unknown stub fault {reply.fault!r}")
        chat = path == CHAT_PATH
        ptok = reply.prompt_tokens
        ptok = _words(body.get("messages") if chat else body.get("prompt")) if ptok is None else ptok
        ctok = len(content.split()) if reply.completion_tokens is None else reply.completion_tokens
        lps, lp_out = reply.logprobs, None
        if chat:
            if body.get("logprobs") and lps:
                n = body.get("top_logprobs")
                tops = lps[:n] if isinstance(n, int) and n > 0 else lps
                lp_out = {"content": [{**_tok(*lps[0]), "top_logprobs": [_tok(*t) for t in tops]}],
                          "refusal": None}
            choice = {"index": 0, "message": {"role": "assistant", "content": content},
                      "finish_reason": finish, "logprobs": lp_out}
        else:
            n = body.get("logprobs")
            if n not in (None, False) and lps:
                tops = lps[:n] if type(n) is int and n > 0 else lps
                lp_out = {"tokens": [lps[0][0]], "token_logprobs": [lps[0][1]],
                          "top_logprobs": [dict(tops)], "text_offset": [0]}
            choice = {"index": 0, "text": content, "finish_reason": finish, "logprobs": lp_out}
        return await self._json({
            "id": f"{'chatcmpl' if chat else 'cmpl'}-stub{seq}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or MODEL_NAME,
            "choices": [choice],
            "usage": {"prompt_tokens": ptok, "completion_tokens": ctok, "total_tokens": ptok + ctok},
        }, headers=reply.headers)
