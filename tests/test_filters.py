"""The deterministic filters (qagen/curate/filters.py), on real bad replies from the embedded model and the
benchmark teacher (issue 15's list), a good pair of every perspective passing them all, and their place in a run:
verdicts with reasons, no judge call for a filtered pair, the summary and report saying which gate threw it away."""

from __future__ import annotations

import json
import sqlite3

import pytest

from qagen.curate.filters import FilterSettings, PairView, repetition, screen
from qagen.pipeline.ingest import ingest
from qagen.prompting.prompts import load_prompts
from tests.helpers import is_judge, judging, logprob_reply

PROMPTS = load_prompts()
ON = FilterSettings()
COPY = "copy - Shallow and deep copy operations"
NEWS_HEAD = "Currency hits a new low\n\nBy Maria Lopez\n\nPublished: 2011-03-14\n\nThe peso fell on Friday..."


def check(perspective: str, question: str, answer: str, title: str = COPY, head: str = "",
          meta: tuple[tuple[str, str], ...] = ()) -> tuple[str, str] | None:
    return screen(PairView(question, answer, PROMPTS.by_id(perspective), title, head, meta), ON)


# --- each filter on a real bad reply ---------------------------------------------------------------------------
def test_one_letter_summaries_are_too_short():
    got = check("summaries", f'Summarise "{COPY}" in a paragraph.', "m")
    assert got is not None and got[0] == "too_short" and "needs 8" in got[1]
    assert check("summaries", f'Give a detailed summary of "{COPY}", covering its main points.', "l")[0] == "too_short"


def test_a_one_letter_answer_is_dropped_whatever_the_perspectives_minimum():
    # issue 29: the stub's junk reply "l" to a quiz question (min_answer_words: 1) was exported
    for perspective in ("quiz", "facts", "fact_questions", "cloze"):
        got = check(perspective, "Which function of the copy module makes a deep copy?", "l")
        assert got is not None and got[0] == "too_short" and "'l'" in got[1], perspective
    assert check("quiz", "What does copy.copy return for a list?", "ab")[0] == "too_short"
    assert check("quiz", "What does copy.copy return for a list?", " `x` ")[0] == "too_short"  # markup aside


def test_a_short_answer_that_is_a_number_an_initial_or_the_symbol_asked_for_stays():
    assert check("quiz", "How many functions does the copy module define?", "7") is None
    assert check("quiz", "How many functions does the copy module define?", "12") is None
    assert check("quiz", "What was the middle initial of Ulysses S. Grant?", "S.") is None
    assert check("quiz", "Which operator joins two lists in Python's copy examples?", "+") is None
    assert check("quiz", "Which letter marks a shallow copy in the copy table?", "B") is None
    # a symbol the question does not ask for is not an answer
    assert check("quiz", "What does copy.deepcopy return for a list?", "+")[0] in ("echo", "too_short")
    # three characters or more: the word-count minimum decides, as before
    assert check("quiz", "Which module makes shallow copies in Python?", "copy") is None


def test_a_repetition_loop_is_degenerate():
    loop = ("The Shallow Copy is a deep copy of the original, which is a shallow copy of the original, which is a "
            "deep copy of the original, which is a shallow copy of the original.")
    assert repetition(loop) > 0.6
    assert check("facts", "What is a shallow copy in Python's copy module?", loop)[0] == "repetitive"


def test_a_copied_example_relation_and_placeholders_are_not_sentences():
    q = 'In "Markets", how is <a city> related to <an economist>?'
    assert check("entities", q, "<a city> was asked to fund <an economist>.")[0] == "template"
    got = check("entities", 'In "Markets", how is the city related to the economist?',
                "<a city> was asked to fund <an economist>.")
    assert got is not None and got[0] == "template" and "placeholder" in got[1]
    long = "the city " + " ".join(["and the port"] * 12) + " hired the economist."
    got = check("entities", 'In "Markets", how is the city related to the economist?', long)
    assert got is not None and got[0] in ("not_a_sentence", "repetitive")


