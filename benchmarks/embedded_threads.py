"""Benchmark: llama.cpp threads and parallel slots for the embedded model.

    python benchmarks/embedded_threads.py 2x4 1x4 2x8     # THREADSxSLOTS, one line each

Sends the same 12 real perspective requests (built from samples/docs by qagen
itself) at full concurrency and reports completion tokens per second.
Temperature is forced to 0 so every configuration decodes similar text.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace
from pathlib import Path

from qagen.config import load_settings
from qagen.corpus.chunker import Chunker
from qagen.corpus.reader import iter_documents
from qagen.llm.embedded import MODEL_NAME, EmbeddedServer, ServerConfig, find_model
from qagen.llm.openai_http import OpenAIHTTP
from qagen.pipeline.assemble import chunker_settings
from qagen.prompting.prompts import load_prompts
from qagen.prompting.requests import build_request


def requests(n: int = 12):
    prompts = load_prompts()
    chunker = Chunker(chunker_settings(load_settings()))
    out = []
    for doc in iter_documents(Path("samples/docs")):
        for chunk in chunker.chunk(doc):
            for p in prompts.perspectives:
                if p.role == "generator" and p.scope == "chunk":
                    out.append(replace(build_request(prompts, p, doc, chunk, MODEL_NAME), temperature=0.0))
    return out[:n]


async def measure(url: str, slots: int, reqs) -> tuple[float, int, int]:
    client = OpenAIHTTP(url, concurrency=slots)
    started = time.perf_counter()
    replies = await asyncio.gather(*(client.complete(r) for r in reqs))
    wall = time.perf_counter() - started
    await client.aclose()
    return wall, sum(r.completion_tokens for r in replies), sum(r.prompt_tokens for r in replies)


def main() -> None:
    reqs = requests()
    for spec in sys.argv[1:] or ["2x4", "1x4"]:
        threads, slots = (int(x) for x in spec.split("x"))
        server = EmbeddedServer(ServerConfig(str(find_model()), threads, slots, 2048))
        url = server.start()
        try:
            wall, completion, prompt = asyncio.run(measure(url, slots, reqs))
        finally:
            server.stop()
        print(f"| {threads} | {slots} | {len(reqs)} | {wall:.1f} | {prompt} | {completion} | {completion / wall:.1f} |")


if __name__ == "__main__":
    print("| threads | slots | requests | wall s | prompt tok | completion tok | completion tok/s |")
    print("|---|---|---|---|---|---|---|")
    main()
