"""`qagen eval --open-book`: held-out questions over input blocks (its chunk; among distractors; withheld)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qagen.core import ids
from qagen.core.types import Chunk, Document, QAPair
from qagen.corpus.questions import Question
from qagen.evaluation.knowledge import DocRef, ExamItem, match_questions
from qagen.evaluation.openbook import MODES, build, place, score, strip_source
from qagen.evaluation.scoring import is_decline
from qagen.output.contextual import NOT_IN_CONTEXT, SYSTEM, Block, render_answer
from qagen.store import Store

QAGEN = [sys.executable, "-m", "qagen.cli"]
BLOCK = re.compile(r"BEGININPUT\nBEGINCONTEXT\n(.*?)\nENDCONTEXT\n(.*?)\nENDINPUT\n", re.DOTALL)
TEXTS = {
    "bridge.md": ("The Eastbay bridge", ["The Eastbay council voted on 3 May 2021 to close the old bridge.",
                                        "Engineer Ana Ruiz estimated the repair at 12 million euros."]),
    "library.md": ("Library opening", ["The library opens in June. Its budget for new shelving is 4,000 euros."]),
    "park.md": ("Park notes", ["The park keeps 40 oak trees. Volunteers plant more each April."]),
}


def make_run(out: Path) -> dict[str, DocRef]:
    """A finished ingest run through the Store API: three documents, a quiz pair per chunk (the chunks the run's
    pairs came from are the ones open book asks over), one stale chunk of an older chunking of bridge.md."""
    refs = {}
    with Store(out) as store:
        run_id = store.start_run("ingest", {})
        for path, (title, texts) in TEXTS.items():
            doc = Document(ids.doc_id(" ".join(texts)), path, title, "\n\n".join(texts), "markdown")
            chunks = [Chunk(ids.chunk_id(doc.doc_id, t, "k"), doc.doc_id, i, t, title, "", 20) for i, t in enumerate(texts)]
            if path == "bridge.md":  # an old chunking: in the store, named by no pair of this run
                chunks.append(Chunk("stale", doc.doc_id, 9, "Engineer Ana Ruiz estimated the repair.", title, "", 9))
            store.add_document(run_id, doc, chunks)
            pairs = [QAPair(ids.hash_str("p", c.chunk_id), c.chunk_id, doc.doc_id, "quiz", f"What about {c.index}?",
                            "x", "req", "stub") for c in chunks if c.chunk_id != "stale"]
            store.add_pairs(run_id, [(p, f"{path}{i}") for i, p in enumerate(pairs)])
            refs[path] = DocRef(doc.doc_id, path, title)
        store.finish_run(run_id, "ok", {})
    return refs


def questions(refs: dict[str, DocRef]) -> list[ExamItem]:
    qs = [Question("Who estimated the repair?", ("Ana Ruiz",), source="bridge.md", qid="q1"),
          Question("How much is the shelving budget?", ("4,000 euros",), source="library.md", qid="q2"),
          Question("What did the council decide?", ("close the old bridge",), source="bridge.md", qid="q3"),
          Question("Who is the mayor?", ("Lea Kim",), source="park.md", qid="q4"),  # no chunk holds the answer
          Question("How many oaks?", ("40",), qid="q5"),  # no document named
          Question("Who paints the fence?", ("The documents don't say.",), source="park.md", kind="control",
                   qid="q6")]
    items, unmatched = match_questions(qs, list(refs.values()), "g")
    assert unmatched == []
    return items


def test_a_question_is_placed_in_the_chunk_that_holds_its_answer():
    a = Block("a", "d", "T", "s")
    b = Block("b", "d", "T", "s")
    chunks = [(a, "The council met in May."), (b, "Ana Ruiz, the engineer, estimated the cost.")]
    item = ExamItem("1", "Who estimated the cost?", ("ana ruiz",), "sys", "d")
    assert place(item, chunks) == b  # SQuAD-normalised: case and punctuation do not count
    assert place(ExamItem("2", "When?", ("June",), "sys", "d"), chunks) is None
    # no chunk holds the answer: the one covering most of the question's passage (half of it at least)
    passage = ExamItem("3", "When did it meet?", ("in spring",), "sys", "d", context="The council met in May")
    assert place(passage, chunks) == a
    both = [(a, "Ana Ruiz met the council."), (b, "Ana Ruiz, the engineer, estimated the cost.")]
    assert place(item, both) == b  # both hold it: the one sharing more of the question's words


def test_three_prompts_per_placed_question_with_the_right_blocks(tmp_path):
    out = tmp_path / "out"
    refs = make_run(out)
    items = questions(refs)
    with Store(out) as store:
        run_id = store.latest_finished_run("ingest")
        built, unplaced = build(store, run_id, items)
        again, _ = build(store, run_id, items)
    assert built == again  # distractors and positions come from hashes: a re-run asks the same prompts
    assert unplaced == ["'Who is the mayor?' (park.md)", "'How many oaks?' (no document)"]
    assert [(b.qid, b.mode) for b in built] == [(q, m) for q in ("q1", "q2", "q3") for m in MODES]  # no control
    chunk_of = {"q1": TEXTS["bridge.md"][1][1], "q2": TEXTS["library.md"][1][0], "q3": TEXTS["bridge.md"][1][0]}
    doc_of = {"q1": "bridge.md", "q2": "library.md", "q3": "bridge.md"}
    for b in built:
        blocks = BLOCK.findall(b.prompt + "\n")
        assert b.prompt.endswith(f"BEGININSTRUCTION\n{b.question}\nENDINSTRUCTION")
        texts = [text for _, text in blocks]
        own = refs[doc_of[b.qid]]
        assert "stale" not in b.chunk_ids and len(blocks) == len(b.chunk_ids)
        if b.mode == "answer":
            assert texts == [chunk_of[b.qid]] and b.cite == ids.short(own.doc_id)
            assert blocks[0][0] == f"doc: {ids.short(own.doc_id)}\ntitle: {own.title}\nsource: {own.path}"
        elif b.mode == "distractors":
            assert chunk_of[b.qid] in texts and 2 <= len(texts) <= 3
            assert all(f"doc: {ids.short(own.doc_id)}" not in ctx for ctx, t in blocks if t != chunk_of[b.qid])
        else:
            assert b.cite == "" and 1 <= len(texts) <= 2
            assert all(f"doc: {ids.short(own.doc_id)}" not in ctx for ctx, _ in blocks)  # none of its document


def test_a_single_document_run_asks_with_its_chunk_only(tmp_path):
    out = tmp_path / "out"
    refs = make_run(out)
    with Store(out) as store:
        run_id = store.latest_finished_run("ingest")
        built, _ = build(store, run_id, [it for it in questions(refs) if it.qid == "q2"])
        assert {b.mode for b in built} == {"answer", "distractors", "withheld"}
        with store.transaction():  # drop the other documents from the run
            store.db.execute("DELETE FROM run_docs WHERE path != 'library.md'")
        alone, _ = build(store, run_id, [it for it in questions(refs) if it.qid == "q2"])
    assert [b.mode for b in alone] == ["answer"]


def test_the_trained_decline_and_its_citation_are_read_back():
    block = Block("c", "d" * 32, "Library opening", "library.md")
    trained = render_answer("4,000 euros.", block)
    assert strip_source(trained) == "4,000 euros."
    assert strip_source("4,000 euros. Source: doc: dddddddddd") == "4,000 euros. Source: doc: dddddddddd"  # inline
    assert strip_source("It is 40.\nsource:\n doc: x") == "It is 40."
    assert is_decline(NOT_IN_CONTEXT)  # the open-book rows' own decline is a decline
    for reply in ("The given blocks do not contain the answer.", "The input blocks do not say.",
                  "The text above does not say who."):
        assert is_decline(reply), reply
    assert not is_decline("The data given here shows 40 trees.")
    assert SYSTEM.startswith("Answer the instruction from the input blocks")


def test_scores_match_a_hand_computation(tmp_path):
    out = tmp_path / "out"
    refs = make_run(out)
    with Store(out) as store:
        built, unplaced = build(store, store.latest_finished_run("ingest"), questions(refs)[:2])  # q1, q2
    short1, short2 = ids.short(refs["bridge.md"].doc_id), ids.short(refs["library.md"].doc_id)
    # per prompt, (base, tuned): q1 then q2, each answer | distractors | withheld
    replies = [
        ("Ana Ruiz", f"Ana Ruiz.\n\nSource:\ndoc: {short1}"),           # q1 answer: both right, tuned cites
        ("The mayor", f"Ana Ruiz\n\nSource:\ndoc: {short1}"),           # q1 distractors: tuned right and cites
        ("Ana Ruiz", NOT_IN_CONTEXT),                                  # q1 withheld: only tuned declines
        ("4,000", "It is 4,000 euros"),                                # q2 answer: F1 2/3 vs 0.8 (below), no cites
        (NOT_IN_CONTEXT, f"4,000 euros\nSource:\ndoc: {short2}"),      # q2 distractors: base declines (a miss)
        (NOT_IN_CONTEXT, NOT_IN_CONTEXT),                              # q2 withheld: both decline
    ]
    report = score(built, [b for b, _ in replies], [t for _, t in replies], unplaced)
    a, d, w = (report.modes[m] for m in MODES)
    # q2 answer: base ["4000"] vs gold ["4000", "euros"]: P 1, R 1/2 -> F1 2/3; tuned ["it", "is", "4000",
    # "euros"]: P 2/4, R 1 -> F1 2/3 too. Answer mode F1: base (1 + 2/3) / 2, tuned (1 + 2/3) / 2.
    assert a["count"] == 2 and a["base_f1"] == pytest.approx(0.8333, abs=1e-4) == a["tuned_f1"]
    assert a["delta"] == 0.0 and a["base_cited"] == 0.0 and a["tuned_cited"] == 0.5 and a["delta_of"] == "f1"
    assert d["base_f1"] == 0.0 and d["tuned_f1"] == 1.0 and d["base_declined"] == 0.5 and d["tuned_cited"] == 1.0
    assert d["delta"] == 1.0 and d["delta_low"] == d["delta_high"] == 1.0
    assert w["base_declined"] == 0.5 and w["tuned_declined"] == 1.0 and w["delta_of"] == "declined"
    assert w["delta"] == 0.5 and 0.0 <= w["delta_low"] <= w["delta_high"] <= 1.0
    assert report.questions == 2 and report.rows[0].tuned_answer.startswith("Ana Ruiz.")
    table = report.table()
    assert "open book on 2 held-out questions" in table
    assert re.search(r"withheld\s+2\s+-\s+-\s+50\.0 \[0\.0, 100\.0\]\s+-\s+-\s+50\.0\s+100\.0", table), table
    assert re.search(r"\+distractors\s+2\s+0\.0\s+100\.0\s+100\.0 \[100\.0, 100\.0\]\s+0\.0\s+100\.0", table), table


def test_eval_open_book_needs_held_out_questions(tmp_path):
    out = tmp_path / "out"
    make_run(out)
    (out / "eval.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                                             {"role": "assistant", "content": "a"}]}) + "\n")
    model = tmp_path / "model"
    model.mkdir()
    result = subprocess.run([*QAGEN, "eval", str(out), "--open-book", "--adapter", str(model), "--base-model",
                             str(model)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and "--open-book" in result.stderr and "exam" in " ".join(result.stderr.split())


@pytest.mark.embedded
def test_open_book_eval_with_the_real_model(tmp_path, hf_model):
    """The converted embedded model answers every prompt (as base and as a 'tuned' full model folder): the report
    holds each mode, the rows, and the table in eval_report.json and the CLI text."""
    pytest.importorskip("transformers")
    from qagen.config import load_settings
    from qagen.evaluation.evaluate import evaluate

    out = tmp_path / "out"
    refs = make_run(out)
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"question": "Who estimated the repair?", "answer": "Ana Ruiz", "source": "bridge.md"}\n'
                     '{"question": "How much is the shelving budget?", "answer": "4,000 euros", '
                     '"doc_id": "' + ids.short(refs["library.md"].doc_id) + '"}\n')
    with Store(out) as store:
        report = evaluate(out, store, load_settings(), base_model=str(hf_model), adapter_dir=str(hf_model),
                          questions=qfile, judge_answers=False, open_book=True, threads=1)
    ob = report.open_book
    assert ob["questions"] == 2 and ob["unplaced"] == []
    assert {m: ob["modes"][m]["count"] for m in MODES} == {"answer": 2, "distractors": 2, "withheld": 2}
    for row in ob["rows"]:
        assert row["base_answer"].strip() and row["base_answer"] == row["tuned_answer"]  # the same weights, greedy
        assert 0.0 <= row["base_f1"] <= 1.0
    saved = json.loads((out / "eval_report.json").read_text())
    assert saved["open_book"]["modes"] == ob["modes"] and "open book on 2 held-out questions" in report.table()
    assert report.knowledge["questions"] == 2  # the closed-book score is still there
