"""Junk replies, as a weak model writes them: every string of a JSON reply turned into one or two characters.

``JunkInjector`` wraps a stub handler (``qagen/testing/stub_server.py``) and, for about ``rate`` of the requests
that carry a JSON schema, replaces each string value of the reply with a junk token (:data:`JUNK`), except its questions and quotes (junk
there is caught as no question, or fails the schema): "l" where a quiz answer should be, under a quote the passage
holds, so grounding passes it. The filters
must drop every such pair (issue 29). Deterministic per seed (which request gets junk depends on arrival order).

Served on its own for a hand check (a stub with schema-valid replies, ``rate`` of them junk)::

    python -m qagen.testing.junk --junk-rate 0.3 --port 8123
    qagen ingest docs/ --base-url http://127.0.0.1:8123/v1 --model stub-model
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import threading
import time
from collections.abc import Awaitable
from typing import Any

from qagen.testing.stub_server import Handler, StubReply, StubServer, default_handler

JUNK = ("l", "m", "x", "I", "a.", "..", "-")  # what a 135M model or a broken server writes for a field
KEPT_KEYS = frozenset({"question", "questions", "quote"})  # junk there is caught as no question or no quote


class JunkInjector:
    """Wraps a handler; ``rate`` of its JSON replies come back with every string a :data:`JUNK` token."""

    def __init__(self, rate: float, seed: int = 0, handler: Handler | None = None):
        self.rate, self.handler = rate, handler or default_handler
        self.injected = 0
        self.total = 0
        self._rng, self._lock = random.Random(seed), threading.Lock()

    def __call__(self, req: dict) -> Any:
        with self._lock:
            self.total += 1
            junk = bool(req.get("response_format")) and self._rng.random() < self.rate
            self.injected += junk
        reply = self.handler(req)
        return self._wrap(reply) if junk else reply

    async def _await(self, reply: Awaitable) -> StubReply:
        return self._wrap(await reply)

    def _wrap(self, reply: Any) -> Any:
        if inspect.isawaitable(reply):
            return self._await(reply)
        reply = StubReply(content=reply) if isinstance(reply, str) else reply
        try:
            obj = json.loads(reply.content)
        except ValueError:
            return reply
        with self._lock:
            reply.content = json.dumps(self._junk(obj))
        return reply

    def _junk(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self._rng.choice(JUNK)
        if isinstance(obj, list):
            return [self._junk(x) for x in obj]
        if isinstance(obj, dict):
            return {k: v if k in KEPT_KEYS else self._junk(v) for k, v in obj.items()}
        return obj


def main() -> None:  # pragma: no cover - a hand check; the tests use JunkInjector in-process
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--junk-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with StubServer(JunkInjector(args.junk_rate, args.seed), port=args.port) as server:
        print(server.base_url, flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
