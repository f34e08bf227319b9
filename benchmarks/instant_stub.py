"""An instant OpenAI-compatible stub server, for measuring qagen's own overhead.

It answers ``POST /v1/chat/completions`` at once with a schema-valid reply
(one instance per JSON schema, built by ``qagen.testing.schema_instance``,
its strings made distinct per request)
and ``GET /v1/models``. Plain asyncio protocol + orjson, HTTP/1.1 keep-alive:
no web framework, so one core serves several thousand requests per second and
the client under test stays the bottleneck. Run it in its own process::

    python benchmarks/instant_stub.py --port 8765        # prints "READY <port>" when listening

``qagen.testing.StubServer`` (aiohttp, fault injection) is the server for tests;
this one exists only to be fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import orjson
import xxhash

from qagen.testing.json_schema import schema_instance

_MODELS = orjson.dumps({"object": "list", "data": [{"id": "stub-model", "object": "model", "created": 0,
                                                    "owned_by": "qagen"}]})


def _response(body: bytes, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


_CONSONANTS, _VOWELS = "bcdfghjklmnprstvwz", "aeiou"


def _word(h: int) -> str:
    """A pronounceable 5-letter word picked by ``h`` (18*5*18*5*18 = 145,800 of them)."""
    out = []
    for i in range(5):
        pool = _CONSONANTS if i % 2 == 0 else _VOWELS
        out.append(pool[h % len(pool)])
        h //= len(pool)
    return "".join(out)


class _Replies:
    """Reply content per distinct schema (built once), and a request counter.

    ``words``: each string's 12-character tag slot becomes two words drawn by a
    hash of the request and the string's position ("kobal tisem 3"), so
    questions share vocabulary the way real ones do (rarely), instead of all
    reading "<hex tag> N". Near-duplicate detection then does the work it does
    on real questions; with hex tags every question shares its number token
    with thousands of others, a pathological case for an LSH index.
    """

    def __init__(self, words: bool = False) -> None:
        self.by_schema: dict[bytes, str] = {}
        self.count = 0
        self.words = words

    def chat(self, raw: bytes) -> bytes:
        self.count += 1
        req = orjson.loads(raw)
        schema = ((req.get("response_format") or {}).get("json_schema") or {}).get("schema")
        if schema is None:
            content = "stub reply"
        else:
            key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
            content = self.by_schema.get(key) or self.by_schema.setdefault(key, json.dumps(schema_instance(schema)))
            # distinct replies (so dedup sees distinct pairs), same length (so maxLength/minLength still hold)
            # ... and the same for the same request, whatever the order they arrive in (runs can be compared)
            if self.words:
                parts = content.split("stub answer ")
                seed = xxhash.xxh64_intdigest(raw)
                content = parts[0] + "".join(
                    f"{_word(xxhash.xxh64_intdigest(b'%d' % i, seed))} {_word(seed + i)} {part}"
                    for i, part in enumerate(parts[1:]))
            else:
                content = content.replace("stub answer ", f"{xxhash.xxh64_hexdigest(raw)[:11]} ")
        return orjson.dumps({
            "id": f"chatcmpl-{self.count}", "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model") or "stub-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop",
                         "logprobs": None}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140},
        })


class _Http(asyncio.Protocol):
    """Minimal HTTP/1.1: Content-Length bodies only (what HTTP clients send for JSON), keep-alive."""

    def __init__(self, replies: _Replies) -> None:
        self.replies = replies
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            method, path = head.split(" ", 2)[:2]
            if method == "POST" and path.endswith("/chat/completions"):
                out = _response(self.replies.chat(body))
            elif path.endswith(("/models", "/health")):
                out = _response(_MODELS)
            else:
                out = _response(b'{"error": {"message": "not found"}}', "404 Not Found")
            self.transport.write(out)  # type: ignore[attr-defined]


async def serve(port: int, words: bool = False) -> None:
    replies = _Replies(words)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(replies), "127.0.0.1", port, backlog=4096)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--words", action="store_true", help="word-like strings instead of hex tags (see _Replies)")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, args.words))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
