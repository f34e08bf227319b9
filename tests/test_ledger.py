"""The fact ledger and its answer-first questions (issue 26): spans checked verbatim, stable fact IDs, the question
checks, the budget rule, cloze rows, the summary's figures, a fully cached re-run, and the coverage map."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from qagen.core.types import Chunk, Document, Fact
from qagen.corpus.spans import find_spans, sentences
from qagen.generate.ledger import allocate, code_facts, fact_id, model_facts, select
from qagen.generate.question_checks import align, check_question, cloze_sentence, leaks
from qagen.output.coverage_map import MAX_QUESTIONS
from qagen.pipeline.ingest import ingest
from qagen.testing.stub_server import StubReply
from tests.helpers import passage_reply

BRIDGE = ("# Eastbay bridge\n\nThe Eastbay council voted on 3 May 2021 to close the old bridge. "
          "The engineer Ana Ruiz estimated the repairs at $4.5M, and the work takes 18 months. "
          "A ferry run by Harbour Lines carried 2,000 people a day while the bridge was shut.\n")
CONFIG = ("# gc settings\n\n`gc.auto` (`integer`)\n\nWhen there are approximately more than this many loose "
          "objects, `git gc --auto` packs them. The default value is 6700. Setting it to 0 disables it.\n")


def doc_and_chunk(text: str, path: str = "bridge.md") -> tuple[Document, Chunk]:
    doc = Document("d" * 32, path, text.splitlines()[0].lstrip("# "), text, "markdown")
    return doc, Chunk("c" * 32, doc.doc_id, 0, text, doc.title, "", 100)


def facts_of(text: str) -> list[Fact]:
    doc, chunk = doc_and_chunk(text)
    return select(code_facts(doc, chunk, sentences(text)), 40)


# --- the ledger -------------------------------------------------------------------
def test_code_finds_names_numbers_dates_and_code_terms_inside_their_sentences():
    spans = find_spans(BRIDGE)
    found = {s.text: s.kind for s in spans}
    assert found["3 May 2021"] == "date" and found["$4.5M"] == "number" and found["18 months"] == "number"
    assert found["Ana Ruiz"] == "name" and found["Harbour Lines"] == "name" and found["2,000 people"] == "number"
    assert "Eastbay bridge" not in found  # the heading is a title, not a fact
    for s in spans:  # each span is verbatim at its offset, inside its sentence
        assert BRIDGE[s.start:s.end] == s.text and s.text in s.sentence.text
    code = {s.text: s.kind for s in find_spans(CONFIG)}
    assert code["gc.auto"] == "code" and code["git gc --auto"] == "code" and code["6700"] == "number"
    assert code["integer"] == "code"


def test_converted_web_pages_give_no_link_targets_and_sentences_run_across_line_breaks():
    # issue 29's hand look at samples/docs: "pickle.html", "github.com" and "Convert Python" were asked as facts
    text = ("See the module [`pickle`](pickle.html#module-pickle \"pickle: Convert Python objects to streams.\") here.\n\n"
            "**Source code:** [Lib/copy.py](https://github.com/python/cpython/tree/3.11/Lib/copy.py) for more.\n\n"
            "* A *shallow copy* constructs a new compound object and then (to the extent\n"
            " possible) inserts *references* into it.\n\n"
            "*exception* copy.Error\n: Raised for module specific errors.\n")
    spans = {s.text: s for s in find_spans(text)}
    assert set(spans) == {"pickle", "Lib/copy.py", "references", "copy.Error"}  # no "exception", no URL parts
    assert spans["references"].sentence.text.endswith("(to the extent\n possible) inserts *references* into it.")


def test_code_finds_what_a_sentence_says_something_is_and_the_things_it_lists():
    text = ("The welfare of our country is the great object to which our cares ought to be directed. "
            "The former is called to implement the shallow copy operation. This module is a thing of beauty. "
            "It calls for the exertion of your patriotism, firmness, and wisdom. It matters for compound objects "
            "(objects that contain other objects, like lists or class instances). It copies types like module, "
            "method, stack trace, file, socket, window, or any similar types. Recursive objects (compound objects "
            "that, directly or indirectly, contain a reference to themselves) may cause a recursive loop.")
    kinds = {(s.text, s.kind) for s in find_spans(text)}
    assert ("The welfare of our country", "subject") in kinds and ("patriotism, firmness, and wisdom", "list") in kinds
    assert ("lists or class instances", "list") in kinds
    assert not {t for t, k in kinds if k in ("subject", "list")} - {
        "The welfare of our country", "patriotism, firmness, and wisdom", "lists or class instances"}


def test_a_definition_list_entry_is_asked_both_ways_by_template(tmp_path, stub, settings_for):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "copy.md").write_text("# copy module\n\nInterface summary:\n\ncopy.deepcopy(*x*[, *memo*])\n"
                                  ": Return a deep copy of *x*.\n")
    out = tmp_path / "out"
    ingest(docs, out, settings_for(suite="ledger", filters=True, dedup=True))
    rows = {r["messages"][1]["content"]: r["messages"][2]["content"] for name in ("train.jsonl", "eval.jsonl")
            for r in map(json.loads, (out / name).open()) if r["perspective"] == "cloze"}
    assert rows == {
        'In "copy module": which entry is documented as "Return a deep copy of x"?': "copy.deepcopy",
        'In "copy module": what does the documentation say about copy.deepcopy(x[, memo])?': "Return a deep copy of x.",
        'In "copy module": copy.deepcopy(x[, what]) : Return a deep copy of x?': "memo"}


def test_a_span_the_model_names_is_kept_only_when_it_is_verbatim_in_one_sentence():
    doc, chunk = doc_and_chunk(BRIDGE)
    sents = sentences(BRIDGE)
    kept, rejected = model_facts(["close the old bridge", "ESTIMATED THE REPAIRS", "the new tunnel",
                                  "estimated the repairs at $5M", "Who closed the bridge?"], doc, chunk, sents)
    assert [f.span for f in kept] == ["close the old bridge", "estimated the repairs"]  # the chunk's own casing
    assert rejected == 3 and all(f.source == "model" for f in kept)
    assert all(BRIDGE[f.start:f.start + len(f.span)] == f.span for f in kept)


def test_fact_ids_are_content_hashes_of_the_chunk_text_span_and_sentence():
    facts = facts_of(BRIDGE)
    again = facts_of(BRIDGE)
    assert [f.fact_id for f in facts] == [f.fact_id for f in again] and len({f.fact_id for f in facts}) == len(facts)
    f = next(f for f in facts if f.span == "Ana Ruiz")
    assert f.fact_id == fact_id(BRIDGE, "  ana   RUIZ ", f.sentence.upper())  # case and spacing don't count
    assert f.fact_id != fact_id(BRIDGE + " More text.", f.span, f.sentence)  # an edit in its own chunk: new facts


def test_select_keeps_every_sentence_when_a_chunk_has_more_facts_than_the_limit():
    facts = facts_of(BRIDGE)
    assert len(facts) > 4
    chosen = select(facts, 3)
    assert len(chosen) == 3 and len({f.sentence for f in chosen}) == 3  # one from each sentence first
    assert [f.start for f in chosen] == sorted(f.start for f in chosen)


def test_allocation_reaches_k_for_every_fact_before_any_fact_gets_more():
    order = ["a", "b", "c", "d"]
    assert allocate({}, order, 3) == {"a": 3, "b": 3, "c": 3, "d": 3}
    assert allocate({"a": 2, "b": 3}, order, 3) == {"a": 1, "c": 3, "d": 3}  # what each lacks, never past k
    for limit in range(0, 13):  # any budget is spent level by level
        plan = allocate({"a": 1}, order, 3, limit)
        have = {fid: (1 if fid == "a" else 0) + plan.get(fid, 0) for fid in order}
        assert sum(plan.values()) == min(limit, 11)
        assert max(have.values()) - min(have.values()) <= 1 or min(have.values()) == 1 and have["a"] == 1
        assert max(have.values()) <= 3
        low = min(have.values())
        assert all(n <= low + 1 for n in have.values())  # nobody is two levels ahead of anybody


# --- the checks ---------------------------------------------------------------------
def test_question_checks_drop_leaks_questions_that_name_nothing_and_non_questions():
    facts = {f.span: f for f in facts_of(BRIDGE)}
    ruiz, date = facts["Ana Ruiz"], facts["3 May 2021"]
    assert check_question("Which engineer estimated the Eastbay bridge repairs?", ruiz, "Eastbay bridge") == ""
    assert check_question("What did Ana Ruiz estimate for the Eastbay bridge?", ruiz, "Eastbay bridge") == "leak"
    assert leaks("When did the council vote on 3 May 2021?", date.span) and leaks("Was it ana ruiz's?", "Ana Ruiz")
    assert check_question("Who was the one that did it?", ruiz, "Eastbay bridge") == "not_standalone"
    assert check_question("Who is named in the passage about repairs?", ruiz, "Eastbay bridge") == "not_standalone"
    assert check_question("The engineer estimated the repairs", ruiz, "Eastbay bridge") == "not_a_question"


def test_a_question_written_for_the_wrong_answer_of_its_sentence_goes_to_the_right_one():
    facts = facts_of(BRIDGE)
    by_span = {f.span: f for f in facts}
    sentence = by_span["$4.5M"].sentence
    siblings = [f for f in facts if f.sentence == sentence]
    start = BRIDGE.index(sentence)
    # written for "18 months", but it asks what the engineer estimated the repairs at
    moved = align("How much did the Eastbay engineer estimate the repairs would cost?", by_span["18 months"],
                  siblings, start)
    assert moved is not None and moved.span == "$4.5M"
    assert align("How long does the bridge work take?", by_span["18 months"], siblings, start).span == "18 months"
    assert align("What is the capital of France?", by_span["18 months"], siblings, start) is None  # off target


def test_cloze_sentence_blanks_the_span_and_keeps_its_surroundings():
    f = next(f for f in facts_of(BRIDGE) if f.span == "Harbour Lines")
    assert cloze_sentence(f) == "A ferry run by ____ carried 2,000 people a day while the bridge was shut."
    long = Fact("x", "c", "d", "X", " ".join(f"w{i}" for i in range(60)) + " X " + "end.", 0, "name", "code")
    cut = cloze_sentence(long, 10)
    assert "____" in cut and cut.startswith("...") and len(cut.split()) <= 12
    # a heading with a blank in it asks nothing: no cloze row (the hand audit's two unanswerable rows) ...
    workers = Fact("x", "c", "d", "autovacuum_max_workers", "`autovacuum_max_workers` (`integer`)", 0, "code", "code")
    window = Fact("x", "c", "d", "gc.aggressiveWindow", "`gc.aggressiveWindow`", 0, "code", "code")
    assert cloze_sentence(workers) == "" and cloze_sentence(window) == ""
    assert cloze_sentence(window, follow="\n\n") == ""
    # ... unless the entry's description follows it: then the row asks for the term it describes
    described = cloze_sentence(workers, follow="\n\nSpecifies the maximum number of autovacuum processes that "
                               "may be running at any one time. The default is three.")
    assert described.startswith("____ (`integer`) Specifies the maximum number of autovacuum processes")  # no `____`
    assert "autovacuum_max_workers" not in described
    # markdown as a reader sees it (issue 29): a link as its text, no emphasis marks, no bullet; a salutation asks
    # nothing ("who: I embrace ...")
    pickle = Fact("x", "c", "d", "pickle", '* It is treated by the [`pickle`](pickle.html#module-pickle "pickle: '
                  'Convert Python objects to streams of bytes and back.") module, *shallow* or not.', 0, "code", "code")
    assert cloze_sentence(pickle) == "It is treated by the ____ module, shallow or not."
    hello = Fact("x", "c", "d", "Fellow-Citizens of the Senate", "Fellow-Citizens of the Senate:", 0, "name", "code")
    assert cloze_sentence(hello, follow="\n\nI embrace with great satisfaction the opportunity which now presents") == ""
    memo = Fact("x", "c", "d", "memoize", "Sometimes called \u201cmemoize\u201d.", 0, "quoted", "code")
    assert cloze_sentence(memo) == "Sometimes called \u201c____\u201d."


# --- end to end on the stub server --------------------------------------------------------
def _marked(task: str) -> dict[int, str]:
    return {int(n): span for n, span in re.findall(r"\[(\d+): ([^\]]+)\]", task)}


def ledger_reply(req: dict) -> StubReply:
    """Answers fact_questions requests with questions built from the words around each marked span (they pass
    the checks); a span named "Ana Ruiz" also gets a question that leaks it. Everything else: passage_reply."""
    schema = ((req.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    if "items" not in schema.get("properties", {}):
        return passage_reply(req)
    task = req["messages"][-1]["content"]
    sentence = next(line for line in task.splitlines() if "[" in line and ":" in line)
    items = []
    for n, need in re.findall(r"^(\d+): (\d+) question", task, re.MULTILINE):
        span = _marked(task)[int(n)]
        before = re.sub(r"\[\d+: ([^\]]+)\]", r"\1", sentence.split(f"[{n}: ")[0]).strip(' "').split()[-3:]
        after = re.sub(r"\[\d+: ([^\]]+)\]", r"\1", sentence.split(f"[{n}: {span}]")[1]).strip(' ".').split()[:3]
        questions = [f"In the Eastbay bridge story, what comes after {' '.join(before)}?",
                     f"Which Eastbay detail goes with {' '.join(after) or ' '.join(before)}, round {n}?",
                     f"What did the Eastbay report state about {' '.join(before[-2:])} {' '.join(after[:1])}?"]
        questions = questions[: int(need)]
        if span == "Ana Ruiz":
            questions[0] = "Who is Ana Ruiz in the Eastbay bridge story?"
        items.append({"number": int(n), "questions": questions})
    return StubReply(content=json.dumps({"items": items}), prompt_tokens=120, completion_tokens=60)


def ledger_settings(settings_for, **extra):
    return settings_for(suite="ledger-questions", facts_k=2, filters=True, dedup=True, **extra)


def exported(out: Path) -> list[dict]:
    return [json.loads(line) for name in ("train.jsonl", "eval.jsonl")
            for line in (out / name).read_text().splitlines()]


def test_answer_first_pairs_answer_with_the_span_and_a_leak_is_dropped(tmp_path, stub, settings_for):
    stub.handler = ledger_reply
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    (docs / "bridge.md").write_text(BRIDGE)
    summary = ingest(docs, out, ledger_settings(settings_for))
    assert summary.status == "ok"
    rows = exported(out)
    ledger = [r for r in rows if r["perspective"] == "fact_questions"]
    assert ledger and all(r["messages"][-1]["content"] in BRIDGE for r in ledger)  # the answer is a span
    assert all(r["fact_id"] and r["sentence"] in BRIDGE for r in ledger)
    assert not any("Ana Ruiz" in r["messages"][-2]["content"] for r in ledger)  # the leaking question is gone
    with sqlite3.connect(out / "qagen.sqlite") as db:
        leak = db.execute("SELECT p.question, v.detail FROM verdicts v JOIN pairs p ON p.pair_id=v.pair_id "
                          "WHERE v.verdict='leak'").fetchall()
        facts = db.execute("SELECT fact_id, span FROM facts").fetchall()
    assert set(leak) == {("Who is Ana Ruiz in the Eastbay bridge story?", "ledger check: the question holds its own answer")}
    per_fact: dict[str, int] = {}
    for r in ledger:
        per_fact[r["fact_id"]] = per_fact.get(r["fact_id"], 0) + 1
    assert max(per_fact.values()) <= 2  # never past k
    assert {fid for fid, _ in facts} >= set(per_fact)
    cloze = [r for r in rows if r["perspective"] == "cloze"]
    # each asks its sentence as a question, the span's place taken by a question word
    ferry = next(r for r in cloze if r["messages"][-1]["content"] == "Harbour Lines")
    assert ferry["messages"][-2]["content"] == ('In "Eastbay bridge": A ferry run by who carried 2,000 people a '
                                                'day while the bridge was shut?')
    assert all(r["messages"][-2]["content"].endswith("?") and r["messages"][-1]["content"] not in
               r["messages"][-2]["content"] for r in cloze)
    # one cloze row per fact, but none where the title gives the answer away ("Eastbay" in "Eastbay bridge")
    assert sorted(r["messages"][-1]["content"] for r in cloze) == sorted(s for _, s in facts if s != "Eastbay")
    # the summary's figures agree with the rows
    f = summary.facts
    assert f["facts"] == len(facts) and f["facts_per_document"] == {"bridge.md": len(facts)}
    assert f["cloze_rows"] == len(cloze) and f["at_k"] <= f["exposed"] <= f["facts"]
    assert f["exposed"] >= len(per_fact) and f["at_k"] >= sum(1 for n in per_fact.values() if n >= 2)
    assert f["teacher_tokens"] == summary.teacher_tokens > 0
    assert f["tokens_per_exported_pair"] == round(summary.teacher_tokens / summary.pairs_total, 1)


def test_the_served_ledger_teaches_every_fact_by_cloze_and_asks_the_teacher_only_for_the_rest(
        tmp_path, stub, settings_for):
    """The default suite for a served model: cloze rows for the facts; the teacher writes no fact questions."""
    stub.handler = ledger_reply
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    (docs / "bridge.md").write_text(BRIDGE)
    summary = ingest(docs, out, settings_for(suite="ledger", filters=True, dedup=True))
    rows = exported(out)
    assert "fact_questions" not in {r["perspective"] for r in rows}
    assert not [r for r in stub.requests if "Each numbered part in brackets is an answer" in json.dumps(r)]
    with sqlite3.connect(out / "qagen.sqlite") as db:
        spans = {s for (s,) in db.execute("SELECT span FROM facts")}
    cloze = {r["messages"][-1]["content"] for r in rows if r["perspective"] == "cloze"}
    assert cloze == spans - {"Eastbay"}  # every fact but the one its title gives away
    # one row per fact is the plan (k = 1), and every fact that got one is covered, in the summary and the report
    assert summary.facts["cloze_rows"] == len(cloze) and summary.facts["k"] == 1
    assert summary.facts["exposed"] == summary.facts["at_k"] >= len(cloze)


def test_the_top_up_asks_again_only_for_facts_below_k(tmp_path, stub, settings_for):
    """The stub's first reply gives every fact one question; the top-up asks only for the missing one each."""
    asked: list[dict[int, int]] = []

    def stingy(req: dict) -> StubReply:
        reply = ledger_reply(req)
        task = req["messages"][-1]["content"] if req.get("messages") else ""
        if "question" in task and "[" in task and reply.content.startswith('{"items"'):
            asked.append({int(n): int(k) for n, k in re.findall(r"^(\d+): (\d+) question", task, re.MULTILINE)})
            body = json.loads(reply.content)
            if "asked already" not in task:  # round 1: one question each
                for item in body["items"]:
                    item["questions"] = item["questions"][:1]
            reply.content = json.dumps(body)
        return reply

    stub.handler = stingy
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    (docs / "bridge.md").write_text(BRIDGE.replace("Ana Ruiz", "Ana Lopez"))
    summary = ingest(docs, out, ledger_settings(settings_for))
    assert summary.status == "ok"
    first = [a for a in asked if set(a.values()) == {2}]
    top_up = [a for a in asked if set(a.values()) == {1}]
    assert first and top_up and len(first) + len(top_up) == len(asked)
    assert sum(len(a) for a in top_up) <= sum(len(a) for a in first)


