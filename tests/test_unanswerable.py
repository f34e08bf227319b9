"""'The documents don't say': near-miss questions the documents do not answer, declined by a code-built answer
(prompts/unanswerable.md, --unanswerable), their checks, and the exam's control questions with the eval's decline
share (prompts/exam_unanswerable.md)."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from qagen.config import load_settings
from qagen.corpus.questions import load_questions
from qagen.curate.filters import FilterSettings, PairView, check_unanswerable, screen
from qagen.evaluation import evaluate
from qagen.evaluation.knowledge import ExamItem, score
from qagen.evaluation.scoring import is_decline
from qagen.generate.perspectives import outputs_to_qa
from qagen.pipeline.fingerprint import input_fingerprint
from qagen.pipeline.ingest import ingest
from qagen.prompting.declines import (
    PLAIN_DECLINE,
    decline_answer,
    decline_leaks,
    decline_off_topic,
    seems_answered,
    what_of,
)
from qagen.prompting.prompts import load_prompts
from qagen.prompting.schemas import schema_for
from qagen.testing import StubReply, StubServer
from tests.helpers import passage_reply

ON = load_prompts(switches={"unanswerable"})
PROMPT = ON.by_id("unanswerable")
SUPER_BOWL = (
    "Super Bowl 50 was an American football game to determine the champion of the National Football League (NFL) "
    "for the 2015 season. The American Football Conference (AFC) champion Denver Broncos defeated the National "
    "Football Conference (NFC) champion Carolina Panthers 24-10 to earn their third Super Bowl title. The game was "
    "played on February 7, 2016, at Levi's Stadium in the San Francisco Bay Area at Santa Clara, California.")

BRIDGE = """# The Eastbay bridge

