"""ingest against a stub OpenAI-compatible server (real HTTP on loopback)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from qagen.core import ids
from qagen.corpus.reader import iter_documents
from qagen.pipeline.ingest import ingest
from qagen.prompting.prompts import load_prompts
from qagen.testing import StubReply

GENERATORS = [p for p in load_prompts().perspectives if p.role == "generator"]
CHUNK_SCOPE = sum(1 for p in GENERATORS if p.scope == "chunk")
DOC_SCOPE = sum(1 for p in GENERATORS if p.scope == "document")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ingest_writes_axolotl_chat_template_jsonl(corpus, tmp_path, stub, settings_for):
    out = tmp_path / "out"
    summary = ingest(corpus, out, settings_for())
    assert summary.status == "ok"
    records = lines(out / "train.jsonl") + lines(out / "eval.jsonl")
    assert len(records) == summary.pairs_total > 0
    assert summary.eval_pairs > 0 and summary.train_pairs > 0

    docs = {d.doc_id: d for d in iter_documents(corpus)}
    group = ids.group_id(docs)
    db = sqlite3.connect(out / "qagen.sqlite")
    chunk_ids = {r[0] for r in db.execute("SELECT chunk_id FROM chunks")}
    for rec in records:
        roles = [m["role"] for m in rec["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert all(m["content"].strip() for m in rec["messages"])
        assert rec["doc_id"] in docs and rec["source"] == docs[rec["doc_id"]].path
        assert rec["group_id"] == group
        assert rec["chunk_id"] in chunk_ids
        system = rec["messages"][0]["content"]
        assert ids.short(rec["doc_id"]) in system and ids.short(group) in system
        assert rec["model"] in ("stub-model", "code")
        assert rec["perspective"]
    # doc_id re-hashes from the file content
    for doc in docs.values():
        assert doc.doc_id == ids.doc_id(ids.normalise_text(doc.text))

    # every generator perspective ran, plus the code-built identity pairs
    assert set(summary.pairs_per_perspective) == {p.id for p in GENERATORS} | {"identity"}
    expected_calls = summary.chunks * CHUNK_SCOPE + summary.documents_read * DOC_SCOPE
    assert summary.requests_sent == expected_calls == stub.count()


def test_identity_pairs_name_short_ids(corpus, tmp_path, settings_for):
    out = tmp_path / "out"
    summary = ingest(corpus, out, settings_for(eval_fraction=0.0))
    records = [r for r in lines(out / "train.jsonl") if r["perspective"] == "identity"]
    assert len(records) == 3 * summary.documents_read
    for rec in records:
        assert rec["model"] == "code"
        text = rec["messages"][1]["content"] + rec["messages"][2]["content"]
        assert ids.short(rec["doc_id"]) in text


def test_every_request_uses_bounded_json_schema_and_shared_prefix(corpus, tmp_path, stub, settings_for):
    ingest(corpus, tmp_path / "out", settings_for())
    prefixes: dict[str, set[str]] = {}
    for req in stub.requests:
        schema = req["response_format"]["json_schema"]["schema"]
        assert req["response_format"]["type"] == "json_schema"
        dumped = json.dumps(schema)
        assert "maxLength" in dumped
        assert req["messages"][0]["role"] == "system"
        user = req["messages"][1]["content"]
        assert "--- BEGIN PASSAGE ---" in user and user.index("Task:") > user.index("--- END PASSAGE ---")
        prefix = user.split("Task:")[0]
        prefixes.setdefault(prefix, set()).add(user)
    # several perspectives share each chunk prefix (what prefix caches reuse)
    assert all(len(v) >= CHUNK_SCOPE for v in prefixes.values())


def test_second_run_makes_zero_calls_and_same_output(corpus, tmp_path, stub, settings_for):
    out = tmp_path / "out"
    first = ingest(corpus, out, settings_for())
    before = (out / "train.jsonl").read_bytes(), (out / "eval.jsonl").read_bytes()
    calls = stub.count()
    second = ingest(corpus, out, settings_for())
    assert stub.count() == calls
    assert second.requests_sent == 0 and second.requests_cached == first.requests_sent
    assert ((out / "train.jsonl").read_bytes(), (out / "eval.jsonl").read_bytes()) == before


def test_unchanged_corpus_is_not_even_replayed(corpus, tmp_path, stub, settings_for, monkeypatch):
    """Same bytes, settings and prompts as the last finished run, files intact: the run is a no-op."""
    import os

    from qagen.generate.caller import Caller

    out = tmp_path / "out"
    first = ingest(corpus, out, settings_for(report=True))
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".jsonl", ".html", ".md")}
    calls = stub.count()
    os.utime(corpus / "copy.md", (1, 1))  # a fresh checkout changes mtimes, never bytes
    replays = []
    monkeypatch.setattr(Caller, "ask", lambda *a, **k: replays.append(a))
    again = ingest(corpus, out, settings_for(report=True, concurrency=32, transport="aiohttp"))  # speed-only knobs
    assert again.unchanged and again.status == "ok" and replays == [] and stub.count() == calls
    assert again.requests_sent == 0 and again.requests_cached == first.requests_sent + first.requests_cached
    assert again.pairs_total == first.pairs_total and again.train_path == first.train_path
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in files} == files
    with sqlite3.connect(out / "qagen.sqlite") as db:
        runs = db.execute("SELECT status, json_extract(summary, '$.unchanged') FROM runs ORDER BY run_id").fetchall()
    assert runs == [("ok", 0), ("ok", 1)]
    # the no-op run holds the corpus it repeats: `qagen eval` matched no exam question against it before
    from qagen.store import Store

    with Store(out) as store:
        assert store.run_documents(2) == store.run_documents(1) != []
        assert [rp.pair.pair_id for rp in store.run_pairs(2)] == [rp.pair.pair_id for rp in store.run_pairs(1)]
        assert [rp.verdict for rp in store.run_pairs(2)] == [rp.verdict for rp in store.run_pairs(1)]


def test_what_defeats_the_unchanged_check(corpus, tmp_path, stub, settings_for):
    out = tmp_path / "out"
    ingest(corpus, out, settings_for())
    calls = stub.count()
    (out / "eval.jsonl").unlink()  # an output file is gone: rewritten from the cache, still no call
    rewritten = ingest(corpus, out, settings_for())
    assert not rewritten.unchanged and (out / "eval.jsonl").exists() and stub.count() == calls
    assert not ingest(corpus, out, settings_for(eval_fraction=0.3)).unchanged  # a setting that shapes the output
    assert stub.count() == calls
    with (corpus / "copy.md").open("a") as f:
        f.write("\nOne more sentence about copies.\n")
    edited = ingest(corpus, out, settings_for(eval_fraction=0.3))
    assert not edited.unchanged and edited.requests_sent > 0
    assert ingest(corpus, out, settings_for(eval_fraction=0.3)).unchanged


def test_adding_a_document_processes_only_its_chunks(corpus, tmp_path, stub, settings_for, notes_text):
    out = tmp_path / "out"
    ingest(corpus, out, settings_for())
    calls = stub.count()
    (corpus / "notes.txt").write_text(notes_text)
    summary = ingest(corpus, out, settings_for())
    new = stub.requests[calls:]
    assert len(new) == summary.requests_sent == CHUNK_SCOPE + DOC_SCOPE  # one short chunk
    assert all("Ana Souza" in r["messages"][1]["content"] for r in new)
    assert summary.documents_read == 3


def test_renaming_a_file_creates_no_work(corpus, tmp_path, stub, settings_for):
    out = tmp_path / "out"
    ingest(corpus, out, settings_for())
    calls = stub.count()
    (corpus / "copy.md").rename(corpus / "renamed-copy.md")
    summary = ingest(corpus, out, settings_for())
    assert stub.count() == calls and summary.requests_sent == 0
    sources = {r["source"] for r in lines(out / "train.jsonl") + lines(out / "eval.jsonl")}
    assert "renamed-copy.md" in sources and "copy.md" not in sources


def test_editing_one_prompt_reruns_only_that_prompt(corpus, tmp_path, stub, settings_for):
    out = tmp_path / "out"
    first = ingest(corpus, out, settings_for())
    calls = stub.count()
    user_prompts = tmp_path / "my-prompts"
    user_prompts.mkdir()
    quiz = (Path(load_prompts().by_id("quiz").source)).read_text()
    (user_prompts / "quiz.md").write_text(quiz.replace("quiz questions", "tricky quiz questions"))
    second = ingest(corpus, out, settings_for(), prompts_dir=user_prompts)
    new = stub.requests[calls:]
    assert len(new) == second.requests_sent == first.chunks  # quiz is chunk-scoped
    assert all("tricky quiz questions" in r["messages"][1]["content"] for r in new)


def test_samples_ask_a_prompt_again_with_seeds_and_stay_cached(corpus, tmp_path, stub, settings_for):
    """``samples: 3`` sends the quiz three times per chunk: as written, then seeds 1 and 2 at the sample
    temperature; every sample's pairs are kept (dedup then drops the stub's identical replies); a rerun asks
    nothing."""
    out, user_prompts = tmp_path / "out", tmp_path / "my-prompts"
    user_prompts.mkdir()
    quiz = (Path(load_prompts().by_id("quiz").source)).read_text()
    (user_prompts / "quiz.md").write_text(quiz.replace("temperature: 0.3", "temperature: 0.3\nsamples: 3", 1))
    first = ingest(corpus, out, settings_for(eval_fraction=0.0), prompts_dir=user_prompts)
    asked = [r for r in stub.requests if "quiz questions" in r["messages"][1]["content"]]
    assert len(asked) == 3 * first.chunks
    assert sorted((r.get("seed", 0), r["temperature"]) for r in asked) == sorted(
        [(0, 0.3), (1, 0.7), (2, 0.7)] * first.chunks)  # the first sample sends no seed
    assert first.requests_sent == first.chunks * (CHUNK_SCOPE + 2) + first.documents_read * DOC_SCOPE
    db = sqlite3.connect(out / "qagen.sqlite")
    per_chunk = db.execute("SELECT chunk_id, count(DISTINCT request_key), count(*) FROM pairs "
                           "WHERE perspective = 'quiz' GROUP BY chunk_id").fetchall()
    assert len(per_chunk) == first.chunks and all(keys == 3 and n == 3 * 2 for _, keys, n in per_chunk)
    assert first.pairs_per_perspective["quiz"] == 3 * 2 * first.chunks

    calls = stub.count()
    deduped = ingest(corpus, out, settings_for(eval_fraction=0.0, dedup=True), prompts_dir=user_prompts)
    assert stub.count() == calls and deduped.requests_sent == 0
    quiz_rows = [r for r in lines(out / "train.jsonl") if r["perspective"] == "quiz"]
    distinct = {q for (q,) in db.execute("SELECT question FROM pairs WHERE perspective = 'quiz'")}
    # the stub answers the same messages alike, so the samples' copies go (and the copied document's too)
    questions = {r["messages"][1]["content"] for r in quiz_rows}
    assert 0 < len(quiz_rows) == len(questions) <= len(distinct) < 3 * 2 * first.chunks


def test_knowledge_suite_moves_the_budget_to_fact_samples_and_shares_the_cache(corpus, tmp_path, stub, settings_for):
    """--suite knowledge: summaries, section summaries, metadata and entities off, quiz x4 and facts x2; the prompts
    keep their hashes, so a broad run afterwards asks only for the perspectives the knowledge suite left out."""
    from qagen.config import Settings

    # ledger is the default for a served model (issue 26); the embedded suite on the embedded 135M model (issue 29)
    assert Settings(base_url="http://127.0.0.1:9/v1").perspective_suite == "ledger"
    ledger, asked = load_prompts(suite="ledger"), load_prompts(suite="ledger-questions")
    assert {p.id for p in ledger.perspectives} == {"about", "cloze", "identity", "title_questions"}
    assert {p.id for p in asked.perspectives} == {p.id for p in ledger.perspectives} | {"fact_questions"}
    assert Settings().perspective_suite == "embedded" and Settings(suite="knowledge").perspective_suite == "knowledge"
    # the 135M model drafts nothing there: every question is built by code, and its exam is off (its default only)
    assert {p.id for p in load_prompts(suite="embedded").perspectives} == {"cloze", "identity"}
    assert (Settings().exam_on, Settings(exam=True).exam_on, Settings(base_url="http://127.0.0.1:9/v1").exam_on) == (
        False, True, True)
    broad, knowledge = load_prompts(), load_prompts(suite="knowledge")
    on = {p.id: p.samples for p in knowledge.perspectives}
    assert on == {"about": 1, "facts": 2, "identity": 1, "quiz": 4, "title_questions": 1}
    assert broad.by_id("quiz").hash == knowledge.by_id("quiz").hash and broad.by_id("quiz").samples == 1

    out = tmp_path / "out"
    first = ingest(corpus, out, settings_for(suite="knowledge"))
    assert set(first.pairs_per_perspective) == {"about", "facts", "identity", "quiz", "title_questions"}
    per_doc = sum(p.samples for p in knowledge.perspectives if p.role == "generator" and p.scope == "document")
    per_chunk = sum(p.samples for p in knowledge.perspectives if p.role == "generator" and p.scope == "chunk")
    assert first.requests_sent == stub.count() == first.chunks * per_chunk + first.documents_read * per_doc
    left_out = [p for p in broad.perspectives if p.role == "generator" and p.id not in on]
    calls = stub.count()
    second = ingest(corpus, out, settings_for())  # broad: the quiz's and facts' first samples come from the cache
    assert second.requests_sent == stub.count() - calls == sum(
        first.chunks if p.scope == "chunk" else first.documents_read for p in left_out)
    assert {"summaries", "entities", "metadata"} <= set(second.pairs_per_perspective)
    assert (first.suite, second.suite) == ("knowledge", "broad")  # the summary says which suite ran


def test_unknown_suite_is_a_clear_error(corpus, tmp_path, settings_for):
    import pytest

    from qagen.prompting.prompts import PromptError

    with pytest.raises(PromptError, match="unknown suite 'nope' .*knowledge"):
        ingest(corpus, tmp_path / "out", settings_for(suite="nope"))
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_invalid_reply_gets_one_corrective_retry(corpus, tmp_path, stub, settings_for):
    from tests.helpers import passage_reply

    def handler(req: dict) -> StubReply:
        if len(req["messages"]) == 2 and "quiz questions" in req["messages"][1]["content"]:
            return StubReply(content='{"pairs": [{"question": "unterminated')
        return passage_reply(req)

    stub.handler = handler
    out = tmp_path / "out"
    summary = ingest(corpus, out, settings_for())
    correctives = [r for r in stub.requests if len(r["messages"]) == 4]
    assert len(correctives) == summary.corrective_retries == summary.chunks
    assert all("not valid" in r["messages"][3]["content"] for r in correctives)
    assert summary.invalid_replies == 0
    assert summary.pairs_per_perspective["quiz"] > 0


def test_reply_invalid_twice_is_recorded_not_silent(corpus, tmp_path, stub, settings_for):
    from tests.helpers import passage_reply

    def handler(req: dict) -> StubReply:
        if "quiz questions" in req["messages"][1]["content"]:
            return StubReply(content="I cannot answer in JSON, sorry.")
        return passage_reply(req)

    stub.handler = handler
    out = tmp_path / "out"
    summary = ingest(corpus, out, settings_for())
    assert summary.invalid_replies == summary.chunks
    assert "quiz" not in summary.pairs_per_perspective or summary.pairs_per_perspective["quiz"] == 0
    assert summary.failure_examples
    db = sqlite3.connect(out / "qagen.sqlite")
    rows = db.execute("SELECT stage, prompt_id, error FROM failures").fetchall()
    assert len(rows) == summary.chunks and all(r[0] == "parse" and r[1] == "quiz" for r in rows)
    # a re-run does not pay again for the same invalid replies
    calls = stub.count()
    ingest(corpus, out, settings_for())
    assert stub.count() == calls


def test_retryable_errors_are_retried_and_others_are_not(corpus, tmp_path, stub, settings_for):
    from tests.helpers import passage_reply

    seen: dict[str, int] = {}

    def handler(req: dict) -> StubReply:
        key = json.dumps(req["messages"])
        seen[key] = seen.get(key, 0) + 1
        content = req["messages"][1]["content"]
        if "quiz questions" in content and seen[key] == 1:
            return StubReply(status=503)
        if "important facts" in content:
            return StubReply(status=400)
        return passage_reply(req)

    stub.handler = handler
    out = tmp_path / "out"
    summary = ingest(corpus, out, settings_for())
    facts_calls = [k for k in seen if "important facts" in k]
    assert all(seen[k] == 1 for k in facts_calls)  # 400 is not retried
    quiz_calls = [k for k in seen if "quiz questions" in k]
    assert quiz_calls and all(seen[k] == 2 for k in quiz_calls)  # 503 retried once, then ok
    assert summary.http_retries == len(quiz_calls)
    assert summary.requests_failed == len(facts_calls)
    assert summary.status == "partial"
    # failed requests are retried on the next run
    stub.handler = passage_reply
    again = ingest(corpus, out, settings_for())
    assert again.requests_sent == len(facts_calls) and again.status == "ok"


def test_mistral_models_get_system_text_folded_into_user_turn(corpus, tmp_path, stub, settings_for):
    ingest(corpus, tmp_path / "out", settings_for(model="mistralai/Mistral-7B-Instruct-v0.3"))
    assert stub.requests
    for req in stub.requests:
        assert [m["role"] for m in req["messages"]][0] == "user"
        assert "You write question and answer pairs" in req["messages"][0]["content"]


def test_split_by_document_when_enough_documents(tmp_path, stub, settings_for, notes_text):
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(8):
        (docs / f"d{i}.txt").write_text(f"Report {i}.\n\n{notes_text}\nItem number {i} was approved.")
    out = tmp_path / "out"
    summary = ingest(docs, out, settings_for(eval_fraction=0.25))
    assert summary.split_by == "document"
    train_docs = {r["doc_id"] for r in lines(out / "train.jsonl")}
    eval_docs = {r["doc_id"] for r in lines(out / "eval.jsonl")}
    assert eval_docs and train_docs and not (train_docs & eval_docs)


def test_jsonl_loads_with_datasets(corpus, tmp_path, settings_for):
    datasets = __import__("pytest").importorskip("datasets")
    out = tmp_path / "out"
    summary = ingest(corpus, out, settings_for())
    ds = datasets.load_dataset(
        "json", data_files={"train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl")},
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert ds["train"].num_rows == summary.train_pairs
    assert ds["train"][0]["messages"][0]["role"] == "system"


def test_entity_self_relations_are_dropped_and_short_about_falls_back_to_title():
    from qagen.generate.identity import identity_pairs
    from qagen.generate.perspectives import outputs_to_qa
    from qagen.prompting.schemas import schema_for

    prompts = load_prompts()
    entities = prompts.by_id("entities")
    obj = schema_for(entities).validate(json.dumps({
        "entities": [{"name": "Congress", "description": "The legislature."}],
        "relations": [
            {"subject": "Congress", "relation": "is", "object": "congress"},
            {"subject": "Congress", "relation": "was asked to fund", "object": "the militia"},
        ],
    }))
    qa = outputs_to_qa(entities, obj, {"title": "Message", "section": "", "short_id": "x", "meta": [], "text": "", "part": 1})
    assert [a for _, a, _ in qa] == ["The legislature.", "Congress was asked to fund the militia."]

    pairs = identity_pairs(prompts.by_id("identity"), doc_id="a" * 32, chunk_id="b" * 32, title="Bridge vote",
                           about="jscs", group_id="c" * 32)
    assert all("jscs" not in p.question + p.answer for p in pairs)
    assert any('It is titled "Bridge vote".' in p.answer for p in pairs)


def test_outputs_are_readable_files(corpus, tmp_path, settings_for):
    import os
    import stat

    out = tmp_path / "out"
    ingest(corpus, out, settings_for())
    mask = os.umask(0)
    os.umask(mask)
    for name in ("train.jsonl", "eval.jsonl"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~mask
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_cut_off_reply_repaired_by_corrective_retry_is_cached(corpus, tmp_path, stub, settings_for):
    """A reply cut at max_tokens whose corrective retry worked costs nothing on the next run."""
    from tests.helpers import passage_reply

    def handler(req: dict) -> StubReply:
        if len(req["messages"]) == 2 and "quiz questions" in req["messages"][1]["content"]:
            return StubReply(content='{"pairs": [{"question": "What', finish_reason="length")
        return passage_reply(req)

    stub.handler = handler
    out = tmp_path / "out"
    first = ingest(corpus, out, settings_for())
    assert first.length_cutoffs == first.chunks and first.pairs_per_perspective["quiz"] > 0
    calls = stub.count()
    again = ingest(corpus, out, settings_for())
    assert stub.count() == calls and again.requests_sent == 0


def test_cut_off_reply_in_a_failed_chain_is_retried_next_run(corpus, tmp_path, stub, settings_for):
    from tests.helpers import passage_reply

    def handler(req: dict) -> StubReply:
        if "quiz questions" in req["messages"][1]["content"]:
            return StubReply(content='{"pairs": [{"question": "What', finish_reason="length")
        return passage_reply(req)

    stub.handler = handler
    out = tmp_path / "out"
    first = ingest(corpus, out, settings_for())
    assert first.invalid_replies == first.chunks
    stub.handler = passage_reply  # the server recovers
    again = ingest(corpus, out, settings_for())
    assert again.requests_sent == first.chunks and again.pairs_per_perspective["quiz"] > 0


def test_the_critic_loop_runs_only_when_asked():
    """No critic loop by default, embedded or served (RESULTS §26: it lowered closed-book F1 at 4.7x the tokens);
    --refine turns it on; the embedded profile is the embedded model's, whatever the flags."""
    from qagen.config import load_settings

    embedded = load_settings()
    assert (embedded.refining, embedded.profile_name, embedded.rounds) == (False, "embedded", 1)
    assert (load_settings(refine=True).refining, load_settings(refine=True).profile_name) == (True, "embedded")
    served = load_settings(base_url="http://127.0.0.1:9/v1", model="m")
    assert (served.refining, served.profile_name, served.rounds) == (False, "served", 3)
    assert load_settings(base_url="http://127.0.0.1:9/v1", model="m", refine=True).refining is True
