"""Saturation: does qagen keep the engine full? qagen's generation throughput vs a raw replay of the same requests.

One embedded llama.cpp server (SmolLM2-135M, ``--threads`` threads,
``--slots`` parallel slots) serves three phases in turn:

1. raw replay: every request of the corpus's perspective suite, all in flight
   at once, from a bare aiohttp loop (no qagen code in the path);
2. ``qagen.pipeline.ingest.ingest`` of the same corpus against the same server
   (generation only: refinement and judge off; a fresh state folder);
3. the raw replay again (so a drift in the box's background load shows; ``--no-repeat`` skips it).

``--rounds N`` repeats (qagen, raw) N times, so every qagen phase sits
between two raw phases: raw, qagen, raw, qagen, raw, ...

Throughput = completion tokens / wall seconds (the prompts' temperatures
are kept, so reply lengths vary a little between phases; tokens/s does not
depend on them). Each qagen phase is divided by the mean of the raw phases
either side of it; the figure reported is the mean of those ratios.

Tokens/s moves with the box's background load (llama.cpp with as many
threads as cores slows down several-fold when another process takes a core),
so each phase also samples llama.cpp's ``/slots`` every 0.25 s: the mean
number of busy slots, and the share of samples with every slot busy. That
occupancy says whether the client keeps the engine full, whatever the load.

    python benchmarks/saturation.py --docs 2 --slots 4 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Self

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qagen.config import load_settings
from qagen.corpus.chunker import Chunker
from qagen.corpus.reader import iter_documents
from qagen.llm.base import ChatRequest
from qagen.llm.embedded import MODEL_NAME, EmbeddedServer, ServerConfig, find_model
from qagen.pipeline.assemble import chunker_settings
from qagen.pipeline.ingest import ingest
from qagen.prompting.prompts import load_prompts
from qagen.prompting.requests import build_request
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


class SlotSampler:
    """Polls llama.cpp's ``/slots`` in a thread: how many slots are processing, sampled every ``interval`` s."""

    def __init__(self, root: str, interval: float = 0.25):
        self.root, self.interval = root, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.root + "/slots", timeout=5) as r:
                    self.samples.append(sum(1 for slot in json.loads(r.read()) if slot.get("is_processing")))
            except OSError:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self, slots: int) -> dict[str, float]:
        n = len(self.samples) or 1
        return {"mean_busy_slots": round(sum(self.samples) / n, 2),
                "share_all_slots_busy": round(sum(1 for b in self.samples if b >= slots) / n, 3),
                "slot_samples": len(self.samples)}


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
    parser.add_argument("--no-repeat", action="store_true", help="skip the last raw replay (saves time)")
    parser.add_argument("--rounds", type=int, default=1, help="(qagen, raw) rounds after the first raw replay")
    args = parser.parse_args()
    server = EmbeddedServer(ServerConfig(str(find_model()), args.threads, args.slots, 2048))
    url = server.start()
    root = url.removesuffix("/v1")
    result: dict[str, object] = {"slots": args.slots, "threads": args.threads, "docs": args.docs,
                                 "load_before": os.getloadavg()}
    phases: list[tuple[str, dict[str, object]]] = []

    def phase(name: str, run: object) -> None:
        with SlotSampler(root) as sampler:
            row = run()  # type: ignore[operator]
        row.update(sampler.summary(args.slots))
        row["load_after"] = round(os.getloadavg()[0], 2)
        phases.append((name, row))
        result[name] = row
        print(name, row, file=sys.stderr, flush=True)

    try:
        with tempfile.TemporaryDirectory() as tmp:
            docs = Path(tmp) / "docs"
            write_corpus(docs, args.docs)
            requests = suite_requests(docs, url)
            # warm-up: one request, so the first phase does not pay for paging the model in
            asyncio.run(raw_replay(url, requests[:1]))
            phase("raw_1", lambda: asyncio.run(raw_replay(url, requests)))
            for i in range(1, args.rounds + 1):
                phase(f"qagen_{i}", lambda i=i: qagen_run(url, docs, Path(tmp) / f"out{i}", args.concurrency))
                if not (args.no_repeat and i == args.rounds):
                    phase(f"raw_{i + 1}", lambda: asyncio.run(raw_replay(url, requests)))
    finally:
        server.stop()
    ratios = []
    for i in range(1, args.rounds + 1):
        raws = [result[k]["tok_per_s"] for k in (f"raw_{i}", f"raw_{i + 1}") if k in result]  # type: ignore[index]
        ratios.append(round(result[f"qagen_{i}"]["tok_per_s"] / (sum(raws) / len(raws)), 3))  # type: ignore[index]
    result["ratios_qagen_over_adjacent_raw"] = ratios
    result["ratio_qagen_over_raw"] = round(sum(ratios) / len(ratios), 3)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