The Eastbay council voted on 3 May 2021 to close the old bridge. The engineer Ana Ruiz estimated the cost of the
repairs at 4 million euros.
"""
KEPT = "Who designed the Eastbay bridge?"  # the document never says: a near miss
ANSWERED = "What did the engineer Ana Ruiz estimate the repair costs at?"  # the document does say
CONTROL = "How tall is the Eastbay bridge?"
FRESH = "When did the Eastbay council vote to close the old bridge?"


# --- the answer is built by code -----------------------------------------------------------------------------------
def test_the_answer_is_built_by_code_from_what_is_asked():
    prompt = replace(PROMPT, n=3)
    schema = schema_for(prompt)
    assert "answer" not in json.loads(schema.json_schema)["properties"]["items"]["items"]["properties"]
    reply = {"items": [
        {"question": "How many people attended Super Bowl 50?", "what": "How many people attended Super Bowl 50."},
        {"question": "Who sang the anthem at Super Bowl 50?", "what": "unknown"},
        {"question": "Who paid for Levi's Stadium?", "what": "The documents don't say who paid for Levi's Stadium"},
    ]}
    got = outputs_to_qa(prompt, schema.validate(json.dumps(reply)), {})
    assert got == [
        ("How many people attended Super Bowl 50?", "The documents don't say how many people attended Super Bowl 50.",
         ""),
        ("Who sang the anthem at Super Bowl 50?", PLAIN_DECLINE, ""),
        ("Who paid for Levi's Stadium?", "The documents don't say who paid for Levi's Stadium.", ""),
    ]


@pytest.mark.parametrize(("what", "answer"), [
    ("when the bridge was painted", "The documents don't say when the bridge was painted."),
    ("Super Bowl 50's attendance", "The documents don't say Super Bowl 50's attendance."),  # a name keeps its case
    ("  the  ticket price\n", "The documents don't say the ticket price."),
    ("", PLAIN_DECLINE),
    ("N/A", PLAIN_DECLINE),
    ("How many people attended?", PLAIN_DECLINE),  # a question, not the phrase
    ("how many people attended the…", PLAIN_DECLINE),  # cut off
    (" ".join(["word"] * 30), PLAIN_DECLINE),  # a paragraph
    ("...", PLAIN_DECLINE),
])
def test_an_odd_what_falls_back_to_the_plain_decline(what, answer):
    assert decline_answer(what) == answer
    assert what_of(answer) == (answer[len("The documents don't say "):-1] if answer != PLAIN_DECLINE else "")


# --- the checks: a question the passage answers is dropped --------------------------------------------------------
@pytest.mark.parametrize(("question", "text", "asked", "why"), [
    ("Where was Super Bowl 50 played?", SUPER_BOWL, (), "may answer"),  # "played" meets in one sentence
    ("Which NFL team did the Denver Broncos defeat in Super Bowl 50?", SUPER_BOWL, (), "may answer"),  # + a name
    ("How many people attended Super Bowl 50?", "Super Bowl 50 was played in 2016. It was attended by 71,088.",
     (), "may answer"),  # one asked word, and the number a "how many" wants
    ("Who is Carolina Panthers?", SUPER_BOWL, (), "only about names"),
    ("What is the capital of France?", SUPER_BOWL, (), "names nothing"),  # not a near miss
    ("Who won Super Bowl 50?", SUPER_BOWL, ("Which team won Super Bowl 50?",), "asked (and answered)"),
])
def test_a_question_the_passage_seems_to_answer_is_dropped(question, text, asked, why):
    got = seems_answered(question, "", text, asked, "Super Bowl 50")
    assert got is not None and why in got
    pair = PairView(question, decline_answer(""), PROMPT, "Super Bowl 50", text, asked=asked)
    assert screen(pair, FilterSettings()) == ("ungrounded", got)
    assert screen(pair, FilterSettings(enabled=False)) is None
    assert check_unanswerable(pair) == ("ungrounded", got)  # what curation runs with --no-filters


@pytest.mark.parametrize("question", [
    "How many people attended Super Bowl 50?", "Who was named MVP of Super Bowl 50?",
    "Who coached the Denver Broncos in Super Bowl 50?", "What was the ticket price for Super Bowl 50?",
])
def test_a_near_miss_the_passage_does_not_answer_is_kept(question):
    assert seems_answered(question, "", SUPER_BOWL, ("Where was Super Bowl 50 played?",), "Super Bowl 50") is None


# The bench teacher's exported declines of RESULTS §22 (the passages cut to the sentences that matter).
PAINTED = "The bridge was painted in the 19th century. It crosses the Krasinski Palace Garden."
BAY = "Super Bowl 50 was played at Levi's Stadium in the San Francisco Bay Area at Santa Clara, California."


@pytest.mark.parametrize(("question", "what", "text", "verdict", "why"), [
    # the "what" is about another question
    ("When did the bridge in the Super Bowl 50 pass through the San Francisco Bay Area?", "when the bridge was painted",
     BAY, "template", "painted is not in it"),
    # the answer leaked into the decline ... and it is about something else too
    ("What is the name of the city where the Super Bowl 50 was held?", "San Francisco Bay Area", BAY, "template",
     "not about its question"),
    ("What was the bridge painted?", "the bridge was painted on the Krasiński Palace Garden in 19th century", PAINTED,
     "template", "not about its question"),
])
def test_a_decline_about_something_else_is_cut(question, what, text, verdict, why):
    got = check_unanswerable(PairView(question, decline_answer(what), PROMPT, "Super Bowl 50", text))
    assert got is not None and got[0] == verdict and why in got[1]


def test_a_decline_that_names_what_the_passage_gives_is_cut_and_a_restatement_is_kept():
    leak = decline_leaks("Where was Super Bowl 50 held?", "where Super Bowl 50 was held, San Francisco Bay Area", BAY)
    assert leak is not None and "bay, francisco, san" in leak and "area" in leak
    assert decline_off_topic("Where was Super Bowl 50 held?", "where Super Bowl 50 was held, San Francisco") is None
    got = check_unanswerable(PairView("Where was Super Bowl 50 held?",
                                      decline_answer("where Super Bowl 50 was held, in San Francisco"), PROMPT,
                                      "Super Bowl 50", BAY))
    assert got is not None and got[0] == "ungrounded" and "leaked" in got[1]
    # the usable one of §22: it restates its question and names nothing the question doesn't
    normans = "The Normans were the people who gave their name to Normandy in the 10th century."
    q = "When did the Normans' first Norman invasion occur?"
    assert decline_off_topic(q, "when the Normans' first Norman invasion occurred") is None
    assert decline_leaks(q, "when the Normans' first Norman invasion occurred", normans) is None
    assert decline_off_topic("How many?", "") is None  # no content word to compare: the other checks decide


def test_the_filters_do_not_throw_the_declines_away():
    for question, what in [("How many people attended Super Bowl 50?", "how many people attended Super Bowl 50"),
                           ("Who was named MVP of Super Bowl 50?", "")]:  # the plain decline: 4 words, no "what"
        answer = decline_answer(what)
        assert screen(PairView(question, answer, PROMPT, "Super Bowl 50", SUPER_BOWL), FilterSettings()) is None
    # the answer is longer than the schema's limit on "what" (max_answer_chars): only "what" is measured
    what = "how many people attended the opening ceremony of Super Bowl 50 at Levi's Stadium"
    assert len(what) < 0.97 * PROMPT.max_answer_chars <= len(decline_answer(what))
    assert screen(PairView("How many people attended the opening ceremony of Super Bowl 50?", decline_answer(what),
                           PROMPT, "Super Bowl 50"), FilterSettings()) is None
    # ... and a "what" that fills the limit was cut
    long_what = "x" * PROMPT.max_answer_chars
    got = screen(PairView("How many people attended Super Bowl 50?", decline_answer(long_what), PROMPT,
                          "Super Bowl 50"), FilterSettings())
    assert got is not None and got[0] == "truncated"
    # an answer that is no longer the code-built decline (a regenerator's rewrite) is not kept
    got = screen(PairView("How many people attended Super Bowl 50?", "About 71,000 people.", PROMPT, "Super Bowl 50",
                          SUPER_BOWL), FilterSettings())
    assert got is not None and got[0] == "template"
    # the question checks of model-written questions apply: one copied from the prompt's own example is cut
    got = screen(PairView("When was the bridge painted?", decline_answer("when the bridge was painted"), PROMPT,
                          "Super Bowl 50"), FilterSettings())
    assert got is not None and got[0] == "template"


def test_the_switch_turns_the_prompts_on_and_is_off_by_default():
    off = load_prompts()
    assert load_settings().unanswerable is False
    assert "unanswerable" not in {p.id for p in off.perspectives}
    assert not off.by_id("exam_unanswerable").enabled
    assert "unanswerable" in {p.id for p in ON.perspectives} and ON.by_id("exam_unanswerable").enabled
    assert not PROMPT.judge and not PROMPT.refine and PROMPT.n == 2 and PROMPT.scope == "document"


# --- a run: the pairs reach train.jsonl when on and not when off; controls reach exam.jsonl only ------------------
def _handler(req: dict) -> StubReply:
    text = json.dumps(req.get("messages"))
    if "that the passage does not answer" in text:  # prompts/unanswerable.md
        items = [{"question": KEPT, "what": "who designed the Eastbay bridge"},
                 {"question": ANSWERED, "what": "what Ana Ruiz estimated the repair costs at"}]
        return StubReply(content=json.dumps({"items": items}))
    if "does not make up what it does not say" in text:  # prompts/exam_unanswerable.md
        items = [{"question": CONTROL, "what": "how tall the Eastbay bridge is"},
                 {"question": KEPT, "what": "who designed the Eastbay bridge"}]  # asked in training too
        return StubReply(content=json.dumps({"items": items}))
    if "examiner testing" in text:  # prompts/exam.md
        pairs = [{"question": FRESH, "quote": "voted on 3 May 2021 to close the old bridge", "answer": "3 May 2021"}]
        return StubReply(content=json.dumps({"pairs": pairs}))
    return passage_reply(req)


@pytest.fixture
def bridge(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bridge.md").write_text(BRIDGE)
    return docs


def _settings(stub: StubServer, **overrides: object):
    base = {"base_url": stub.base_url, "model": "stub-model", "refine": True, "judge": True, "filters": True,
            "dedup": False, "report": False, "exam": True, "eval_fraction": 0.0, "facts_k": 1, "suite": "knowledge"}
    return load_settings(**{**base, **overrides})


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _verdicts(out: Path, perspective: str) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(out / "qagen.sqlite") as db:
        return {q: (v, d) for q, v, d in db.execute(
            "SELECT p.question, v.verdict, v.detail FROM verdicts v JOIN pairs p ON p.pair_id=v.pair_id "
            "WHERE p.perspective=?", (perspective,))}


def test_on_the_declines_reach_train_jsonl_and_the_controls_only_the_exam(bridge, tmp_path):
    with StubServer(_handler) as stub:
        on_settings = _settings(stub, unanswerable=True)
        summary = ingest(bridge, tmp_path / "on", on_settings)
        requests = list(stub.requests)
    out = tmp_path / "on"
    train = _jsonl(out / "train.jsonl") + _jsonl(out / "eval.jsonl")
    declines = {r["messages"][1]["content"]: r["messages"][2]["content"] for r in train
                if r["perspective"] == "unanswerable"}
    assert declines == {KEPT: "The documents don't say who designed the Eastbay bridge."}
    verdicts = _verdicts(out, "unanswerable")
    assert verdicts[ANSWERED][0] == "ungrounded" and "may answer" in verdicts[ANSWERED][1]
    # neither the judge nor the critic loop saw a decline: no request after generation holds its question
    assert not any(KEPT in json.dumps(r.get("messages")) for r in requests)
    assert summary.calls_per_perspective.get("unanswerable") == 1  # document scope: one call per document

    exam = _jsonl(out / "exam.jsonl")
    assert {r["question"]: (r["kind"], r["answers"]) for r in exam} == {
        FRESH: ("exam", ["3 May 2021"]),
        CONTROL: ("control", ["The documents don't say how tall the Eastbay bridge is."]),
    }
    assert _verdicts(out, "exam_unanswerable")[KEPT][0] == "exam_contaminated"  # it is a training question
    assert {q.question: q.kind for q in load_questions(out / "exam.jsonl")}[CONTROL] == "control"
    trained = {r["messages"][1]["content"] for r in train}
    assert CONTROL not in trained and FRESH not in trained
    assert summary.verdicts.get("exam_control") == 1

    with StubServer(_handler) as stub:
        off_settings = _settings(stub, unanswerable=False)
        ingest(bridge, tmp_path / "off", off_settings)
        sent = [json.dumps(r.get("messages")) for r in stub.requests]
    off = tmp_path / "off"
    rows = _jsonl(off / "train.jsonl") + _jsonl(off / "eval.jsonl")
    assert rows and not [r for r in rows if r["perspective"] == "unanswerable"]
    assert [r["kind"] for r in _jsonl(off / "exam.jsonl")] == ["exam"]
    assert not any("that the passage does not answer" in m or "does not make up" in m for m in sent)
    assert input_fingerprint(bridge, on_settings, ON) != input_fingerprint(bridge, off_settings, ON)


# --- the eval: the decline detector, and the decline share of the controls ---------------------------------------
@pytest.mark.parametrize(("answer", "declined"), [
    ("The documents don't say how many people attended Super Bowl 50.", True),
    ("The documents don't say.", True),
    ("The passage does not mention the attendance.", True),
    ("The text doesn’t specify the final score.", True),
    ("The provided context does not contain this information.", True),
    ("The document does not explicitly state the price.", True),
    ("The attendance is not mentioned in the passage.", True),
    ("Not stated in the text.", True),
    ("There is no information about the attendance.", True),
    ("I don't know.", True),
    ("I'm not sure.", True),
    ("71,088 people attended Super Bowl 50.", False),
    ("The documents say the Denver Broncos won.", False),
    ("The passage mentions that Denver won 24-10.", False),
    ("He did not attend the game.", False),
    ("The stadium does not contain a roof.", False),
    ("The cause was not known until 1950.", False),
    ("He was not given a medal.", False),
    ("Denver Broncos", False),
    ("", False),
])
def test_the_decline_detector(answer, declined):
    assert is_decline(answer) is declined


def _items() -> list[ExamItem]:
    real = [ExamItem(f"r{i}", f"Who won game {i}?", ("Denver",), "sys", "d", "a.md", "who") for i in range(2)]
    controls = [ExamItem(f"c{i}", f"How many attended game {i}?", ("The documents don't say.",), "sys", "d", "a.md",
                         "control") for i in range(4)]
    return real + controls


def test_the_eval_reports_the_decline_share_of_the_controls_apart_from_the_score():
    base = ["Denver", "Denver", "71,000 people.", "I don't know.", "About 60,000.", "50,000."]
    tuned = ["Denver", "The documents don't say who won.", "The documents don't say.", "I don't know.",
             "The passage does not mention it.", "50,000."]
    report = score(_items(), base, tuned, questions_from="exam.jsonl", base_model="b", tuned="t", unmatched=[])
    c = report.controls
    assert (c["count"], c["base_declined"], c["tuned_declined"], c["delta"]) == (4, 0.25, 0.75, 0.5)
    assert c["delta_low"] <= 0.5 <= c["delta_high"]
    assert (c["answerable"], c["answerable_base_declined"], c["answerable_tuned_declined"]) == (2, 0.0, 0.5)
    # the score on the real questions leaves the controls out
    assert report.questions == 2 and report.overall["count"] == 2 and set(report.per_kind) == {"who"}
    assert report.overall["base_em"] == 1.0 and report.overall["tuned_em"] == 0.5
    assert "controls: 4 questions the documents don't answer, declined: base 25.0 %, tuned 75.0 %" in report.table()
    plain = score(_items()[:2], base[:2], tuned[:2], questions_from="q", base_model="b", tuned="t", unmatched=[])
    assert plain.controls == {} and "controls" not in plain.table()
    assert math.isnan(score(_items()[2:], base[2:], tuned[2:], questions_from="q", base_model="b", tuned="t",
                            unmatched=[]).controls["answerable_tuned_declined"])


def test_the_eval_judge_is_not_asked_about_controls(monkeypatch):
    sent: list[str] = []

    def fake_judge(store, settings, run_id, jobs):
        sent.extend(item.question for item, _ in jobs)
        return [True] * len(jobs), "fake judge"

    monkeypatch.setattr(evaluate, "judge", fake_judge)
    items = _items()
    name, vb, vt = evaluate.judge_knowledge(None, load_settings(base_url="http://127.0.0.1:9/v1"), 1, items,
                                            ["x"] * 6, ["y"] * 6)
    assert name == "fake judge"
    assert sorted(set(sent)) == ["Who won game 0?", "Who won game 1?"]
    assert vb == vt == [True, True, None, None, None, None]


@pytest.mark.parametrize(("flag", "on"), [(["--unanswerable"], True), (["--no-unanswerable"], False), ([], False)])
def test_the_cli_switch(monkeypatch, tmp_path, flag, on):
    from typer.testing import CliRunner

    import qagen.pipeline.ingest as pipeline
    from qagen.cli.app import app
    from qagen.pipeline.summary import Summary

    seen = []

    def fake_ingest(docs, out, settings, **kwargs):
        seen.append(settings)
        return Summary()

    monkeypatch.setattr(pipeline, "ingest", fake_ingest)
    (tmp_path / "docs").mkdir()
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "docs"), "--out", str(tmp_path / "out"), *flag])
    assert result.exit_code == 0, result.output
    assert [s.unanswerable for s in seen] == [on] and seen[0].prompt_switches == ({"unanswerable"} if on else set())
