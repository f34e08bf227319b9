"""Shared fixtures: a stub OpenAI-compatible server on loopback and small corpora."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from qagen.config import Settings, load_settings
from qagen.testing import StubReply, StubServer


def fill(schema: dict, seed: str, path: str = "", passage: str = "") -> object:
    """A schema-valid instance whose strings depend on the request (distinct per chunk/prompt).

    A ``quote`` is a real span of the passage, so grounding accepts it.
    """
    kind = schema.get("type")
    if kind == "object":
        return {k: fill(v, seed, f"{path}.{k}", passage) for k, v in schema["properties"].items()}
    if kind == "array":
        n = max(1, min(schema.get("maxItems", 2), 2))
        return [fill(schema["items"], seed, f"{path}[{i}]", passage) for i in range(n)]
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "boolean":
        return False  # e.g. the critic's needs_revision: satisfied
    if kind == "string":
        text = f"{path.strip('.')} {seed} about the passage"
        if path.endswith("question"):
            text = f"What does item {path} say in {seed}?"
        if path.endswith("quote") and len(passage.strip()) >= 8:
            text = passage.strip()[:60]
        return text[: schema.get("maxLength", 200)]
    return None


def passage_of(req: dict) -> str:
    text = " ".join(str(m.get("content", "")) for m in req.get("messages") or [])
    if "--- BEGIN PASSAGE ---" in text:
        return text.split("--- BEGIN PASSAGE ---", 1)[1].split("--- END PASSAGE ---", 1)[0]
    return ""


YES = [("Yes", -0.05), ("No", -3.0)]  # P(yes) ~ 0.95 for the judge's first token


def passage_reply(req: dict) -> StubReply:
    """Answer any json_schema request with distinct, valid content; judge checks get a logprob 'Yes'."""
    seed = hashlib.sha1(json.dumps(req.get("messages"), sort_keys=True).encode()).hexdigest()[:8]
    fmt = req.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema")
    if schema is None and "yes or no" in json.dumps(req.get("messages")):
        return StubReply(content="Yes", logprobs=YES, finish_reason="length", completion_tokens=1)
    if schema is None:
        return StubReply(content=f"plain reply {seed}")
    return StubReply(content=json.dumps(fill(schema, seed, passage=passage_of(req))), prompt_tokens=100, completion_tokens=40)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("QAGEN_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def stub() -> StubServer:
    with StubServer(passage_reply) as server:
        yield server


@pytest.fixture
def settings_for(stub: StubServer):
    def make(**overrides: object) -> Settings:
        # Generation-only unless a test asks for the critic loop / judge / dedup / report
        # (test_refine.py, test_curate.py run them with their defaults).
        base = {"base_url": stub.base_url, "model": "stub-model", "max_retries": 2, "concurrency": 4,
                "refine": False, "judge": False, "dedup": False, "report": False}
        base.update(overrides)
        return load_settings(**base)

    return make


WASHINGTON = """---
title: First Annual Message
date: 1790-01-08
author: George Washington
---
# First Annual Message

## Opening

I embrace with great satisfaction the opportunity which now presents itself of congratulating you on the present
favorable prospects of our public affairs. The recent accession of the important State of North Carolina to the
Constitution of the United States is a source of much satisfaction.

## Defense

To be prepared for war is one of the most effectual means of preserving peace. A free people ought not only to be
armed, but disciplined; to which end a uniform and well-digested plan is requisite.
"""

COPY_DOC = """# copy - Shallow and deep copy operations

Assignment statements in Python do not copy objects, they create bindings between a target and an object.
For collections that are mutable or contain mutable items, a copy is sometimes needed so one can change one copy
without changing the other. This module provides generic shallow and deep copy operations.

## Interface summary

copy.copy(x) returns a shallow copy of x. copy.deepcopy(x) returns a deep copy of x.
"""

NOTES = """Meeting notes, 3 March

The committee agreed to move the library opening to May. Ana Souza will contact the builders.
The budget for new shelving is 4,000 euros.
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "speeches").mkdir(parents=True)
    (root / "speeches" / "washington.md").write_text(WASHINGTON)
    (root / "copy.md").write_text(COPY_DOC)
    return root


@pytest.fixture
def notes_text() -> str:
    return NOTES