def test_leaking_templates_and_non_questions():
    assert check("title_questions", "What someone will do or did?", "The council will vote.")[0] == "template"
    assert check("title_questions", "What it is about?", "A vote on the bridge.")[0] == "template"
    assert check("about", "What is", "The copy module.")[0] == "template"
    assert check("summaries", "copy.copy", "copy.copy")[0] == "template"
    assert check("quiz", 'What does {{ name }} return in "copy"?', "A copy.")[0] == "template"


def test_echoes():
    assert check("about", f'What is "{COPY}" about?', "This document")[0] == "echo"
    got = check("entities", f'In "{COPY}", who or what is copy.deepcopy?', "copy.deepcopy")
    assert got is not None and got[0] == "echo" and "question" in got[1]
    cut = "CITY — A strong indication on Friday that the..."
    assert check("facts", "Which city saw a strong indication on Friday?", cut, title=cut)[0] == "echo"
    # a title as the answer is fine where the question does not give it away
    assert check("quiz", "Which game was played on February 7, 2016?", "Super Bowl 50", title="Super Bowl 50") is None


def test_the_embedded_models_restated_titles_and_placeholders():
    """Replies the embedded model wrote on the sample corpus after the first filters (README command 1)."""
    wash = "George Washington: Annual Address to Congress (January 8, 1790)"
    got = check("summaries", f'Give a short summary of "{wash}".',
                "The passage of George Washington: Annual Address to Congress (January 8, 1790)", title=wash)
    assert got is not None and got[0] == "echo" and "title" in got[1]
    assert check("summaries", f'Summarise "{wash}" in a paragraph.',
                 "The passage of the Annual Address to Congress by George Washington, 1790", title=wash)[0] == "echo"
    got = check("about", f'What is "{COPY}" about?',
                "This document is about the [Python 3.11.2] documentation, which covers [specific details].")
    assert got is not None and got[0] == "template" and "placeholder" in got[1]
    assert check("title_questions", "What is the title?", "The Annual Address to Congress", title=wash)[0] == "template"
    # a fact answer may well be words of the title
    assert check("facts", "Who gave the Annual Address to Congress of January 1790?", "George Washington",
                 title=wash) is None
    # markdown links are not placeholders
    assert check("section_summary", f'What does the section "Interface" of "{COPY}" say?',
                 "It describes [`copy.copy`](#copy.copy), which returns a shallow copy of an object.") is None


def test_answers_that_name_nothing_are_echoes():
    """The benchmark teacher's entity answers on the knowledge benchmark's corpus (RESULTS §24): 10 of 30 exported
    pairs before this check, 7 of them answers like these."""
    sotu = "State of the Union, 1898 (William McKinley)"
    for answer in ("The subject of the passage", "The author of the passage.", "the main idea of the text"):
        got = check("entities", f'In "{sotu}", who or what is General Miles?', answer, title=sotu)
        assert got is not None and got[0] == "echo" and "names nothing" in got[1], answer
    # an answer with one word that names something passes
    assert check("entities", f'In "{sotu}", who or what is General Miles?', "The commander of the expedition to "
                 "Guanica.", title=sotu) is None
    assert check("metadata", f'Who is the author of "{sotu}"?', "William McKinley", title=sotu) is None
    assert check("quiz", "How many companies of the Signal Corps went with General Miles?", "One", title=sotu) is None


def test_an_echo_with_other_accents_is_an_echo():
    assert check("title_questions", "What is the Łazienki Park?", "Lazienki Park", title="Warsaw")[0] == "echo"


