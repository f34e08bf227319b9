"""A lean JSON-over-HTTP transport for OpenAI-compatible endpoints (``--transport aiohttp``).

The default chat transport is the ``openai`` SDK (on its aiohttp client,
``qagen.llm.openai_http``). This one is opt-in, for many endpoints at vLLM
scale where the client must not be the bottleneck: one aiohttp session posting
orjson bytes, about 1,200-1,500 requests/s end to end against the SDK's
550-590 on a 2-core box (benchmarks/RESULTS.md, "Throughput"). The wire format is
the same OpenAI JSON.

Errors carry the SDK's class names (``APIConnectionError``, ``APITimeoutError``,
HTTP status), so the failures table reads the same whichever transport ran.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

try:  # several times faster than stdlib json for these bodies
    import orjson

    _dumps = orjson.dumps
    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; stdlib fallback keeps it optional

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    _loads = json.loads


class APIConnectionError(Exception):
    """The connection failed or was dropped before a full reply arrived (retryable)."""


class APITimeoutError(APIConnectionError):
    """No full reply within the request timeout (retryable)."""


class APIStatusError(Exception):
    """The server answered with a non-2xx status."""

    def __init__(self, status_code: int, message: str):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message


def _error_message(raw: bytes) -> str:
    try:
        body = _loads(raw)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    except ValueError:
        pass
    return raw[:200].decode("utf-8", "replace")


def encode(obj: Any) -> bytes:
    """A request body as JSON bytes (orjson)."""
    return _dumps(obj)


def decode_object(raw: bytes) -> dict[str, Any]:
    """A 200 reply's JSON object; a non-JSON body raises (orjson.)JSONDecodeError, a json.JSONDecodeError."""
    reply = _loads(raw)
    if not isinstance(reply, dict):
        raise APIConnectionError("reply body is not a JSON object")
    return reply


class JSONTransport:
    """POST JSON to ``base_url + path`` over one pooled aiohttp session (created inside the running loop).

    ``limit`` caps open connections; the caller's own semaphore decides how
    many requests are in flight, so keep ``limit`` >= that.
    """

    def __init__(self, base_url: str, *, api_key: str, timeout: float, limit: int):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._limit = max(1, limit)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers, auto_decompress=True
            )
        return self._session

    async def post(self, path: str, body: dict[str, object]) -> dict[str, Any]:
        """The decoded JSON reply; raises APIStatusError, APIConnectionError/APITimeoutError or JSONDecodeError."""
        session = self._open()
        try:
            async with session.post(self.base_url + path, data=_dumps(body)) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError as exc:
            raise APITimeoutError(f"no reply within {self._timeout.total} s") from exc
        except aiohttp.ClientError as exc:
            raise APIConnectionError(f"{type(exc).__name__}: {exc}") from exc
        if status >= 300:
            raise APIStatusError(status, _error_message(raw))
        return decode_object(raw)

    async def get_ok(self, path: str) -> bool:
        """True when ``GET base_url + path`` answers below 500 (used as a health check)."""
        session = self._open()
        try:
            async with session.get(self.base_url + path, timeout=aiohttp.ClientTimeout(total=5)) as response:
                await response.read()
                return response.status < 500
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
