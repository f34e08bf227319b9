"""Overhead: how many requests per second qagen itself can push, against an instant stub server.

The stub (benchmarks/instant_stub.py) runs in its own process and answers at
once, so every figure here is client-side cost. Two parts, one run:

1. transports: the same real qagen requests (built from a synthetic chunk by
   the generator's own ``build_request``), ``--requests`` of them at
   ``--concurrency`` in flight, through (a) a bare aiohttp loop (the ceiling),
   (b) the openai SDK with its default httpx client, (c) the SDK with pool
   limits set to the concurrency, (d) the SDK's ``DefaultAioHttpClient``, and
   (e) qagen's ``OpenAIHTTP.complete`` (retries, semaphore, parsing included).
2. pipeline: ``qagen.pipeline.ingest.ingest`` end to end (read, chunk, render, call,
   validate, store, export) on a synthetic corpus; requests/s = requests sent /
   wall seconds of the whole ingest.

    python benchmarks/overhead.py --docs 400 --concurrency 64 [--profile out.txt]
    # issue 30's figure and its guard: 1,000 documents, 128 in flight, the broad suite (9 requests a document), the
    # default transport; exits 1 when requests/s falls more than 20 % below benchmarks/overhead_guard.json
    python benchmarks/overhead.py --docs 1000 --concurrency 128 --skip-transports --transport openai --suite broad --guard
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def instant_stub(words: bool = False) -> Iterator[str]:
    """Start benchmarks/instant_stub.py in its own process (``--words``: word-like replies); yield its base URL."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "instant_stub.py"), *(["--words"] if words else [])],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY"):
            raise RuntimeError(f"instant stub did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        proc.kill()
        proc.wait()


def write_corpus(folder: Path, n_docs: int, paragraphs: int = 3) -> None:
    """Small distinct markdown documents: one chunk each at the default chunk size."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        body = "\n\n".join(
            f"Paragraph {j} of report {i}: the council of district {i} approved budget line {i * 7 + j} "
            f"on day {(i + j) % 28 + 1}; councillor Ada{i} proposed it and {j + 3} members voted in favour."
            for j in range(paragraphs)
        )
        (folder / f"report-{i:05d}.md").write_text(f"# Report {i}\n\n## Summary\n\n{body}\n")


def sample_requests(n: int) -> list[object]:
    """``n`` real generator requests (distinct chunks, all perspectives), as the pipeline builds them."""
    from qagen.corpus.chunker import Chunker, ChunkerSettings
    from qagen.corpus.reader import iter_documents
    from qagen.prompting.prompts import load_prompts
    from qagen.prompting.requests import build_request

    prompts = load_prompts(None)
    chunker = Chunker(ChunkerSettings(chunk_size=1000, chunk_overlap=100))
    out: list[object] = []
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(Path(tmp), max(1, n // 8 + 1))
        for doc in iter_documents(Path(tmp)):
            for chunk in chunker.chunk(doc):  # type: ignore[arg-type]
                for prompt in prompts.perspectives:
                    if prompt.role == "generator" and (prompt.scope == "chunk" or chunk.index == 0):
                        out.append(build_request(prompts, prompt, doc, chunk, "stub-model"))  # type: ignore[arg-type]
                        if len(out) == n:
                            return out
    return out


def _cpu() -> float:
    """CPU seconds used by this process so far (all threads): a per-request cost the box's load does not skew."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


CPU_PER_REQUEST: dict[str, float] = {}  # last _drive's CPU ms per request, by case name


async def _drive(call: Callable[[object], Awaitable[object]], requests: list[object], concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(req: object) -> None:
        async with sem:
            await call(req)

    started, cpu = time.perf_counter(), _cpu()
    await asyncio.gather(*(one(r) for r in requests))
    CPU_PER_REQUEST["last"] = 1000 * (_cpu() - cpu) / len(requests)
    return len(requests) / (time.perf_counter() - started)


def _kwargs(req: object) -> dict[str, object]:
    r = req  # a qagen.llm.base.ChatRequest
    return {
        "model": r.model,  # type: ignore[attr-defined]
        "messages": [{"role": m.role, "content": m.content} for m in r.messages],  # type: ignore[attr-defined]
        "temperature": r.temperature,  # type: ignore[attr-defined]
        "max_tokens": r.max_tokens,  # type: ignore[attr-defined]
        "response_format": {"type": "json_schema", "json_schema": {
            "name": r.schema_name, "schema": json.loads(r.json_schema), "strict": True}},  # type: ignore[attr-defined]
    }


async def transports(base_url: str, requests: list[object], concurrency: int) -> dict[str, dict[str, float]]:
    import aiohttp
    import httpx2  # the SDK's HTTP library in openai>=3
    import openai
    import orjson

    from qagen.llm.openai_http import OpenAIHTTP

    async def bare() -> float:
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn, headers={"Content-Type": "application/json"}) as s:

            async def call(req: object) -> None:
                async with s.post(base_url + "/chat/completions", data=orjson.dumps(_kwargs(req))) as r:
                    orjson.loads(await r.read())

            return await _drive(call, requests, concurrency)

    async def sdk(**client_args: object) -> float:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, **client_args)  # type: ignore[arg-type]
        try:
            return await _drive(lambda req: client.chat.completions.create(**_kwargs(req)), requests, concurrency)
        finally:
            await client.close()

    async def qagen_client(kind: str = "aiohttp") -> float:
        llm = OpenAIHTTP(base_url, concurrency=concurrency, max_retries=2, transport_kind=kind)
        try:
            return await _drive(llm.complete, requests, concurrency)  # type: ignore[arg-type]
        finally:
            await llm.aclose()

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    cases: list[tuple[str, Callable[[], Awaitable[float]]]] = [
        ("bare aiohttp loop (ceiling)", bare),
        ("openai SDK, default httpx client", sdk),
        ("openai SDK, httpx pool limits = concurrency", lambda: sdk(http_client=openai.DefaultAsyncHttpxClient(limits=limits))),
        ("openai SDK, DefaultAioHttpClient", lambda: sdk(http_client=openai.DefaultAioHttpClient())),
        ("qagen OpenAIHTTP, --transport openai (default)", lambda: qagen_client("openai")),
        ("qagen OpenAIHTTP, --transport aiohttp", qagen_client),
    ]
    results: dict[str, dict[str, float]] = {}
    for name, case in cases:
        try:
            rate = await case()
        except Exception as exc:  # noqa: BLE001 - report the case as not measurable, go on
            print(f"  {name}: failed: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
            rate, CPU_PER_REQUEST["last"] = float("nan"), float("nan")
        results[name] = {"req_per_s": round(rate, 1), "cpu_ms_per_request": round(CPU_PER_REQUEST["last"], 3)}
        print(f"  {name}: {results[name]}", file=sys.stderr)
    return results


def pipeline(
    base_url: str, n_docs: int, concurrency: int, profile: Path | None, judge: bool, transport: str,
    suite: str | None = None,
) -> dict[str, object]:
    from qagen.config import load_settings
    from qagen.pipeline.ingest import ingest

    with tempfile.TemporaryDirectory() as tmp:
        docs, out = Path(tmp) / "docs", Path(tmp) / "out"
        write_corpus(docs, n_docs)
        # Generation (+ the judge with --judge): refinement off, ungrounded pairs flagged, not dropped
        # (the stub's answers are not quotes from the text).
        settings = load_settings(base_url=base_url, model="stub-model", concurrency=concurrency, refine=False,
                                 judge=judge, ungrounded="flag", report=False, transport=transport, suite=suite)
        profiler = None
        if profile is not None:
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="disabled")
            profiler.start()
        started, cpu_started = time.perf_counter(), _cpu()
        summary = ingest(docs, out, settings)
        wall, cpu = time.perf_counter() - started, _cpu() - cpu_started
        if profiler is not None:
            profiler.stop()
            profile.write_text(profiler.output_text(unicode=False, show_all=False))
        rerun_started = time.perf_counter()
        again = ingest(docs, out, settings)
        rerun = time.perf_counter() - rerun_started
        shutil.rmtree(out, ignore_errors=True)
    return {
        "docs": n_docs, "judge": judge, "suite": settings.perspective_suite, "requests": summary.requests_sent, "pairs": summary.pairs_total, "status": summary.status,
        "wall_s": round(wall, 2), "req_per_s": round(summary.requests_sent / wall, 1),
        "client_cpu_s": round(cpu, 2), "cpu_ms_per_request": round(1000 * cpu / max(1, summary.requests_sent), 3),
        "req_per_cpu_s": round(summary.requests_sent / cpu, 1),
        "rerun_wall_s": round(rerun, 2), "rerun_sent": again.requests_sent, "rerun_cached": again.requests_cached,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--requests", type=int, default=2000, help="requests per transport case")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", type=Path, help="write a pyinstrument profile of the pipeline run here")
    parser.add_argument("--skip-transports", action="store_true")
    parser.add_argument("--judge", action="store_true", help="also run the judge stage (one call per pair)")
    parser.add_argument("--transport", default="aiohttp", choices=("openai", "aiohttp"),
                        help="qagen's chat transport for the pipeline run (default here: aiohttp, the fast one)")
    parser.add_argument("--suite", help="the perspective suite (default: qagen's for a served model, ledger; the "
                        "throughput figure of issue 30 uses broad, 9 requests a document)")
    parser.add_argument("--guard", action="store_true",
                        help="exit 1 when the pipeline's requests/s is more than 20 %% below the figure recorded in "
                             "benchmarks/overhead_guard.json for the same --docs, --concurrency, --transport, --suite")
    parser.add_argument("--words", action="store_true",
                        help="the stub's strings are word-like (realistic work for dedup), not hex tags")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    with instant_stub(args.words) as base_url:
        result: dict[str, object] = {"concurrency": args.concurrency, "stub_words": args.words}
        if not args.skip_transports:
            reqs = sample_requests(args.requests)
            result["transports"] = asyncio.run(transports(base_url, reqs, args.concurrency))
        result["pipeline"] = pipeline(base_url, args.docs, args.concurrency, args.profile, args.judge, args.transport,
                                      args.suite)
        result["pipeline"]["transport"] = args.transport
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.guard:
        sys.exit(guard(result["pipeline"], args.concurrency))  # type: ignore[arg-type]


GUARD = ROOT / "benchmarks" / "overhead_guard.json"


def guard(run: dict[str, object], concurrency: int) -> int:
    """1 (and a loud line) when requests/s fell more than 20 % below the recorded figure for this configuration."""
    key = f"docs={run['docs']} concurrency={concurrency} transport={run['transport']} suite={run['suite']}"
    recorded = json.loads(GUARD.read_text()) if GUARD.exists() else {}
    if key not in recorded:
        print(f"guard: no figure recorded for {key} in {GUARD}", file=sys.stderr)
        return 1
    floor, got = 0.8 * float(recorded[key]["req_per_s"]), float(run["req_per_s"])  # type: ignore[arg-type]
    if got < floor:
        print(f"GUARD FAILED: {got:.0f} requests/s < {floor:.0f} (80 % of the recorded {recorded[key]['req_per_s']}, "
              f"{recorded[key]['commit']}) for {key}", file=sys.stderr)
        return 1
    print(f"guard: {got:.0f} requests/s >= {floor:.0f} (80 % of {recorded[key]['req_per_s']}) for {key}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    main()