def test_a_relation_must_be_stated_in_one_sentence_of_the_passage():
    """Real relations from the benchmark teacher on SQuAD's Super Bowl 50 article."""
    passage = ("The American Football Conference (AFC) champion Denver Broncos defeated the National Football "
               "Conference (NFC) champion Carolina Panthers 24–10 to earn their third Super Bowl title. The game "
               "was played on February 7, 2016, at Levi's Stadium in the San Francisco Bay Area at Santa Clara.")

    def rel(subject: str, obj: str, answer: str) -> tuple[str, str] | None:
        return check("entities", f'In "Super Bowl 50", how is {subject} related to {obj}?', answer,
                     title="Super Bowl 50", head=passage)

    assert rel("Denver Broncos", "Carolina Panthers", "Denver Broncos defeated Carolina Panthers.") is None
    got = rel("Denver Broncos", "Levi's Stadium", "Denver Broncos defeated Levi's Stadium.")
    assert got is not None and got[0] == "ungrounded" and "sentence" in got[1]
    assert rel("Carolina Panthers", "Santa Clara", "Carolina Panthers hosted Santa Clara.")[0] == "ungrounded"


def test_questions_that_point_at_the_passage():
    got = check("title_questions", "What is the name of the first person mentioned in the passage?", "Rollo")
    assert got is not None and got[0] == "template" and "passage" in got[1]


def test_answers_cut_at_the_limit():
    limit = PROMPTS.by_id("facts").max_answer_chars
    cut = ("The deepcopy function keeps a memo dictionary of objects already copied during the current pass " * 5)[:limit]
    assert check("facts", "How does copy.deepcopy avoid infinite recursion?", cut)[0] in ("truncated", "repetitive")
    mid = ("The module defines two functions, copy and deepcopy, that build shallow and deep copies of compound "
           "objects such as lists or class instances and that the user calls with one argument and which then")
    got = check("section_summary", f'What does the section "Interface" of "{COPY}" say?', mid)
    assert got is not None and got[0] == "truncated" and "mid-sentence" in got[1]


def test_metadata_must_be_stated_as_such():
    q_date = 'When was "Currency hits a new low" written or published?'
    head_mentions = "Currency hits a new low\n\nThe peso fell on Friday below its 2010-06-07 low of 12.9 per dollar."
    got = check("metadata", q_date, "2010-06-07", title="Currency hits a new low", head=head_mentions)
    assert got is not None and got[0] == "ungrounded" and "not stated" in got[1]
    # a dateline, or the file's own metadata, is a statement of the date
    assert check("metadata", q_date, "2011-03-14", title="Currency hits a new low", head=NEWS_HEAD) is None
    assert check("metadata", q_date, "1790-01-08", title="First Annual Message", head="Gentlemen of the Senate",
                 meta=(("date", "1790-01-08"),)) is None
    q_author = f'Who wrote "{COPY}"?'
    assert check("metadata", q_author, "The Shallow and Deep Copy Operation", head=f"# {COPY}\n\nSource code")[0] \
        == "ungrounded"
    assert check("metadata", 'Who wrote "Currency hits a new low"?', "Maria Lopez", title="Currency hits a new low",
                 head=NEWS_HEAD) is None
    wash = "George Washington: Annual Address to Congress (January 8, 1790)"
    assert check("metadata", f'Who wrote "{wash}"?', "George Washington", title=wash, head="Gentlemen of the Senate",
                 meta=(("author", "George Washington"),)) is None  # the title names its author: no echo
    assert check("metadata", "What is the title of the document ab12cd34ef?", "The Copy Module Guide")[0] == "ungrounded"
    assert check("metadata", "What is the title of the document ab12cd34ef?", COPY) is None


# --- good pairs pass every filter ---------------------------------------------------------------------------------
GOOD = [
    ("quiz", 'What does copy.deepcopy() use to avoid copying the same object twice in "copy"?', "A memo dictionary."),
    ("facts", "Who gave the First Annual Message to Congress in 1790?", "George Washington"),
    ("facts", "When did the Eastbay council vote to close the old bridge?", "3 May 2021"),
    ("about", f'What is "{COPY}" about?', "Python's copy module, which makes shallow and deep copies of objects."),
    ("summaries", f'Give a short summary of "{COPY}".',
     "The copy module offers copy() for shallow copies and deepcopy() for deep copies of compound objects."),
    ("section_summary", f'What does the section "Interface" of "{COPY}" say?',
     "It lists the module's two functions, copy() and deepcopy(), and the exception copy.Error they may raise."),
    ("entities", f'In "{COPY}", who or what is deepcopy?', "A function that copies an object and everything in it."),
    ("entities", f'In "{COPY}", how is deepcopy related to the memo dictionary?', "deepcopy keeps the memo dictionary."),
    ("title_questions", "What does the copy module let a Python program copy?", "Lists, dicts and class instances."),
    ("metadata", "What is the title of the document ab12cd34ef?", COPY),
    ("identity", "What is document ab12cd34ef about?", "Python's copy module and its shallow and deep copies."),
]


