"""Titles that are titles (issue 15): metadata, a heading, or a first line that reads as one; otherwise a short
model-written title (one cached call), and failing that the file name. A sentence never becomes a title."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from qagen.corpus.reader import heading_like, read_file
from qagen.generate.perspectives import clean_title
from qagen.pipeline.ingest import ingest
from qagen.testing import StubReply
from tests.helpers import passage_reply

ARTICLE = ("CITY — A strong indication on Friday that the central bank is on the verge of aggressive action came "
           "when the peso fell below its 2010 low.\n\nTraders said the bank would act within days.\n")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_first_sentence_is_not_a_title(tmp_path):
    doc = read_file(write(tmp_path, "news_2011-peso.txt", ARTICLE), "news_2011-peso.txt")
    assert (doc.title, doc.title_from) == ("news 2011 peso", "filename")
    assert doc.text.startswith("CITY — A strong indication")  # the long first line stays in the text


def test_a_short_first_line_is_a_title(tmp_path):
    doc = read_file(write(tmp_path, "a.txt", "Peso Hits a Record Low\n\n" + ARTICLE), "a.txt")
    assert (doc.title, doc.title_from) == ("Peso Hits a Record Low", "first_line")


def test_metadata_and_headings_keep_their_titles(tmp_path):
    md = read_file(write(tmp_path, "m.md", "---\ntitle: From Front Matter\n---\n# Heading\n\nText.\n"), "m.md")
    assert (md.title, md.title_from) == ("From Front Matter", "metadata")
    h = read_file(write(tmp_path, "h.md", "# The Heading\n\nText.\n"), "h.md")
    assert (h.title, h.title_from) == ("The Heading", "heading")
    none = read_file(write(tmp_path, "no_heading.md", "Just a paragraph of text, with no heading.\n"), "no_heading.md")
    assert (none.title, none.title_from) == ("no heading", "filename")


def test_heading_like_and_clean_title():
    assert heading_like("Annual Report 2023") == "Annual Report 2023"
    assert heading_like("The council voted on Friday to close the bridge.") == ""
    assert heading_like(" ".join(["word"] * 20)) == ""
    assert clean_title('"Peso Hits a Record Low"', ARTICLE) == "Peso Hits a Record Low"
    assert clean_title("CITY — A strong indication on Friday that the", ARTICLE) == ""  # the opening, copied
    assert clean_title("The peso fell.", ARTICLE) == ""  # a sentence
    assert clean_title("unknown", ARTICLE) == ""


def titled(title: str):
    def handler(req: dict) -> StubReply:
        if "This document has no title" in json.dumps(req.get("messages")):
            return StubReply(content=json.dumps({"title": title}), prompt_tokens=50, completion_tokens=8)
        return passage_reply(req)

    return handler


def test_an_untitled_document_gets_a_short_model_title_used_in_its_questions(tmp_path, stub, settings_for):
    docs = tmp_path / "docs"
    write(docs, "news_2011-peso.txt", ARTICLE)
    stub.handler = titled("Peso Hits a Record Low")
    out = tmp_path / "out"
    s = ingest(docs, out, settings_for())
    assert s.status == "ok"
    with sqlite3.connect(out / "qagen.sqlite") as db:
        assert db.execute("SELECT title FROM documents").fetchall() == [("Peso Hits a Record Low",)]
        assert {r[0] for r in db.execute("SELECT title FROM chunks")} == {"Peso Hits a Record Low"}
        questions = [r[0] for r in db.execute("SELECT question FROM pairs")]
    assert any('"Peso Hits a Record Low"' in q for q in questions)
    assert not any("A strong indication" in q for q in questions)
    title_calls = [r for r in stub.requests if "This document has no title" in json.dumps(r["messages"])]
    assert len(title_calls) == 1
    # cached: a second run asks nothing
    before = len(stub.requests)
    assert ingest(docs, out, settings_for()).requests_sent == 0 and len(stub.requests) == before


def test_a_bad_model_title_leaves_the_file_name(tmp_path, stub, settings_for):
    docs = tmp_path / "docs"
    write(docs, "news_2011-peso.txt", ARTICLE)
    stub.handler = titled("CITY — A strong indication on Friday that the")
    out = tmp_path / "out"
    assert ingest(docs, out, settings_for()).status == "ok"
    with sqlite3.connect(out / "qagen.sqlite") as db:
        assert db.execute("SELECT title FROM documents").fetchall() == [("news 2011 peso",)]
