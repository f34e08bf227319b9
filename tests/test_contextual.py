"""`qagen export OUT --contextual`: open-book examples (BEGININPUT blocks, cited answers) built by code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qagen.core import ids
from qagen.core.types import Chunk, Document, QAPair
from qagen.output.contextual import (
    NOT_IN_CONTEXT,
    SYSTEM,
    ContextualError,
    export_contextual,
    mix_into_train,
)
from qagen.output.export import export_run
from qagen.store import Store

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "output"
QAGEN = [sys.executable, "-m", "qagen.cli"]
BLOCK = re.compile(r"BEGININPUT\nBEGINCONTEXT\n(.*?)\nENDCONTEXT\n(.*?)\nENDINPUT\n", re.DOTALL)
PROMPT = re.compile(r"(?:BEGININPUT\n.*?\nENDINPUT\n){1,3}BEGININSTRUCTION\n(.*)\nENDINSTRUCTION", re.DOTALL)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def build(out: Path, docs: int, chunks: int, per_chunk: int) -> dict[str, tuple[Document, Chunk]]:
    """A finished ingest run made through the Store API: docs x chunks x per_chunk quiz pairs, plus one
    code-built identity pair and one metadata pair per document; train.jsonl written by the real export."""
    by_chunk: dict[str, tuple[Document, Chunk]] = {}
    with Store(out) as store:
        run_id = store.start_run("ingest", {})
        doc_ids = []
        for d in range(docs):
            texts = [f"Report {d}, part {i}: the depot on street {d * 10 + i} opened in year {1900 + d + i}."
                     for i in range(chunks)]
            doc = Document(ids.doc_id("\n\n".join(texts)), f"reports/r{d:03d}.md", f"Depot report {d}",
                           "\n\n".join(texts), "markdown")
            doc_ids.append(doc.doc_id)
            cs = [Chunk(ids.chunk_id(doc.doc_id, t, "test"), doc.doc_id, i, t, doc.title, "", 20)
                  for i, t in enumerate(texts)]
            store.add_document(run_id, doc, cs)
            pairs = []
            for c in cs:
                by_chunk[c.chunk_id] = (doc, c)
                for k in range(per_chunk):
                    q = f"When did the depot of part {c.index} of report {d} open (question {k})?"
                    a = f"In {1900 + d + c.index}."
                    pairs.append(QAPair(ids.hash_str("pair", c.chunk_id, str(k)), c.chunk_id, doc.doc_id, "quiz",
                                        q, a, f"req-{c.chunk_id}", "stub-model"))
            pairs.append(QAPair(ids.hash_str("id", doc.doc_id), cs[0].chunk_id, doc.doc_id, "identity",
                                f"Which document is {ids.short(doc.doc_id)}?", doc.title, "", "code"))
            pairs.append(QAPair(ids.hash_str("meta", doc.doc_id), cs[0].chunk_id, doc.doc_id, "metadata",
                                "Who wrote it?", "The depot office.", "req-meta", "stub-model"))
            store.add_pairs(run_id, [(p, f"{doc.path}\x00{i:06d}") for i, p in enumerate(pairs)])
        export_run(store, run_id, out, ids.group_id(doc_ids), eval_fraction=0.0, split_by="pair")
        store.finish_run(run_id, "ok", {})
    return by_chunk


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[Document, Chunk]]]:
    out = tmp_path_factory.mktemp("ctx") / "out"
    by_chunk = build(out, docs=25, chunks=4, per_chunk=5)  # 500 quiz pairs
    return out, by_chunk


def context_of(doc: Document) -> str:
    return f"doc: {ids.short(doc.doc_id)}\ntitle: {doc.title}\nsource: {doc.path}"


def test_blocks_metadata_citations_and_withheld_answers(big):
    out, by_chunk = big
    with Store(out) as store:
        result = export_contextual(store, out)
    rows = lines(out / "contextual.jsonl")
    train = {r["pair_id"]: r for r in lines(out / "train.jsonl")}
    assert len(rows) == result.examples == 500
    assert result.skipped == {"perspective identity (not answered from the chunk text)": 25,
                              "perspective metadata (not answered from the chunk text)": 25}
    seen_counts = set()
    for row in rows:
        pair = train[row["pair_id"]]
        assert {k: v for k, v in row.items() if k not in ("messages", "contextual", "context_chunk_ids")} == \
               {k: v for k, v in pair.items() if k != "messages"}  # provenance kept
        system, user, assistant = row["messages"]
        assert (system["role"], user["role"], assistant["role"]) == ("system", "user", "assistant")
        assert system["content"] == SYSTEM
        m = PROMPT.fullmatch(user["content"])
        assert m and m.group(1) == pair["messages"][1]["content"]  # the instruction is the question
        blocks = BLOCK.findall(user["content"] + "\n")
        assert 1 <= len(blocks) <= 3 and len(blocks) == len(row["context_chunk_ids"])
        for (context, text), chunk_id in zip(blocks, row["context_chunk_ids"], strict=True):
            doc, chunk = by_chunk[chunk_id]
            assert context == context_of(doc) and text == chunk.text  # the block's metadata and the chunk
        own_doc, _ = by_chunk[row["chunk_id"]]
        others = [c for c in row["context_chunk_ids"] if c != row["chunk_id"]]
        assert all(by_chunk[c][0].doc_id != own_doc.doc_id for c in others)  # distractors: other documents
        if row["contextual"] == "withheld":
            assert row["chunk_id"] not in row["context_chunk_ids"] and 1 <= len(blocks) <= 2
            assert assistant["content"] == NOT_IN_CONTEXT
        else:
            assert row["chunk_id"] in row["context_chunk_ids"]
            assert (row["contextual"] == "answer") == (len(blocks) == 1)
            # the answer, then the cited block's metadata
            assert assistant["content"] == f"{pair['messages'][2]['content']}\n\nSource:\n{context_of(own_doc)}"
        seen_counts.add((row["contextual"], len(blocks)))
    assert seen_counts == {("answer", 1), ("distractors", 2), ("distractors", 3), ("withheld", 1), ("withheld", 2)}


@pytest.mark.parametrize(("distractor", "withheld"), [(0.3, 0.1), (0.5, 0.25), (0.0, 0.0)])
def test_shares_are_kept_within_two_points(big, distractor, withheld):
    out, _ = big
    with Store(out) as store:
        result = export_contextual(store, out, distractor_share=distractor, withheld_share=withheld)
    rows = lines(out / "contextual.jsonl")
    share = {mode: sum(r["contextual"] == mode for r in rows) / len(rows) for mode in ("distractors", "withheld")}
    assert abs(share["distractors"] - distractor) <= 0.02 and abs(share["withheld"] - withheld) <= 0.02
    assert result.modes["distractors"] == sum(r["contextual"] == "distractors" for r in rows)
    nic = [r for r in rows if r["messages"][2]["content"] == NOT_IN_CONTEXT]
    assert len(nic) == result.modes["withheld"]


def test_reruns_and_rebuilds_are_byte_identical(big, tmp_path):
    out, _ = big
    with Store(out) as store:
        export_contextual(store, out)
        first = (out / "contextual.jsonl").read_bytes()
        export_contextual(store, out)
    assert (out / "contextual.jsonl").read_bytes() == first
    other = tmp_path / "again"
    build(other, docs=25, chunks=4, per_chunk=5)  # a fresh store from the same content
    with Store(other) as store:
        export_contextual(store, other)
    assert (other / "contextual.jsonl").read_bytes() == first


def test_one_example_byte_for_byte(tmp_path):
    out = tmp_path / "out"
    # the date comes from the document's own metadata (front matter), as the store keeps it
    bridge = Document("a" * 32, "council/bridge.md", "Eastbay bridge", "x", "markdown", (("date", "2024-05-04"),))
    notes = Document("b" * 32, "notes.txt", "Library notes", "x", "text")
    with Store(out) as store:
        run_id = store.start_run("ingest", {})
        store.add_document(run_id, bridge, [Chunk("c1", bridge.doc_id, 0, "The council voted on 4 May.\n", "", "", 9)])
        store.add_document(run_id, notes, [Chunk("c2", notes.doc_id, 0, "The library opens in June.", "", "", 9)])
        store.finish_run(run_id, "ok", {})
    rows = [("pa", bridge, "c1", "When did the council vote?", "On 4 May."),
            ("pb", notes, "c2", "When does the library open?", "In June.")]
    (out / "train.jsonl").write_text("".join(json.dumps({
        "messages": [{"role": "system", "content": f'You are an assistant fine-tuned on document x ("{d.title}") in '
                                                   "document group g. Answer from what you learned."},
                     {"role": "user", "content": q}, {"role": "assistant", "content": a}],
        "pair_id": p, "doc_id": d.doc_id, "chunk_id": c, "group_id": "g", "perspective": "facts", "source": d.path,
        }) + "\n" for p, d, c, q, a in rows))
    with Store(out) as store:
        export_contextual(store, out, distractor_share=0.0, withheld_share=0.0)
        plain = lines(out / "contextual.jsonl")
        export_contextual(store, out, distractor_share=1.0, withheld_share=0.0)
        mixed = lines(out / "contextual.jsonl")
        export_contextual(store, out, distractor_share=0.0, withheld_share=1.0)
        withheld = lines(out / "contextual.jsonl")
    bridge_block = ("BEGININPUT\nBEGINCONTEXT\ndoc: aaaaaaaaaa\ntitle: Eastbay bridge\nsource: council/bridge.md\n"
                    "date: 2024-05-04\nENDCONTEXT\nThe council voted on 4 May.\nENDINPUT\n")
    notes_block = ("BEGININPUT\nBEGINCONTEXT\ndoc: bbbbbbbbbb\ntitle: Library notes\nsource: notes.txt\nENDCONTEXT\n"
                   "The library opens in June.\nENDINPUT\n")
    question = "BEGININSTRUCTION\nWhen did the council vote?\nENDINSTRUCTION"
    assert plain[0]["messages"][1]["content"] == bridge_block + question
    assert plain[0]["messages"][2]["content"] == ("On 4 May.\n\nSource:\ndoc: aaaaaaaaaa\ntitle: Eastbay bridge\n"
                                                  "source: council/bridge.md\ndate: 2024-05-04")
    assert plain[0]["context_chunk_ids"] == ["c1"] and plain[0]["contextual"] == "answer"
    assert mixed[0]["messages"][1]["content"] == bridge_block + notes_block + question  # pa's hash: answer first
    assert mixed[0]["messages"][2]["content"] == plain[0]["messages"][2]["content"]
    assert mixed[0]["context_chunk_ids"] == ["c1", "c2"] and mixed[0]["contextual"] == "distractors"
    assert withheld[0]["messages"][1]["content"] == notes_block + question
    assert withheld[0]["messages"][2]["content"] == NOT_IN_CONTEXT == (
        "The context provided does not contain the answer to this question.")
    assert [r["contextual"] for r in withheld] == ["withheld", "withheld"]


def test_a_single_document_has_nothing_to_distract_with(tmp_path):
    out = tmp_path / "out"
    build(out, docs=1, chunks=3, per_chunk=2)
    with Store(out) as store:
        result = export_contextual(store, out)
    assert result.modes == {"answer": 6, "distractors": 0, "withheld": 0}
    assert all(r["contextual"] == "answer" for r in lines(out / "contextual.jsonl"))


def test_bad_shares_and_nothing_to_build_from_are_errors(tmp_path):
    out = tmp_path / "out"
    build(out, docs=2, chunks=1, per_chunk=1)
    with Store(out) as store:
        with pytest.raises(ContextualError, match="at most 1"):
            export_contextual(store, out, distractor_share=0.8, withheld_share=0.3)
        with pytest.raises(ContextualError, match="between 0 and 1"):
            export_contextual(store, out, withheld_share=-0.1)
        (out / "train.jsonl").write_text("")
        with pytest.raises(ContextualError, match="none of the pairs"):
            export_contextual(store, out)
    assert not (out / "contextual.jsonl").exists()


def test_cli_on_the_sample_run(tmp_path):
    out = tmp_path / "sample"
    shutil.copytree(SAMPLE, out, ignore=shutil.ignore_patterns("*-wal", "*-shm", "report.html", "README.md"))
    run = [*QAGEN, "export", str(out), "--contextual"]
    result = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# qagen export --contextual") and "type: chat_template" in result.stdout
    assert result.stdout == (out / "contextual.axolotl.yml").read_text()
    rows = lines(out / "contextual.jsonl")
    assert rows and "open-book examples" in result.stderr
    with Store(out) as store:
        titles = {doc_id: title for doc_id, _, title in store.run_documents(store.latest_finished_run("ingest"))}
        for row in rows:  # titles come from the store; chunk texts too
            for chunk_id in row["context_chunk_ids"]:
                assert store.chunk_text(chunk_id).strip() in row["messages"][1]["content"]
            if row["contextual"] != "withheld":
                assert f"title: {' '.join(titles[row['doc_id']].split())}\n" in row["messages"][2]["content"] + "\n"
    first = (out / "contextual.jsonl").read_bytes()
    again = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and (out / "contextual.jsonl").read_bytes() == first
    bad = subprocess.run([*run, "--withheld-share", "2"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1 and "--withheld-share must be between 0 and 1" in " ".join(bad.stderr.split())


# --- --contextual-share: open-book rows mixed into train.jsonl ------------------------------------------------
@pytest.mark.parametrize("share", [0.2, 0.5])
def test_a_share_of_the_pairs_gets_an_open_book_row_in_train(big, tmp_path, share):
    src, _ = big
    out = tmp_path / "mixed"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
    closed = (out / "train.jsonl").read_text()
    with Store(out) as store:
        result = mix_into_train(store, out, share)
        mixed = (out / "train.jsonl").read_text()
        rows = lines(out / "train.jsonl")
        again = mix_into_train(store, out, share)  # a re-mix replaces the open-book rows, it does not stack them
    assert mixed.startswith(closed)  # every closed-book row stays, first and unchanged
    assert (out / "train.jsonl").read_text() == mixed and again.examples == result.examples
    open_rows = [r for r in rows if r.get("contextual")]
    assert len(rows) == 550 + len(open_rows) and len(open_rows) == result.examples == round(share * 500)
    assert len({r["pair_id"] for r in open_rows}) == len(open_rows)  # one open-book row per chosen pair
    by_pair = {r["pair_id"]: r for r in rows if not r.get("contextual")}
    for row in open_rows:
        assert PROMPT.fullmatch(row["messages"][1]["content"]).group(1) == by_pair[row["pair_id"]]["messages"][1]["content"]
        assert row["perspective"] not in ("identity", "metadata")
    modes = {m: sum(r["contextual"] == m for r in open_rows) / len(open_rows) for m in ("distractors", "withheld")}
    assert abs(modes["distractors"] - 0.3) <= 0.02 and abs(modes["withheld"] - 0.1) <= 0.02  # shares of the chosen
    assert result.modes["withheld"] == sum(r["messages"][2]["content"] == NOT_IN_CONTEXT for r in open_rows)
    with Store(out) as store:  # contextual.jsonl from a mixed train.jsonl: built from the closed-book rows only
        assert export_contextual(store, out).examples == 500


def test_the_share_picks_a_superset_as_it_grows_and_rejects_bad_values(big, tmp_path):
    src, _ = big
    chosen = {}
    for share in (0.1, 0.3):
        out = tmp_path / f"s{share}"
        shutil.copytree(src, out, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
        with Store(out) as store:
            mix_into_train(store, out, share)
        chosen[share] = {r["pair_id"] for r in lines(out / "train.jsonl") if r.get("contextual")}
    assert chosen[0.1] < chosen[0.3]
    with Store(src) as store:
        for bad in (0.0, 1.5, -0.2):
            with pytest.raises(ContextualError, match="--contextual-share"):
                mix_into_train(store, src, bad)


def test_ingest_with_a_contextual_share(corpus, settings_for, tmp_path):
    from qagen.pipeline.ingest import ingest

    out = tmp_path / "out"
    summary = ingest(corpus, out, settings_for(contextual_share=0.5, eval_fraction=0.0))
    rows = lines(out / "train.jsonl")
    open_rows = [r for r in rows if r.get("contextual")]
    closed = [r for r in rows if not r.get("contextual")]
    assert summary.status == "ok" and len(closed) == summary.train_pairs
    eligible = [r for r in closed if r["perspective"] not in ("identity", "metadata")]
    assert summary.contextual_rows == len(open_rows) == round(0.5 * len(eligible)) > 0
    assert sum(summary.contextual_modes.values()) == len(open_rows)
    with Store(out) as store:  # the blocks carry this run's document titles and chunk texts
        titles = {d: t for d, _, t in store.run_documents(store.latest_finished_run("ingest"))}
        for row in open_rows:
            for chunk_id in row["context_chunk_ids"]:
                assert store.chunk_text(chunk_id).strip() in row["messages"][1]["content"]
            named = re.findall(r"^title: (.*)$", row["messages"][1]["content"], re.MULTILINE)
            assert len(named) == len(row["context_chunk_ids"]) and set(named) <= {" ".join(t.split()) for t in titles.values()}
            if row["contextual"] != "withheld":
                assert " ".join(titles[row["doc_id"]].split()) in named
    first = (out / "train.jsonl").read_bytes()
    ingest(corpus, out, settings_for(contextual_share=0.5, eval_fraction=0.0))  # unchanged: the same bytes
    assert (out / "train.jsonl").read_bytes() == first
    ingest(corpus, out, settings_for(contextual_share=0.0, eval_fraction=0.0))  # share 0: closed book only
    assert [r for r in lines(out / "train.jsonl") if r.get("contextual")] == []