@pytest.mark.parametrize(("perspective", "question", "answer"), GOOD)
def test_a_good_pair_passes_every_filter(perspective, question, answer):
    assert check(perspective, question, answer) is None


def test_filters_can_be_turned_off():
    off = FilterSettings(enabled=False)
    assert screen(PairView(f'Summarise "{COPY}" in a paragraph.', "m", PROMPTS.by_id("summaries"), COPY), off) is None


# --- in a run --------------------------------------------------------------------------------------------------------
def test_filtered_pairs_get_their_verdict_and_cost_no_judge_call(corpus, tmp_path, stub, settings_for):
    """The stub's canned replies ('short 1a2b about the passage') are too short for a summary: with the judge on,
    those pairs are thrown away by the filter, named as such, and never sent to the judge."""
    from tests.helpers import YES

    stub.handler = judging(lambda task: logprob_reply(YES))
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(judge=True, filters=True, report=True))
    assert s.status == "ok"
    with sqlite3.connect(out / "qagen.sqlite") as db:
        rows = db.execute("SELECT v.verdict, v.detail, p.perspective, p.question, p.answer FROM verdicts v "
                          "JOIN pairs p ON p.pair_id=v.pair_id").fetchall()
    filtered = [r for r in rows if r[1].startswith("filter:")]
    assert filtered and {r[0] for r in filtered} <= {"too_short", "repetitive", "ungrounded", "echo", "template"}
    assert any(r[0] == "too_short" and r[2] == "summaries" for r in filtered)
    assert sum(s.filtered.values()) == len(filtered) and s.screened == len(filtered)
    judged_questions = {json.dumps(r["messages"]) for r in stub.requests if is_judge(r)}
    for _, _, _, question, answer in filtered:
        assert not any(question in j and answer in j for j in judged_questions), question
    exported = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    exported += [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert exported and not any(r["perspective"] == "summaries" for r in exported)
    html = (out / "report.html").read_text()
    assert 'data-source="too_short">filter<' in html and "too_short (filter)" in html


def test_a_stub_writing_junk_for_three_replies_in_ten_exports_no_junk(corpus, tmp_path, stub, settings_for):
    # issue 29: "l" as a quiz answer, under a quote the passage holds, passed min_answer_words and grounding
    from qagen.testing.junk import JUNK, JunkInjector
    from tests.helpers import passage_reply

    junk = JunkInjector(0.3, seed=7, handler=passage_reply)
    stub.handler = junk
    out = tmp_path / "out"
    # quiz x4 and facts x2 a chunk; one request at a time, so which requests get junk is the same every run
    s = ingest(corpus, out, settings_for(filters=True, dedup=True, suite="knowledge", concurrency=1))
    assert junk.injected >= 5 and s.status == "ok"
    rows = [json.loads(line) for name in ("train.jsonl", "eval.jsonl") for line in (out / name).open()]
    answers = [r["messages"][2]["content"].strip() for r in rows]
    assert not [a for a in answers if a in JUNK], answers
    assert len([r for r in rows if r["perspective"] in ("quiz", "facts")]) >= 2  # the other replies still make pairs
    with sqlite3.connect(out / "qagen.sqlite") as db:  # the junk was drafted, and dropped with a reason
        dropped = db.execute("SELECT p.answer, v.verdict FROM pairs p JOIN verdicts v ON v.pair_id = p.pair_id").fetchall()
    assert any(a in JUNK and v != "exported" for a, v in dropped)
