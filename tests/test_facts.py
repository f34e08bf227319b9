"""Facts x k (issue 16): stable fact IDs, exposures counted across perspectives, a top-up that asks only for the
facts below k, and reversal questions that name the fact's answer (qagen/generate/facts.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from qagen.core.types import QAPair
from qagen.generate import facts
from qagen.pipeline.ingest import ingest
from qagen.testing.stub_server import StubReply
from tests.helpers import passage_reply

OPENING = "Eastbay is a small harbour town on the north coast, known for its fish market and its old stone walls."
BRIDGE = "The old bridge closed on 3 May 2021 after the engineer Ana Ruiz found cracks in its piers."
FERRY = "A ferry ran every twenty minutes while the bridge was shut, carrying 2,000 people a day."
TEXT = f"{OPENING} {BRIDGE} {FERRY}"


def pair(perspective: str, question: str, answer: str, quote: str = "", chunk: str = "c1") -> QAPair:
    return QAPair(f"{perspective}:{question}", chunk, "d1", perspective, question, answer, "", "m",
                  (("quote", quote),) if quote else ())


def test_fact_ids_are_stable_and_normalised():
    a = facts.fact_id("c1", BRIDGE)
    assert a == facts.fact_id("c1", f"  {BRIDGE.upper().replace(' ', '  ')} ")  # case and spacing don't count
    assert a == facts.fact_id("c1", BRIDGE.replace(",", "").rstrip("."))  # nor punctuation
    assert a != facts.fact_id("c2", BRIDGE)  # another chunk: another fact
    assert a != facts.fact_id("c1", FERRY)
    assert len(a) == 32 and a == facts.fact_id("c1", BRIDGE)  # a content hash, the same every run


def test_exposures_are_counted_across_perspectives_and_the_plan_asks_only_below_k():
    drafted = [
        pair("facts", "When did the old bridge close?", "3 May 2021", BRIDGE),
        pair("facts", "How often did the ferry run?", "every twenty minutes", FERRY),
        # the quiz and the title questions quote the bridge sentence (in part, in other case): the same fact
        pair("quiz", "Who found cracks in the bridge piers?", "Ana Ruiz", "the engineer Ana Ruiz found cracks in its piers"),
        pair("title_questions", "What closed in Eastbay?", "The old bridge", "THE OLD BRIDGE CLOSED ON 3 MAY 2021"),
        pair("quiz", "What is Eastbay known for?", "Its fish market", OPENING),  # no fact of the facts perspective
        pair("summaries", "Summarise the report.", "A bridge closed and a ferry ran."),  # no quote: not linked
    ]
    known = facts.facts_of(drafted, TEXT)
    assert [f.answer for f in known] == ["3 May 2021", "every twenty minutes"]
    linked = facts.link(drafted, known, TEXT)
    ids = [dict(p.extra).get("fact_id") for p in linked]
    bridge, ferry = known[0].fact_id, known[1].fact_id
    assert ids == [bridge, ferry, bridge, bridge, None, None]

    plans = facts.plan_top_up(known, linked, k=3, reversal=False)
    assert [(p.fact.fact_id, p.need, p.reverse) for p in plans] == [(ferry, 2, False)]  # the bridge has 3 already
    assert plans[0].asked == ("How often did the ferry run?",)
    # with reversal, a fact that has k exposures but no reverse question still gets one
    plans = facts.plan_top_up(known, linked, k=3, reversal=True)
    assert [(p.fact.fact_id, p.need, p.reverse) for p in plans] == [(bridge, 1, True), (ferry, 2, True)]
    # filtered pairs are not exposures: without the quiz pair the bridge needs one more
    passed = [p for p in linked if p.perspective != "quiz"]
    assert [(p.fact.fact_id, p.need) for p in facts.plan_top_up(known, passed, 3, False)] == [(bridge, 1), (ferry, 2)]
    # a fact whose quote is not in the chunk (invented) is never asked again
    invented = facts.facts_of([pair("facts", "Who built the bridge?", "Bob", "Bob built the bridge in 1850 alone")], TEXT)
    assert invented[0].span is None and facts.plan_top_up(invented, [], 3, True) == []


def test_a_reverse_question_names_the_facts_answer_and_asks_for_the_other_side():
    fact = facts.facts_of([pair("facts", "When did the old bridge close?", "3 May 2021", BRIDGE)], TEXT)[0]
    assert facts.is_reverse("What closed on 3 May 2021 in Eastbay?", "The old bridge", fact)
    assert not facts.is_reverse("When did the old bridge close?", "On 3 May 2021", fact)  # forward
    assert not facts.is_reverse("What happened on 3 May 20219?", "x", fact)  # a word, not a substring
    long = facts.facts_of([pair("facts", "Why did it close?", "because the engineer Ana Ruiz found cracks in its "
                                "piers", BRIDGE)], TEXT)[0]
    assert not long.reversible and not facts.is_reverse("Who found cracks?", "Ana Ruiz", long)


def test_coverage_histogram_and_facts_below_k():
    rows = [("f1", "c1", "q1", True, False), ("f1", "c1", "q1b", True, True), ("f1", "c1", "q1c", True, False),
            ("f2", "c1", "q2", True, False), ("f2", "c1", "q2b", False, False),  # one of f2's was rejected
            ("f3", "c2", "q3", False, False)]
    cov = facts.coverage(rows, k=3)
    assert cov.facts == 3 and cov.histogram == {"0": 1, "1": 1, "3+": 1} and cov.below_k == 2
    assert cov.reverse_pairs == 1 and cov.chunks == 2
    assert cov.chunk_share_at_k == 0.25  # c1: 1 of its 2 facts at k, c2: 0 of 1
    assert cov.examples_below_k == ["'q2': 1 of 3", "'q3': 0 of 3"]


# --- end to end, against the stub server -----------------------------------------------------------------
def task_of(req: dict) -> str:
    return str(req["messages"][-1]["content"]).split("Task:", 1)[-1]


def scripted(req: dict) -> StubReply:
    """facts: two facts; quiz: one pair on the bridge fact; the top-up: as many questions as its schema allows,
    the first one reversed when asked to; everything else: the generic stub reply."""
    task = task_of(req)
    schema = ((req.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    if task.strip().startswith("Pick the most important facts"):
        pairs = [{"question": "When did the old bridge close?", "quote": BRIDGE, "answer": "3 May 2021"},
                 {"question": "How often did the ferry run?", "quote": FERRY, "answer": "every twenty minutes"}]
    elif "quiz questions" in task:
        pairs = [{"question": "Who found cracks in the bridge piers?", "quote": "engineer Ana Ruiz found cracks",
                  "answer": "Ana Ruiz"}]
    elif task.strip().startswith("One fact from the passage"):
        n = schema["properties"]["pairs"]["maxItems"]
        assert "quote" not in schema["properties"]["pairs"]["items"]["properties"]  # the fact's quote is set by code
        answer = task.split('" with "', 1)[1].split('"', 1)[0]
        pairs = [{"question": f"Rephrased question {i} about {answer[:3]}?", "answer": answer} for i in range(n)]
        if "must contain" in task:
            pairs[0] = {"question": f"Which thing is linked to {answer} in Eastbay?", "answer": "The old bridge"}
    else:
        return passage_reply(req)
    return StubReply(content=json.dumps({"pairs": pairs}), prompt_tokens=100, completion_tokens=40)


def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "eastbay.md").write_text(f"# Eastbay town report\n\n{TEXT}\n")
    return root


def top_up_requests(out: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(out / "qagen.sqlite") as db:
        rows = db.execute("SELECT request FROM requests WHERE prompt_id='fact_questions'").fetchall()
    found = []
    for (stored,) in rows:
        request = json.loads(stored)
        schema = request["schema"] if isinstance(request["schema"], dict) else json.loads(request["schema"])
        found.append((schema["properties"]["pairs"]["maxItems"], request["messages"][-1][1]))
    return sorted(found)


def test_the_top_up_asks_only_for_facts_below_k_and_the_pairs_carry_their_fact(tmp_path, stub, settings_for):
    stub.handler = scripted
    docs, out = write_corpus(tmp_path / "docs"), tmp_path / "out"
    summary = ingest(docs, out, settings_for(facts_k=3, reversal=False))
    assert summary.status == "ok"
    asked = top_up_requests(out)
    # the bridge fact has 2 exposures (its facts pair, the quiz pair): 1 more; the ferry fact has 1: 2 more
    assert [n for n, _ in asked] == [1, 2]
    assert "3 May 2021" in asked[0][1] and "Who found cracks in the bridge piers?" in asked[0][1]  # what it has
    assert "every twenty minutes" in asked[1][1] and "must contain" not in asked[1][1]
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    rows += [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    by_fact: dict[str, list[dict]] = {}
    for row in rows:
        if "fact_id" in row:
            by_fact.setdefault(row["fact_id"], []).append(row)
    assert sorted(len(v) for v in by_fact.values()) == [3, 3]  # every fact reached k
    chunk_id = rows[0]["chunk_id"]
    assert set(by_fact) == {facts.fact_id(chunk_id, BRIDGE), facts.fact_id(chunk_id, FERRY)}
    topped = [r for r in rows if r["perspective"] == "fact_questions"]
    assert len(topped) == 3 and all(r["quote"] in (BRIDGE, FERRY) for r in topped)
    assert summary.facts["histogram"] == {"3+": 2} and summary.facts["below_k"] == 0
    assert summary.calls_per_perspective["fact_questions"] == 2

    again = ingest(docs, out, settings_for(facts_k=3, reversal=False, report=True))  # not the no-op path: re-curated
    assert again.requests_sent == 0 and again.facts == summary.facts  # every request cached, the same facts
    html = (out / "report.html").read_text()
    assert 'data-facts="total">2<' in html and 'data-exposures="3+">2<' in html and 'data-facts="below_k">0<' in html


def test_reversal_adds_a_question_that_names_the_answer(tmp_path, stub, settings_for):
    stub.handler = scripted
    docs, out = write_corpus(tmp_path / "docs"), tmp_path / "out"
    summary = ingest(docs, out, settings_for(facts_k=1, reversal=True))
    assert summary.status == "ok"
    asked = top_up_requests(out)
    assert len(asked) == 2 and all(n == 1 and "must contain" in text for n, text in asked)
    rows = [json.loads(line) for name in ("train.jsonl", "eval.jsonl")
            for line in (out / name).read_text().splitlines()]
    reverse = [r for r in rows if r.get("direction") == "reverse"]
    assert {r["messages"][-2]["content"] for r in reverse} == {
        "Which thing is linked to 3 May 2021 in Eastbay?", "Which thing is linked to every twenty minutes in Eastbay?"}
    assert all(r["messages"][-1]["content"] == "The old bridge" for r in reverse)
    assert summary.facts["reverse_pairs"] == 2


def test_k_of_one_without_reversal_asks_nothing_more(tmp_path, stub, settings_for):
    stub.handler = scripted
    docs, out = write_corpus(tmp_path / "docs"), tmp_path / "out"
    summary = ingest(docs, out, settings_for(facts_k=1, reversal=False))
    assert summary.status == "ok" and top_up_requests(out) == []
    assert "fact_questions" not in summary.calls_per_perspective and summary.facts == {}
