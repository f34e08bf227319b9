"""End to end on the real embedded model (SmolLM2-135M on llama.cpp, CPU).

Small on purpose: one short document, one chunk, the whole perspective suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qagen.core import ids
from qagen.corpus.reader import iter_documents
from qagen.llm.base import ChatRequest, Message
from qagen.llm.embedded import (
    MODEL_NAME,
    EmbeddedLLM,
    EmbeddedServer,
    ServerConfig,
    find_model,
)

pytestmark = pytest.mark.embedded

try:
    MODEL = str(find_model())
except Exception as exc:  # noqa: BLE001
    pytest.skip(f"embedded model not installed: {exc}", allow_module_level=True)

DOC = """---
title: The Harbour Bridge Vote
date: 2024-03-02
author: Town Council of Eastbay
---
# The Harbour Bridge Vote

On 2 March 2024 the Eastbay town council voted 7 to 2 to rebuild the old harbour bridge.
The new bridge will cost 12 million euros and will open in 2027. Mayor Lena Ortiz said the
old bridge was no longer safe for buses. Work starts in June, and a ferry will carry
passengers while the bridge is closed.
"""


# The model-drafted perspectives: the embedded default (the embedded suite) asks the model for the exam alone, and these
# tests are about the real model's path through generation, the judge and the cache.
BROAD = ("--suite", "broad")
# Generation draws (--seed: every sampled request carries a seed). The 135M model's drafts are mostly junk, and a draw
# whose model-written pairs the judge rejects to the last one is a "failed" run that replaces nothing in OUT (a rule of
# the product, tested in test_curate.py); even seeded, llama.cpp does not always give the same reply (1 run in 6 drew
# other drafts on 2026-12-08). So the test takes the first draw that is not such a run, each in a fresh OUT.
DRAWS = (("--seed", "2"), ("--seed", "3"), ("--seed", "4"))


def qagen(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_") and k != "OPENAI_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "qagen.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_ingest_on_the_real_embedded_model(tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bridge.md").write_text(DOC)

    # Generation, judge, grounding and dedup on the real model; the critic loop is left to
    # test_one_real_pair_goes_through_the_refinement_loop, to keep CI's time bounded on 2 cores.
    for i, draw in enumerate(DRAWS):
        out = tmp_path / f"out-{i}"  # a fresh state: a failed draw's cached replies must not decide the next one
        first = qagen("ingest", str(docs), "--out", str(out), "--json", "--no-refine", *BROAD, *draw)
        assert first.returncode in (0, 1), first.stderr
        summary = json.loads(first.stdout)
        if summary["status"] != "failed":
            break
        assert "the judge rejected all" in summary["error"], summary["error"]  # the only failure allowed here
        assert not (out / "train.jsonl").exists()  # and it replaced nothing
    assert summary["status"] != "failed", f"every draw of {DRAWS} was rejected by the judge"
    assert summary["model"] == MODEL_NAME and summary["documents_read"] == 1 and summary["chunks"] == 1
    assert summary["requests_sent"] >= 7  # the seven LLM perspectives on one chunk
    assert summary["requests_failed"] == 0, summary["failure_examples"]
    assert summary["pairs_total"] > 0
    # the real judge scored every model-written pair from llama.cpp's logprobs; every pair has a verdict
    assert summary["judged"] and summary["judge_method"] == "logprobs"
    assert sum(summary["verdicts"].values()) == summary["pairs_generated"] >= summary["pairs_total"]

    (doc,) = list(iter_documents(docs))
    group = ids.group_id([doc.doc_id])
    records = []
    for name in ("train.jsonl", "eval.jsonl"):
        records += [json.loads(line) for line in (out / name).read_text().splitlines()]
    assert len(records) == summary["pairs_total"]
    db = sqlite3.connect(out / "qagen.sqlite")
    (chunk_text,) = db.execute("SELECT text FROM chunks WHERE chunk_id=?", (records[0]["chunk_id"],)).fetchone()
    for rec in records:
        assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in rec["messages"])
        assert rec["doc_id"] == doc.doc_id == ids.doc_id(ids.normalise_text(doc.text))
        assert rec["group_id"] == group
        assert rec["source"] == "bridge.md"
        assert rec["model"] in (MODEL_NAME, "code")
    # chunk_id re-hashes from the stored chunk text and the chunker settings
    from qagen.config import load_settings
    from qagen.corpus.chunker import Chunker
    from qagen.pipeline.assemble import chunker_settings, repair_checks

    key = Chunker(chunker_settings(load_settings())).settings.key()
    assert records[0]["chunk_id"] == ids.chunk_id(doc.doc_id, chunk_text, key)
    # the filters throw most of the 135M model's pairs away (issue 15): the suite ran, identity pairs are exported
    perspectives = {r["perspective"] for r in records}
    assert "identity" in perspectives
    assert len([p for p, n in summary["pairs_per_perspective"].items() if n]) >= 4

    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("json", data_files=str(out / "train.jsonl"), cache_dir=str(tmp_path / "hf"))
    assert ds["train"].num_rows == summary["train_pairs"]

    second = qagen("ingest", str(docs), "--out", str(out), "--json", "--no-refine", *BROAD, *draw)
    again = json.loads(second.stdout)
    # every valid reply is cached; a call whose reply stayed invalid (after its corrective retry) is asked again
    invalid = summary["invalid_replies"]
    if invalid == 0:
        assert again["requests_sent"] == 0
        assert again["requests_cached"] == summary["requests_sent"] + summary["requests_cached"]
        assert again["pairs_total"] == summary["pairs_total"]
    else:
        assert again["requests_sent"] <= 2 * invalid, (again["requests_sent"], invalid)


def test_ray_executor_on_the_real_embedded_model(tmp_path: Path):
    """--executor ray: one embedded server on the driver, a Ray worker calls it; a local run agrees for free."""
    pytest.importorskip("ray")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bridge.md").write_text(DOC)
    out = tmp_path / "out"
    flags = ["--out", str(out), "--json", "--no-refine", "--no-judge", "--no-report", *BROAD]
    first = qagen("ingest", str(docs), *flags, "--executor", "ray", "--workers", "1")
    assert first.returncode in (0, 1), first.stderr[-2000:]
    summary = json.loads(first.stdout)
    assert summary["model"] == MODEL_NAME and summary["documents_read"] == 1 and summary["chunks"] == 1
    assert summary["requests_sent"] >= 7 and summary["requests_failed"] == 0, summary["failure_examples"]
    assert summary["pairs_total"] > 0
    dataset = {n: (out / n).read_text() for n in ("train.jsonl", "eval.jsonl")}
    assert not list((out / ".qagen-shards").glob("run-*"))  # merged into the main store

    (out / "train.jsonl").unlink()  # so the local run replays instead of finding nothing changed
    local = qagen("ingest", str(docs), *flags)
    again = json.loads(local.stdout)
    assert again["requests_sent"] == 0 and again["requests_cached"] >= summary["requests_sent"]
    assert {n: (out / n).read_text() for n in dataset} == dataset


def test_embedded_server_restarts_once_after_dying():
    llm = EmbeddedLLM(ServerConfig(MODEL, 2, 2, 1024), concurrency=2, timeout=120, max_retries=1)
    request = ChatRequest(
        model="x", messages=(Message("user", "Say hello in one word."),), temperature=0.0, max_tokens=8
    )

    async def scenario() -> tuple[str, str, int]:
        try:
            first = await llm.complete(request)
            pid = llm.server.proc.pid  # type: ignore[union-attr]
            llm.server.proc.kill()  # type: ignore[union-attr]
            llm.server.proc.wait()  # type: ignore[union-attr]
            second = await llm.complete(request)
            assert llm.server.proc.pid != pid  # type: ignore[union-attr]
            return first.content, second.content, llm.server.restarts
        finally:
            await llm.aclose()

    first, second, restarts = asyncio.run(scenario())
    assert first.strip() and second.strip() and restarts == 1
    assert llm.server.proc is None  # stopped on close


def test_server_is_not_orphaned_when_parent_is_killed(tmp_path: Path):
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from qagen.llm.embedded import EmbeddedServer, ServerConfig, find_model\n"
        "s = EmbeddedServer(ServerConfig(str(find_model()), 1, 1, 512))\n"
        "s.start()\n"
        "print(s.proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
    parent.kill()  # SIGKILL: no cleanup code runs in the parent
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        import time

        time.sleep(0.1)
    else:
        os.kill(child_pid, 9)
        pytest.fail("the embedded server outlived its killed parent")


def test_embedded_server_health_and_stop():
    server = EmbeddedServer(ServerConfig(MODEL, 1, 1, 512))
    url = server.start()
    try:
        assert url.startswith("http://127.0.0.1:") and server.healthy() and server.alive()
    finally:
        server.stop()
    assert not server.alive() and not server.healthy()


def test_second_server_death_stops_with_a_clear_error():
    from qagen.llm.embedded import EmbeddedError

    llm = EmbeddedLLM(ServerConfig(MODEL, 2, 1, 1024), concurrency=1, timeout=60, max_retries=0)
    request = ChatRequest(model="x", messages=(Message("user", "Hi"),), temperature=0.0, max_tokens=4)

    async def scenario() -> None:
        try:
            await llm.complete(request)
            for _ in range(2):  # kill it, let it be restarted once, kill it again
                llm.server.proc.kill()  # type: ignore[union-attr]
                llm.server.proc.wait()  # type: ignore[union-attr]
                await llm.complete(request)
        finally:
            await llm.aclose()

    with pytest.raises(EmbeddedError, match="died again after a restart"):
        asyncio.run(scenario())
    assert llm.server.restarts == 1


def test_one_real_pair_goes_through_the_refinement_loop(tmp_path: Path):
    """The repair loop on the real model (``--refine repair``): a pair whose quote the passage does not hold is
    flagged by the real checks, the real regenerator rewrites it from the evidence, and every round is stored with
    whether the checks accepted it; then the real judge scores the result."""
    from qagen.config import load_settings
    from qagen.core.types import QAPair
    from qagen.corpus.chunker import Chunker
    from qagen.generate.caller import Caller
    from qagen.generate.judge import Judge
    from qagen.generate.refine import Refiner, RefineSettings
    from qagen.pipeline.assemble import chunker_settings, repair_checks
    from qagen.prompting.prompts import load_prompts
    from qagen.store import Store

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bridge.md").write_text(DOC)
    (doc,) = list(iter_documents(docs))
    (chunk,) = Chunker(chunker_settings(load_settings())).chunk(doc)
    prompts = load_prompts()
    llm = EmbeddedLLM(ServerConfig(MODEL, 2, 2, 2048), concurrency=2, timeout=300, max_retries=1)
    draft = QAPair(ids.hash_str("draft"), chunk.chunk_id, doc.doc_id, "quiz",
                   "What did the Eastbay council decide?", "It decided something about a bridge.", "", MODEL_NAME,
                   (("quote", "the council decided to build a tunnel"),))  # not in the passage: flagged

    with Store(tmp_path / "out") as store:
        run_id = store.start_run("test", {})
        store.add_document(run_id, doc, [chunk])
        store.add_drafts([draft])
        gen = Caller(store, llm, MODEL_NAME, run_id)
        settings = load_settings(base_url="http://127.0.0.1:9/v1", model="m")  # the served checks' thresholds
        refiner = Refiner(gen, prompts, RefineSettings(max_rounds=2, mode="repair"),
                          checks=repair_checks(settings, prompts))
        judge = Judge(gen, prompts, threshold=0.5)

        async def go():
            try:
                outcome = await refiner.refine(draft, doc, chunk)
                return outcome, (await judge.judge_pairs([outcome.final], doc, chunk))[0]
            finally:
                await llm.aclose()

        outcome, judgement = asyncio.run(go())
        stored = store.judgements(run_id)[outcome.final.pair_id]
        rows = store.db.execute(
            "SELECT round, critique, revised_question, revised_answer, accepted, failed_checks FROM refinements "
            "WHERE final_pair_id=?", (outcome.final.pair_id,),
        ).fetchall()
        refined = store.db.execute("SELECT revisions, stop_reason FROM refined").fetchone()
    assert gen.stats.sent >= 1 and gen.stats.failed == 0
    assert outcome.stop in ("repaired", "max_rounds", "regenerator_failed")
    assert rows and all("The passage says:" in critique for _, critique, *_ in rows)  # the evidence was shown
    assert rows[0][3] is None or rows[0][3].strip()  # the regenerator wrote a revised answer (or failed)
    accepted = [r for r in rows if r[4]]
    assert outcome.revisions == len(accepted) and refined == (outcome.revisions, outcome.stop)
    # a kept repair passes every check; a rejected one names the checks it failed, and the draft stands
    assert outcome.final.answer == (accepted[-1][3] if accepted else draft.answer)
    assert all(json.loads(r[5]) for r in rows if r[3] is not None and not r[4])
    # the real judge: three yes/no checks, P(yes) read from llama.cpp's first-token logprobs
    assert judgement.method == "logprobs" and not judgement.missing
    assert set(judgement.scores) == {"supported", "self_contained", "useful"}
    assert all(0.0 <= p <= 1.0 for p in judgement.scores.values())
    assert stored == (judgement.scores, "logprobs", judgement.score)
