"""The repair loop end to end on the stub server (issue 27): ``--refine repair`` rewrites only the pairs a check
flags, from a critique with the evidence, and keeps a rewrite only when it passes every check; the kept repairs
are the DPO pairs; a re-run asks nothing; a fact ledger question that leaks its answer is repaired."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from qagen.pipeline.ingest import ingest
from qagen.testing import StubReply
from tests.helpers import passage_of, passage_reply
from tests.test_ledger import BRIDGE, ledger_reply, ledger_settings

GOOD_QUOTE = "The Eastbay council voted on 3 May 2021 to close the old bridge"


def quiz_reply(req: dict) -> StubReply:
    """The quiz drafts two pairs: one grounded, one whose quote the passage does not hold. The regenerator fixes a
    pair whose critique shows the passage's sentence (it copies it as the quote), and otherwise keeps it bad."""
    fmt = (req.get("response_format") or {}).get("json_schema", {})
    task = req["messages"][-1]["content"].rsplit("Task:", 1)[-1]
    if fmt.get("name") == "revision":
        question = task.split("\nQuestion: ", 1)[1].split("\n", 1)[0]
        fixed = "The passage says:" in task and "Ruiz" not in question
        return StubReply(content=json.dumps({
            "question": question,
            "quote": GOOD_QUOTE if fixed else "a quote the passage never had",
            "answer": "On 3 May 2021." if fixed else "Sometime."}))
    if fmt.get("name") == "qa_pairs" and "quiz" in task:
        return StubReply(content=json.dumps({"pairs": [
            {"question": "When did the Eastbay council vote to close the old bridge?", "quote": "voted in June",
             "answer": "In June."},
            {"question": "Who estimated the cost of the Eastbay bridge repairs?", "quote": "The engineer Ana Ruiz",
             "answer": "The engineer Ana Ruiz."},
            {"question": "Who was Ana Ruiz's employer at the Eastbay bridge?", "quote": "worked for Bridgeco",
             "answer": "Bridgeco."}]}))
    return passage_reply(req)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for name in ("train.jsonl", "eval.jsonl")
            for line in (out / name).read_text().splitlines()]


def test_repair_fixes_a_flagged_pair_keeps_only_checked_repairs_and_reruns_free(tmp_path, stub, settings_for):
    stub.handler = quiz_reply
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    (docs / "bridge.md").write_text(BRIDGE)
    settings = settings_for(suite="knowledge", refine="repair", filters=True, max_rounds=2)
    summary = ingest(docs, out, settings)
    assert summary.status == "ok" and summary.refine["mode"] == "repair"
    exported = {r["messages"][1]["content"]: r for r in rows(out)}
    fixed = exported["When did the Eastbay council vote to close the old bridge?"]
    assert fixed["messages"][2]["content"] == "On 3 May 2021." and fixed["revisions"] == 1
    assert fixed["stop"] == "repaired" and fixed["quote"] == GOOD_QUOTE
    kept = exported["Who estimated the cost of the Eastbay bridge repairs?"]  # passed every check: unchanged
    assert kept["messages"][2]["content"] == "The engineer Ana Ruiz." and "revisions" not in kept
    assert "Who was Ana Ruiz's employer at the Eastbay bridge?" not in exported  # its repairs failed: dropped
    with sqlite3.connect(out / "qagen.sqlite") as db:
        tried = db.execute("SELECT question, accepted, failed_checks, critique FROM refinements ORDER BY question, "
                           "round").fetchall()
        verdict = db.execute("SELECT v.verdict FROM verdicts v JOIN pairs p ON p.pair_id=v.pair_id "
                             "WHERE p.question LIKE 'Who was Ana Ruiz%'").fetchall()
    samples = 4  # the knowledge suite asks the quiz 4 times; the stub answers each the same (dedup is off)
    employer = [t for t in tried if t[0].startswith("Who was")]
    assert [(a, f) for _, a, f, _ in employer] == [(0, '["ungrounded"]')] * 2 * samples
    assert all("The passage says:" in c for *_, c in tried)  # the critique shows the evidence
    assert set(verdict) == {("ungrounded",)}  # the draft stands, and curation drops it as before
    r = summary.refine
    assert r["flagged"] == {"ungrounded": 2 * samples} and r["tried"] == 3 * samples and r["accepted"] == samples
    assert r["rejected"] == {"ungrounded": 2 * samples} and r["critic_reviews"] == 0 and r["loop_tokens"] > 0
    dpo = [json.loads(line) for line in (out / "dpo.jsonl").read_text().splitlines()]
    assert [(d["rejected"]["content"], d["chosen"]["content"]) for d in dpo] == [("In June.", "On 3 May 2021.")] * samples

    sent = len(stub.requests)
    again = ingest(docs, out, settings_for(suite="knowledge", refine="repair", filters=True, max_rounds=2,
                                           report=True))
    assert again.requests_sent == 0 and len(stub.requests) == sent and again.refine["accepted"] == 4
    assert json.loads((out / "dpo.jsonl").read_text().splitlines()[0])["chosen"]["content"] == "On 3 May 2021."


def test_a_ledger_question_that_leaks_its_answer_is_repaired(tmp_path, stub, settings_for):
    def handler(req: dict) -> StubReply:
        fmt = (req.get("response_format") or {}).get("json_schema", {})
        if fmt.get("name") == "revision":  # the regenerator asks for the span without naming it
            return StubReply(content=json.dumps({"question": "Which engineer estimated the Eastbay bridge repairs?",
                                                 "answer": "ignored: the span stays the answer"}))
        return ledger_reply(req)

    stub.handler = handler
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    (docs / "bridge.md").write_text(BRIDGE)
    summary = ingest(docs, out, ledger_settings(settings_for, refine="repair"))
    asked = {r["messages"][1]["content"]: r for r in rows(out) if r["perspective"] == "fact_questions"}
    repaired = asked["Which engineer estimated the Eastbay bridge repairs?"]
    assert repaired["messages"][2]["content"] == "Ana Ruiz" and repaired["revisions"] == 1 and repaired["fact_id"]
    assert not any("Ana Ruiz" in q for q in asked)
    assert summary.refine["flagged"].get("leak", 0) >= 1 and summary.refine["accepted"] >= 1
    revisions = [r for r in stub.requests if (r.get("response_format") or {}).get("json_schema", {}).get("name")
                 == "revision"]
    assert revisions and all("contains its own answer 'Ana Ruiz'" in json.dumps(r["messages"]) for r in revisions)
    assert re.search(r"leak", json.dumps(summary.refine))
    assert passage_of(revisions[0])  # the regenerator sees the chunk
