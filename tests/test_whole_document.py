"""Whole-document perspectives (issue 15): ``about`` and ``summaries`` read a multi-section document through a
map-reduce over its section summaries, once per document; editing one section re-asks exactly that section's
requests and the reduce; a one-chunk document keeps the single call."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from qagen.pipeline.ingest import ingest


def passage_of(stored: str) -> str:
    """The passage of a stored request (``requests.request``: the wire form, messages as [role, content])."""
    text = " ".join(content for _, content in json.loads(stored)["messages"])
    return text.split("--- BEGIN PASSAGE ---", 1)[1].split("--- END PASSAGE ---", 1)[0]

CHUNK_PROMPTS = {"quiz", "facts", "entities", "section_summary"}
SECTIONS = {
    "Harbour": "The Eastbay harbour was dredged in 1998 to take container ships. " * 6,
    "Bridge": "The old bridge closed on 3 May 2021 after the engineer Ana Ruiz found cracks in its piers. " * 6,
    "Budget": "Repairs were estimated at 4 million euros, paid from the regional transport fund. " * 6,
    "Ferry": "A ferry ran every twenty minutes while the bridge was shut, carrying 2,000 people a day. " * 6,
}


def write_doc(root: Path, sections: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    body = "".join(f"## {name}\n\n{text.strip()}\n\n" for name, text in sections.items())
    (root / "eastbay.md").write_text("# Eastbay town report\n\n" + body)


def requests_by_prompt(out: Path, run_id: int) -> list[tuple[str, str]]:
    with sqlite3.connect(out / "qagen.sqlite") as db:
        return db.execute("SELECT prompt_id, request FROM requests WHERE run_id=? ORDER BY prompt_id",
                          (run_id,)).fetchall()


def test_about_and_summaries_read_every_section_and_an_edit_reasks_only_its_section(tmp_path, stub, settings_for):
    docs, out = tmp_path / "docs", tmp_path / "out"
    write_doc(docs, SECTIONS)
    settings = settings_for(chunk_size=150, chunk_overlap=0)
    first = ingest(docs, out, settings)
    assert first.status == "ok" and first.chunks == 4
    rows = requests_by_prompt(out, 1)
    by_prompt: dict[str, list[str]] = {}
    for prompt_id, request in rows:
        by_prompt.setdefault(prompt_id, []).append(request)
    # the map: one section summary per chunk (shared with the section_summary perspective: no extra calls)
    assert len(by_prompt["section_summary"]) == 4
    # the reduce: about and summaries once each, on a passage with the opening and every section's summary
    for prompt_id in ("about", "summaries"):
        assert len(by_prompt[prompt_id]) == 1
        passage = passage_of(by_prompt[prompt_id][0])
        assert "Opening:" in passage and "Section summaries:" in passage
        for name in SECTIONS:
            assert f"> {name}]" in passage, (prompt_id, name)
        assert "container ships. The Eastbay harbour" not in passage.split("Section summaries:")[1]
    # the opening-reading prompts stay on the first chunk
    assert len(by_prompt["title_questions"]) == 1 and len(by_prompt["metadata"]) == 1
    assert "Ana Ruiz found cracks" not in passage_of(by_prompt["metadata"][0])
    with sqlite3.connect(out / "qagen.sqlite") as db:
        first_chunk = db.execute("SELECT chunk_id FROM chunks ORDER BY idx LIMIT 1").fetchone()[0]
        doc_chunks = {r[0] for r in db.execute("SELECT chunk_id FROM pairs WHERE perspective IN ('about','summaries')")}
    assert doc_chunks == {first_chunk}
    assert ingest(docs, out, settings).requests_sent == 0  # unchanged: nothing asked

    edited = dict(SECTIONS, Budget="Repairs were later estimated at 6 million euros, shared with the state. " * 6)
    write_doc(docs, edited)
    again = ingest(docs, out, settings)
    assert again.status == "ok"
    new = sorted(p for p, _ in requests_by_prompt(out, 3))
    # exactly the edited section's own requests, plus the reduce (its passage changed)
    assert new == sorted([*CHUNK_PROMPTS, "about", "summaries"]), new
    assert again.requests_sent == len(new)


def test_a_one_chunk_document_keeps_the_single_call(tmp_path, stub, settings_for):
    docs, out = tmp_path / "docs", tmp_path / "out"
    write_doc(docs, {"Bridge": "The old bridge closed on 3 May 2021."})
    s = ingest(docs, out, settings_for())
    assert s.status == "ok" and s.chunks == 1
    rows = requests_by_prompt(out, 1)
    about = [r for p, r in rows if p == "about"]
    assert len(about) == 1 and "Section summaries:" not in passage_of(about[0])
    assert "The old bridge closed on 3 May 2021." in passage_of(about[0])
