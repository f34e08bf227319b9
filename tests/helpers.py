"""Plain helpers shared by test modules (import them from here, not from ``tests.conftest``).

A stub-server handler that answers every request with valid content, the small corpora the fixtures
write, and a document, chunk and database reader for the FakeLLM unit tests.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING

from qagen.core.types import Chunk, Document
from qagen.testing import StubReply

if TYPE_CHECKING:
    from qagen.store import Store


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
    if kind == "integer":  # e.g. a fact_questions item's number: the item's own position, within the bounds
        import re

        at = re.findall(r"\[(\d+)\]", path)
        value = int(at[-1]) + 1 if at else 1
        return max(schema.get("minimum", value), min(schema.get("maximum", value), value))
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


# --- unit tests on FakeLLM (no HTTP): one small document and chunk, and rows of the state database ---
UNIT_TEXT = (
    "The Eastbay council voted on 4 May to close the old bridge for repairs. "
    "The work will cost 2 million euros and take eight months."
)
UNIT_DOC = Document(doc_id="d" * 64, path="bridge.md", title="Eastbay bridge", text=UNIT_TEXT, fmt="markdown")


def unit_chunk(index: int = 0, text: str = UNIT_TEXT) -> Chunk:
    return Chunk(chunk_id=f"{index:064d}", doc_id=UNIT_DOC.doc_id, index=index, text=text,
                 title=UNIT_DOC.title, section="", n_tokens=len(text.split()))


def db_rows(store: Store, sql: str, *params: object) -> list[tuple]:
    """Rows from the store's SQLite file, read on a connection of its own (after committing what is pending)."""
    store.flush()
    with closing(sqlite3.connect(store.path)) as db:
        return db.execute(sql, params).fetchall()


# --- the judge through the stub (tests/test_curate.py, test_filters.py) ---
def is_judge(req: dict) -> bool:
    return not req.get("response_format") and "yes or no" in json.dumps(req.get("messages"))


def judge_task(req: dict) -> str:
    return req["messages"][-1]["content"].split("Task:", 1)[1]


def judging(verdict) -> callable:
    """Judge checks answered by ``verdict(task_text)`` -> StubReply; everything else as usual."""

    def handler(req: dict) -> StubReply:
        return verdict(judge_task(req)) if is_judge(req) else passage_reply(req)

    return handler


def logprob_reply(tops) -> StubReply:
    return StubReply(content=tops[0][0], logprobs=tops, finish_reason="length", completion_tokens=1)
