"""A tiny logging reverse proxy: forwards every request to an OpenAI-compatible server and logs its ``usage``.

Used by ``benchmarks/peer_sdk.py`` so that qagen and synthetic-data-kit are
counted the same way, by the same code, in front of the same server. Each
reply becomes one JSON line in ``--log``: path, status, start/end times,
prompt and completion tokens (0 when the reply has no ``usage``), and
``finish_reason`` and the first 400 characters of the first choice's text. Streaming replies are not parsed
(neither tool streams).

    python benchmarks/usage_proxy.py --upstream http://127.0.0.1:PORT --log usage.jsonl
    # prints its own address (http://127.0.0.1:PORT2) on stdout, then serves until killed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp
from aiohttp import web

HOP = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding", "content-encoding"}


def make_app(upstream: str, log_path: str) -> web.Application:
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the app

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=3600), auto_decompress=True
        )

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()
        log.close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        started = time.time()
        async with request.app["session"].request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as upstream_response:
            payload = await upstream_response.read()
            status = upstream_response.status
            content_type = upstream_response.headers.get("Content-Type", "application/json")
        record: dict[str, object] = {"path": request.path, "status": status, "start": started, "end": time.time(),
                                     "prompt_tokens": 0, "completion_tokens": 0, "finish_reason": None}
        if request.method == "POST":
            try:
                reply = json.loads(payload)
                usage = reply.get("usage") or {}
                record["prompt_tokens"] = int(usage.get("prompt_tokens") or 0)
                record["completion_tokens"] = int(usage.get("completion_tokens") or 0)
                choices = reply.get("choices") or [{}]
                record["finish_reason"] = choices[0].get("finish_reason")
                content = (choices[0].get("message") or {}).get("content") or choices[0].get("text") or ""
                record["content_head"] = str(content)[:400]  # enough to see what a parser was given
            except (ValueError, AttributeError):
                pass
            log.write(json.dumps(record) + "\n")
            log.flush()
        return web.Response(body=payload, status=status, content_type=content_type.split(";")[0])

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def serve(upstream: str, log_path: str, port: int) -> None:
    runner = web.AppRunner(make_app(upstream.rstrip("/"), log_path), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    sock = site._server.sockets[0]  # type: ignore[union-attr]
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="server root, without /v1")
    parser.add_argument("--log", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.upstream, args.log, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