def test_a_rerun_is_fully_cached_and_writes_the_same_dataset(tmp_path, stub, settings_for):
    stub.handler = ledger_reply
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    (docs / "bridge.md").write_text(BRIDGE)
    first = ingest(docs, out, ledger_settings(settings_for))
    train = (out / "train.jsonl").read_bytes()
    sent = len(stub.requests)
    again = ingest(docs, out, ledger_settings(settings_for, report=True))  # a setting changed: not the no-op path
    assert again.status == "ok" and again.requests_sent == 0 and len(stub.requests) == sent
    assert (out / "train.jsonl").read_bytes() == train and again.facts["facts"] == first.facts["facts"]
    assert again.teacher_tokens == first.teacher_tokens  # the cached replies still count as what the data cost


def test_fact_ids_survive_an_edit_elsewhere_in_the_document(tmp_path, stub, settings_for):
    stub.handler = ledger_reply
    docs = tmp_path / "docs"
    docs.mkdir()
    part2 = "\n\n## Later\n\nThe new bridge opened in 2024 with 4 lanes and a toll of $2.\n"  # the second chunk
    (docs / "bridge.md").write_text(BRIDGE + part2)
    settings = ledger_settings(settings_for, chunk_size=60, chunk_overlap=0)
    ingest(docs, tmp_path / "a", settings)
    (docs / "bridge.md").write_text(BRIDGE + part2.replace("4 lanes", "six lanes"))
    ingest(docs, tmp_path / "b", settings)

    def facts(out: Path) -> dict[str, str]:
        with sqlite3.connect(out / "qagen.sqlite") as db:
            return dict(db.execute("SELECT span, fact_id FROM facts").fetchall())

    a, b = facts(tmp_path / "a"), facts(tmp_path / "b")
    assert a["Ana Ruiz"] == b["Ana Ruiz"] and a["3 May 2021"] == b["3 May 2021"]  # the first chunk's facts
    assert a["2024"] != b["2024"] and a["$2"] != b["$2"]  # the edited chunk's facts are new
    with sqlite3.connect(tmp_path / "a" / "qagen.sqlite") as db_a, sqlite3.connect(tmp_path / "b" / "qagen.sqlite") as db_b:
        doc_a, doc_b = (db.execute("SELECT doc_id FROM documents").fetchone()[0] for db in (db_a, db_b))
    assert doc_a != doc_b  # the document (and so every chunk_id) changed


