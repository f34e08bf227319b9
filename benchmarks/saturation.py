"""Saturation: does qagen keep the engine full? qagen's generation throughput vs a raw replay of the same requests.

One embedded llama.cpp server (SmolLM2-135M, ``--threads`` threads,
``--slots`` parallel slots) serves three phases in turn:

1. raw replay: every request of the corpus's perspective suite, all in flight
   at once, from a bare aiohttp loop (no qagen code in the path);
2. ``qagen.pipeline.ingest`` of the same corpus against the same server
   (generation only: refinement and judge off; a fresh state folder);
3. the raw replay again (so a drift in the box's background load shows; ``--no-repeat`` skips it).

Throughput = completion tokens / wall seconds (the prompts' temperatures
are kept, so reply lengths vary a little between phases; tokens/s does not
depend on them). The figure is qagen / mean(raw 1, raw 3).

    python benchmarks/saturation.py --docs 2 --slots 4 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qagen.chunker import Chunker
from qagen.config import load_settings
from qagen.embedded import MODEL_NAME, EmbeddedServer, ServerConfig, find_model
from qagen.generate import build_request
from qagen.llm import ChatRequest
from qagen.pipeline import chunker_settings, ingest
from qagen.prompts import load_prompts
from qagen.reader import iter_documents
from qagen.testing.crash import write_corpus


def suite_requests(docs: Path, settings_base_url: str) -> list[ChatRequest]:
    """The generator requests qagen plans for this corpus (same chunker settings as the ingest phase)."""
    prompts = load_prompts(None)
    chunker = Chunker(chunker_settings(load_settings(base_url=settings_base_url, model=MODEL_NAME)))
    out = []
    for doc in iter_documents(docs):
        for chunk in chunker.chunk(doc):  # type: ignore[union-attr, arg-type]
            for p in prompts.perspectives:
                if p.role == "generator" and (p.scope == "chunk" or chunk.index == 0):
                    out.append(build_request(prompts, p, doc, chunk, MODEL_NAME))  # type: ignore[arg-type]
    return out


def body(r: ChatRequest) -> dict[str, object]:
    return {
        "model": r.model, "messages": [{"role": m.role, "content": m.content} for m in r.messages],
        "temperature": r.temperature, "max_tokens": r.max_tokens,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": r.schema_name, "schema": json.loads(r.json_schema or "{}"), "strict": True}},
    }


async def raw_replay(base_url: str, requests: list[ChatRequest]) -> dict[str, float]:
    timeout = aiohttp.ClientTimeout(total=1800)
    cached = [0]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def one(r: ChatRequest) -> tuple[int, int]:
            async with session.post(base_url + "/chat/completions", json=body(r)) as response:
                reply = await response.json()
                timings = reply.get("timings") or {}  # llama.cpp: prompt tokens served from its prefix cache
                cached[0] += int(timings.get("cache_n") or 0)
                return reply["usage"]["prompt_tokens"], reply["usage"]["completion_tokens"]

        started = time.perf_counter()
        usage = await asyncio.gather(*(one(r) for r in requests))
        wall = time.perf_counter() - started
    completion = sum(c for _, c in usage)
    return {"requests": len(requests), "wall_s": round(wall, 1), "completion_tokens": completion,
            "prompt_tokens": sum(p for p, _ in usage), "prompt_tokens_from_cache": cached[0],
            "tok_per_s": round(completion / wall, 2)}


def qagen_run(base_url: str, docs: Path, out: Path, concurrency: int) -> dict[str, float]:
    # the raw client waits up to 30 min per request; qagen gets the same patience (its default is 300 s)
    settings = load_settings(base_url=base_url, model=MODEL_NAME, concurrency=concurrency, refine=False, judge=False,
                             request_timeout=1800)
    started = time.perf_counter()
    summary = ingest(docs, out, settings)
    wall = time.perf_counter() - started
    return {"requests": summary.requests_sent, "wall_s": round(wall, 1), "completion_tokens": summary.completion_tokens,
            "prompt_tokens": summary.prompt_tokens, "tok_per_s": round(summary.completion_tokens / wall, 2),
            "status": summary.status}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="qagen's --concurrency")
    parser.add_argument("--no-repeat", action="store_true", help="skip the second raw replay (saves time)")
    args = parser.parse_args()
    server = EmbeddedServer(ServerConfig(str(find_model()), args.threads, args.slots, 2048))
    url = server.start()
    result: dict[str, object] = {"slots": args.slots, "threads": args.threads, "load_before": os.getloadavg()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            docs = Path(tmp) / "docs"
            write_corpus(docs, args.docs)
            requests = suite_requests(docs, url)
            result["raw_1"] = asyncio.run(raw_replay(url, requests))
            print(result["raw_1"], file=sys.stderr)
            result["qagen"] = qagen_run(url, docs, Path(tmp) / "out", args.concurrency)
            print(result["qagen"], file=sys.stderr)
            if not args.no_repeat:
                result["raw_2"] = asyncio.run(raw_replay(url, requests))
                print(result["raw_2"], file=sys.stderr)
    finally:
        server.stop()
    raws = [result[k]["tok_per_s"] for k in ("raw_1", "raw_2") if k in result]  # type: ignore[index]
    raw = sum(raws) / len(raws)
    result["ratio_qagen_over_raw"] = round(result["qagen"]["tok_per_s"] / raw, 3)  # type: ignore[index]
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
