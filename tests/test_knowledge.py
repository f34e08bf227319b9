"""The closed-book knowledge evaluation: questions tied to documents, scored base vs tuned, bad files refused early."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qagen.core import ids
from qagen.corpus.questions import Question
from qagen.evaluation.knowledge import DocRef, match_questions, question_kind, score
from qagen.output.export import corpus_message, system_message

QAGEN = [sys.executable, "-m", "qagen.cli"]
DOC = DocRef(ids.doc_id("bridge text"), "news/bridge.md", "The Eastbay bridge")
OTHER = DocRef(ids.doc_id("library text"), "library.md", "Library opening")
GROUP = ids.group_id([DOC.doc_id, OTHER.doc_id])


def test_questions_are_tied_to_their_documents_by_id_path_name_or_title():
    qs = [
        Question("Who estimated the cost?", ("Ana Ruiz",), doc_id=DOC.doc_id),
        Question("When did the council vote?", ("3 May 2021",), doc_id=ids.short(OTHER.doc_id)),
        Question("What closed?", ("the old bridge",), source="news/bridge.md"),
        Question("Where is it?", ("Eastbay",), source="bridge.md"),  # the file name alone
        Question("What opens in May?", ("the library",), title="Library_opening"),  # a SQuAD article title
        Question("How much was the shelving?", ("4,000 euros",)),  # no document named: the corpus-level message
        Question("Who wrote it?", ("nobody",), source="missing.md"),  # names a document the run did not read
    ]
    items, unmatched = match_questions(qs, [DOC, OTHER], GROUP)
    assert [it.doc_id for it in items] == [DOC.doc_id, OTHER.doc_id, DOC.doc_id, DOC.doc_id, OTHER.doc_id, ""]
    assert items[0].system == system_message(DOC.doc_id, GROUP, DOC.title)  # the message the model trained with
    assert items[5].system == corpus_message(GROUP) and ids.short(GROUP) in items[5].system
    assert unmatched == ["'Who wrote it?' (missing.md)"]  # reported, not silently dropped
    assert [it.kind for it in items] == ["who", "when", "what", "where", "what", "how"]


def test_question_kind_is_the_wh_word():
    assert question_kind("  Who led it?") == "who" and question_kind("In 1905, what happened?") == "other"


def test_scores_and_interval_match_a_hand_computation():
    qs = [Question("Who estimated the cost?", ("Ana Ruiz",), doc_id=DOC.doc_id),
          Question("When did the council vote?", ("3 May 2021",), doc_id=DOC.doc_id)]
    items, _ = match_questions(qs, [DOC], GROUP)
    base = ["I do not know", "In 2020"]
    tuned = ["Ana Ruiz", "The council voted on 3 May"]
    report = score(items, base, tuned, questions_from="q.jsonl", base_model="b", tuned="t", unmatched=[])
    # tuned: q1 exact (EM 1, F1 1, contains 1); q2 tokens [council, voted, on, 3, may] vs [3, may, 2021]:
    # common 2, precision 2/5, recall 2/3 -> F1 = 2*(0.4*0.6667)/(1.0667) = 0.5; EM 0; contains 0 (no "2021").
    # base: q1 F1 0; q2 [in, 2020] vs [3, may, 2021] -> 0.
    o = report.overall
    assert o["count"] == 2 and o["base_f1"] == 0.0 and o["tuned_em"] == 0.5 and o["tuned_contains"] == 0.5
    assert o["tuned_f1"] == pytest.approx(0.75, abs=1e-4)
    # paired bootstrap over 2 questions: the per-question deltas are 1.0 and 0.5, so every resample's mean
    # lies in [0.5, 1.0] and the mean delta is 0.75
    assert o["delta_f1"] == pytest.approx(0.75, abs=1e-4) and 0.5 <= o["delta_f1_low"] <= o["delta_f1_high"] <= 1.0
    assert set(report.per_document) == {"news/bridge.md"} and set(report.per_kind) == {"who", "when"}
    table = report.table()
    assert "closed book on 2 held-out questions" in table
    # resample means are 0.5, 0.75 or 1.0 (P = 1/4, 1/2, 1/4): the 2.5th and 97.5th percentiles are the ends
    assert "75.0 [50.0, 100.0]" in table.splitlines()[3]
    assert "ALL" in table and "doc news/bridge.md" in table and "kind who" in table


def test_a_malformed_questions_file_is_refused_before_any_model_loads(tmp_path: Path):
    out = tmp_path / "out"
    from qagen.store import Store

    Store(out).close()  # an output folder that has never been trained
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "Who?", "answer": "Ana"}\n{"question": "When?"}\n')
    result = subprocess.run([*QAGEN, "eval", str(out), "--questions", str(bad)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "line 2" in result.stderr and "answer" in result.stderr
    assert "no trained" not in result.stderr  # the file was checked first


def test_eval_without_a_trained_model_says_so(tmp_path: Path):
    out = tmp_path / "out"
    from qagen.store import Store

    Store(out).close()
    good = tmp_path / "q.csv"
    good.write_text("question,answer\nWho estimated the cost?,Ana Ruiz\n")
    result = subprocess.run([*QAGEN, "eval", str(out), "--questions", str(good), "--json"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "no trained adapter recorded" in json.loads(result.stdout.strip().splitlines()[-1])["error"]


def test_the_report_page_shows_the_knowledge_table_once_an_eval_wrote_it(tmp_path: Path):
    import html

    from qagen.output.report import write_report
    from qagen.store import Store
    from tests.report_fixture import make_run

    out, run_id = make_run(tmp_path)
    with Store(out) as store:
        page = write_report(store, run_id, out).read_text()
    assert 'id="knowledge"' in page and "Not measured yet" in page and 'id="knowledge-table"' not in page
    items, _ = match_questions([Question("Who estimated the cost?", ("Ana Ruiz",), doc_id=DOC.doc_id)], [DOC], GROUP)
    table = score(items, ["no idea"], ["Ana Ruiz"], questions_from="q.jsonl", base_model="b", tuned="t",
                  unmatched=[]).table()
    (out / "eval_report.json").write_text(json.dumps({"knowledge_table": table}))
    with Store(out) as store:
        page = write_report(store, run_id, out).read_text()
    shown = page.split('id="knowledge-table">', 1)[1].split("</pre>", 1)[0]
    assert html.unescape(shown) == table and "closed book on 1 held-out questions" in shown
    assert 'id="open-book-table"' not in page
    (out / "eval_report.json").write_text(json.dumps({"knowledge_table": table, "open_book_table": "open book <x>"}))
    with Store(out) as store:
        page = write_report(store, run_id, out).read_text()
    assert 'id="open-book-table">open book &lt;x&gt;</pre>' in page  # --open-book's table too, escaped


def test_questions_about_documents_the_run_did_not_read_are_listed_not_scored():
    report = score([], [], [], questions_from="q.jsonl", base_model="b", tuned="t",
                   unmatched=["'Who wrote it?' (missing.md)"])
    assert report.questions == 0 and report.overall == {}
    assert "1 question(s) name a document this run did not read (not scored): 'Who wrote it?' (missing.md)" \
        in report.table()


def test_the_judge_role_scores_closed_book_answers_where_one_is_configured(tmp_path: Path):
    """A served judge (here the stub, answering 'yes' only for 'Ana Ruiz') gives the semantic-match share, base
    vs tuned, cached like every request; with the embedded default no judge is asked."""
    from qagen.config import load_settings
    from qagen.evaluation.evaluate import judge_knowledge, knowledge_judge
    from qagen.store import Store
    from qagen.testing import StubReply, StubServer

    qs = [Question("Who estimated the cost?", ("Ana Ruiz",), doc_id=DOC.doc_id),
          Question("When did the council vote?", ("3 May 2021",), doc_id=DOC.doc_id)]
    items, _ = match_questions(qs, [DOC], GROUP)
    base, tuned = ["I do not know", "In 2020"], ["Ana Ruiz", "It voted in May 2021"]
    assert knowledge_judge(load_settings()) is None  # embedded default: no judge
    stub = StubServer().start()
    try:
        stub.handler = lambda req: StubReply(
            content="yes" if "Candidate answer: Ana Ruiz" in req["messages"][-1]["content"] else "no")
        settings = load_settings(base_url="http://127.0.0.1:9/v1", model="gen", judge_base_url=stub.base_url,
                                 judge_model="judge-model")
        assert knowledge_judge(settings).base_url == stub.base_url
        with Store(tmp_path / "out") as store:
            run_id = store.start_run("eval", {})
            judged = judge_knowledge(store, settings, run_id, items, base, tuned)
            assert judged is not None and judged[1] == [False, False] and judged[2] == [True, False]
            asked = stub.count()
            assert judge_knowledge(store, settings, run_id, items, base, tuned) == judged
            assert stub.count() == asked == 4  # the second time from the store
    finally:
        stub.stop()
    report = score(items, base, tuned, questions_from="q.jsonl", base_model="b", tuned="t", unmatched=[],
                   judged=judged)
    assert report.judge["judged"] == 2 and report.judge["base_yes"] == 0.0 and report.judge["tuned_yes"] == 0.5
    assert report.rows[0].tuned_judge is True and "same meaning as a gold answer on 2 judged" in report.table()