def ledger_only(folder: Path) -> Path:
    """A prompts folder that turns the document-level perspectives off: every pair is then the ledger's."""
    folder.mkdir()
    for pid, role in (("about", "generator"), ("title_questions", "generator"), ("identity", "code")):
        (folder / f"{pid}.md").write_text(f"---\nid: {pid}\nrole: {role}\nenabled: false\n---\noff\n")
    return folder


def test_the_report_shades_each_fact_by_its_exported_rows(tmp_path, stub, settings_for):
    stub.handler = ledger_reply
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    (docs / "bridge.md").write_text(BRIDGE)
    summary = ingest(docs, out, ledger_settings(settings_for, report=True), prompts_dir=ledger_only(tmp_path / "p"))
    html = (out / "report.html").read_text()
    marks = re.findall(r'<mark class="fact (none|some|full)" data-fact="(\w+)" data-exposures="(\d+)"', html)
    rows = exported(out)
    with sqlite3.connect(out / "qagen.sqlite") as db:
        spans = dict(db.execute("SELECT fact_id, span FROM facts").fetchall())
    assert {fid for _, fid, _ in marks} == set(spans)  # every fact is marked in the text
    assert {r["perspective"] for r in rows} == {"fact_questions", "cloze"}
    for level, fid, n in marks:
        asked = [r for r in rows if r.get("fact_id") == fid]  # the teacher's questions and the code-built row
        assert int(n) == len(asked)
        assert level == ("full" if int(n) >= 2 else "some" if int(n) else "none")
        for r in asked[:MAX_QUESTIONS]:  # the fact's panel lists its questions
            question = r["messages"][-2]["content"].replace("'", "&#39;").replace('"', "&#34;")
            assert question in html.split(f'id="fact-{fid}"')[1].split("</div>")[0]
    assert f'data-facts="total">{summary.facts["facts"]}<' in html
    assert f'data-facts="at_k">{summary.facts["at_k"]}<' in html
