"""The in-process vLLM backend, driven through the whole pipeline by a fake vLLM engine (no GPU here).

The fake stands in for the ``vllm`` package (``LLM``, ``SamplingParams``,
``StructuredOutputsParams``), not for qagen code: it records what qagen
asks the engine for and answers with schema-valid JSON, as vLLM's
structured-output decoding would.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from qagen.config import load_settings
from qagen.llm import vllm as vllm_backend
from qagen.llm.base import ChatRequest, Message
from qagen.pipeline.ingest import ingest
from qagen.testing import StubServer
from qagen.testing.crash import write_corpus
from tests.helpers import passage_reply

MODEL = "mistralai/Mistral-7B-Instruct-v0.3"


@dataclass
class SamplingParams:  # vLLM's constructor signature, the fields qagen uses
    temperature: float = 1.0
    max_tokens: int | None = 16
    structured_outputs: object = None
    guided_decoding: object = None
    logprobs: int | None = None
    seed: int | None = None
    stop: list[str] | None = None


@dataclass
class StructuredOutputsParams:
    json: dict | str | None = None


@dataclass
class FakeVLLM:
    """``vllm.LLM`` look-alike: chat() over a batch, one RequestOutput-like object per conversation."""

    model: str
    enable_prefix_caching: bool = False
    calls: list[tuple[list, list]] = field(default_factory=list)
    fail: bool = False

    def chat(self, messages: list, sampling_params: list, use_tqdm: bool = True) -> list:
        assert len(messages) == len(sampling_params)
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        self.calls.append((messages, sampling_params))
        time.sleep(0.05)  # a GPU batch takes a while; requests arriving meanwhile form the next batch
        return [self._output(m, p) for m, p in zip(messages, sampling_params)]

    def _output(self, conversation: list, params: SamplingParams) -> object:
        schema = params.structured_outputs.json if params.structured_outputs else params.guided_decoding.json
        text = passage_reply({"messages": conversation, "response_format": {"json_schema": {"schema": schema}}}).content
        json.loads(text)
        completion = SimpleNamespace(text=text, finish_reason="stop", token_ids=list(range(len(text.split()))),
                                     logprobs=None)
        prompt_ids = list(range(sum(len(m["content"].split()) for m in conversation)))
        return SimpleNamespace(outputs=[completion], prompt_token_ids=prompt_ids)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> list[FakeVLLM]:
    engines: list[FakeVLLM] = []

    def make(**kwargs: object) -> FakeVLLM:
        engines.append(FakeVLLM(**kwargs))  # type: ignore[arg-type]
        return engines[-1]

    api = SimpleNamespace(LLM=make, SamplingParams=SamplingParams, StructuredOutputsParams=StructuredOutputsParams,
                          GuidedDecodingParams=None)
    monkeypatch.setattr(vllm_backend, "vllm_api", lambda: api)
    return engines


def request_keys(out: Path) -> set[str]:
    with sqlite3.connect(out / "qagen.sqlite") as db:
        return {r[0] for r in db.execute("SELECT key FROM requests")}


def test_ingest_with_vllm_backend_batches_structured_requests(tmp_path: Path, fake_vllm: list[FakeVLLM]):
    docs = tmp_path / "docs"
    write_corpus(docs, 6)
    settings = load_settings(backend="vllm", model=MODEL, concurrency=64, refine=False, judge=False, suite="broad")
    summary = ingest(docs, tmp_path / "out", settings)
    assert summary.status == "ok" and summary.requests_failed == 0
    assert summary.pairs_total > 0 and summary.backend == f"vllm:{MODEL}"
    (engine,) = fake_vllm
    assert engine.model == MODEL and engine.enable_prefix_caching is True
    sizes = [len(m) for m, _ in engine.calls]
    assert sum(sizes) == summary.requests_sent
    assert len(sizes) < summary.requests_sent / 4 and max(sizes) >= 16  # batched: many requests per engine call, not one at a time
    for messages, params in engine.calls:
        for conversation, p in zip(messages, params):
            assert [m["role"] for m in conversation] == ["user"]  # Mistral: system text folded into the user turn
            assert p.structured_outputs.json["type"] == "object"  # the prompt's JSON schema, as a dict
            assert p.max_tokens and p.max_tokens > 0
    lines = (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    generated = [json.loads(line) for line in lines if json.loads(line)["perspective"] not in ("identity", "cloze")]
    assert generated and all(row["model"] == MODEL for row in generated)


def test_same_requests_as_the_http_path(tmp_path: Path, fake_vllm: list[FakeVLLM]):
    """Same prompts, schemas and parameters: the request keys equal those of an HTTP run of the same model."""
    docs = tmp_path / "docs"
    write_corpus(docs, 3)
    common = {"model": MODEL, "refine": False, "judge": False}
    ingest(docs, tmp_path / "vllm", load_settings(backend="vllm", **common))
    with StubServer(passage_reply) as server:
        ingest(docs, tmp_path / "http", load_settings(base_url=server.base_url, **common))
        sent = server.requests
    assert request_keys(tmp_path / "vllm") == request_keys(tmp_path / "http")
    # and the schema vLLM was given is the one the HTTP server got in response_format
    http_schemas = {json.dumps(r["response_format"]["json_schema"]["schema"], sort_keys=True) for r in sent}
    vllm_schemas = {json.dumps(p.structured_outputs.json, sort_keys=True)
                    for _, params in fake_vllm[0].calls for p in params}
    assert vllm_schemas == http_schemas


def test_older_vllm_uses_guided_decoding():
    api = SimpleNamespace(SamplingParams=SamplingParams, StructuredOutputsParams=None,
                          GuidedDecodingParams=StructuredOutputsParams)
    request = ChatRequest(model=MODEL, messages=(Message("user", "q"),), temperature=0.2, max_tokens=64,
                          json_schema='{"type": "object"}', top_logprobs=5, seed=3, stop=("###",))
    params = vllm_backend.sampling_params(api, request)
    assert params.structured_outputs is None and params.guided_decoding.json == {"type": "object"}
    assert (params.temperature, params.max_tokens, params.logprobs, params.seed, params.stop) == (0.2, 64, 5, 3, ["###"])


def test_engine_error_is_a_recorded_retryable_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    docs = tmp_path / "docs"
    write_corpus(docs, 2)
    api = SimpleNamespace(LLM=lambda **kw: FakeVLLM(fail=True, **kw), SamplingParams=SamplingParams,
                          StructuredOutputsParams=StructuredOutputsParams, GuidedDecodingParams=None)
    monkeypatch.setattr(vllm_backend, "vllm_api", lambda: api)
    summary = ingest(docs, tmp_path / "out", load_settings(backend="vllm", model=MODEL, refine=False, judge=False))
    # not one reply: a failed run (it replaces no earlier dataset), every request recorded for the next run
    assert summary.status == "failed" and summary.requests_sent == 0 and summary.requests_failed > 0
    with sqlite3.connect(tmp_path / "out" / "qagen.sqlite") as db:
        errors = [r for r in db.execute("SELECT error, retryable FROM failures")]
    assert errors and all("CUDA out of memory" in e and r == 1 for e, r in errors)


def test_missing_vllm_gives_an_install_hint_and_non_zero_exit(tmp_path: Path):
    pytest.importorskip("typer")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - only on machines with vLLM
        pytest.skip("vLLM is installed here")
    docs = tmp_path / "docs"
    write_corpus(docs, 1)
    done = subprocess.run([sys.executable, "-m", "qagen.cli", "ingest", str(docs), "--out", str(tmp_path / "out"),
                           "--backend", "vllm", "--model", MODEL], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "pip install 'qagen[vllm]'" in done.stderr + done.stdout
