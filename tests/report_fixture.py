"""A finished run with every section of the report filled: refinement, failures, and verdict rows.

The run itself is real (pipeline + stub OpenAI server over HTTP + real SQLite). The verdict rows
(judge, grounding, dedup) are written straight into the ``verdicts`` table, as the judge step will,
so the report's judge/grounding/duplicate sections are tested before that step lands.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from qagen.config import load_settings
from qagen.pipeline.ingest import ingest
from qagen.store import Store
from qagen.testing import StubReply, StubServer
from tests.helpers import passage_of, COPY_DOC, WASHINGTON, passage_reply

HOSTILE_TITLE = "<script>window.__pwned=1</script>"
HOSTILE_DOC = f"""---
title: "{HOSTILE_TITLE}"
---
# Fine section

This section is fine and the model answers questions about it without trouble at all, every time.

# Broken section

FAILCHUNK: every generator call on this chunk fails with a client error, so it yields no pair.
<img src="https://example.invalid/track.png" onerror="window.__pwned=2">
"""
JUDGE_THRESHOLD = 0.5


def handler(req: dict) -> StubReply:
    """Generator: valid pairs (FAILCHUNK chunks get a 400). Critic: revise once. Regenerator: edit the answer."""
    fmt = (req.get("response_format") or {}).get("json_schema", {})
    user = req["messages"][-1]["content"]
    if fmt.get("name") == "critique":
        again = "(revised)" not in user
        return StubReply(content=json.dumps({"critique": "Too vague; name the subject.", "problems": ["vague"],
                                             "needs_revision": again}))
    if fmt.get("name") == "revision":
        task = user.rsplit("Task:", 1)[1]  # the last one: a hostile passage may say "Task:" too
        question = task.split("\nQuestion: ", 1)[1].split("\n", 1)[0]
        answer = task.split("\nAnswer: ", 1)[1].split("\n", 1)[0]
        revised = {"question": question, "answer": "In short, " + answer + " (revised)"}
        if "quote" in fmt["schema"]["properties"]:  # a pair with a quote keeps one
            revised["quote"] = passage_of(req).strip()[:60]
        return StubReply(content=json.dumps(revised))
    if "FAILCHUNK" in json.dumps(req.get("messages")):
        return StubReply(status=400, content="bad request")
    return passage_reply(req)


def make_run(root: Path) -> tuple[Path, int]:
    """Ingest a 3-document corpus into ROOT/out, then add verdict rows. Returns (out, run_id)."""
    docs = root / "docs"
    (docs / "speeches").mkdir(parents=True)
    (docs / "speeches" / "washington.md").write_text(WASHINGTON)
    (docs / "copy.md").write_text(COPY_DOC)
    (docs / "<b>odd&amp;$x$.md").write_text(HOSTILE_DOC)
    out = root / "out"
    with StubServer(handler) as stub:
        settings = load_settings(base_url=stub.base_url, model="stub-model", max_retries=0, concurrency=4,
                                 refine=True, max_rounds=2, chunk_size=60, chunk_overlap=0,
                                 judge=False, dedup=False, suite="knowledge")  # verdicts come from add_verdicts
        summary = ingest(docs, out, settings)
    assert summary.requests_failed > 0 and summary.pairs_total > 10, summary
    with Store(out) as store:
        run_id = int(store.db.execute("SELECT max(run_id) FROM runs").fetchone()[0])
        add_verdicts(store, run_id)
    return out, run_id


def add_verdicts(store: Store, run_id: int) -> None:
    """Reject every pair of Washington's 2nd chunk; one duplicate, one ungrounded; the rest exported."""
    rows = store.db.execute(
        "SELECT p.pair_id, p.chunk_id, c.idx, d.path, c.text FROM run_pairs r JOIN pairs p USING(pair_id) "
        "JOIN chunks c ON c.chunk_id=p.chunk_id JOIN run_docs d ON d.run_id=r.run_id AND d.doc_id=p.doc_id "
        "WHERE r.run_id=? ORDER BY r.sort_key", (run_id,)).fetchall()
    rejected_chunk = next(r[1] for r in rows if r[3].endswith("washington.md") and r[2] == 1)
    others = [r for r in rows if r[1] != rejected_chunk]
    duplicate, ungrounded = others[-1][0], others[-2][0]
    values = []
    for pair_id, chunk_id, _idx, _path, text in rows:
        if chunk_id == rejected_chunk:
            v = (pair_id, "judge_rejected", "judge said no", 0.1, 1, 95.0, text[:30], None)
        elif pair_id == duplicate:
            v = (pair_id, "duplicate", "near-duplicate question", 0.9, 1, 100.0, text[:30], others[0][0])
        elif pair_id == ungrounded:
            v = (pair_id, "ungrounded", "quote not in chunk", 0.8, 0, 31.0, "a quote <i>from nowhere</i>", None)
        else:
            v = (pair_id, "exported", "", 0.9, 1, 100.0, text[:30], None)
        values.append((run_id, v[0], v[1], v[2], json.dumps({"faithful": v[3]}), "logprobs", v[3], v[4], v[5],
                       v[6], v[7]))
    with store.db:
        store.db.execute("BEGIN")
        store.db.executemany("INSERT OR REPLACE INTO verdicts VALUES(?,?,?,?,?,?,?,?,?,?,?)", values)
        settings = json.loads(store.db.execute("SELECT settings FROM runs WHERE run_id=?", (run_id,)).fetchone()[0])
        settings.update(judge_threshold=JUDGE_THRESHOLD, license="cc-by-4.0")
        store.db.execute("UPDATE runs SET settings=? WHERE run_id=?", (json.dumps(settings), run_id))


def make_big_run(root: Path, docs: int, chunks_per_doc: int, pairs_per_chunk: int, text: int = 1000) -> tuple[Path, int]:
    """A synthetic finished run written straight into a real store (no model): DOCS x CHUNKS x PAIRS pairs of
    about TEXT characters each, every 7th chunk's pairs judge-rejected (zero-pair chunks), the exported pairs
    in train.jsonl / eval.jsonl (every 10th in eval). Rows are streamed into executemany, so a large run is
    cheap to build. Returns (out, run_id)."""
    out, run_id, now = root / "big", 1, "2025-01-01T00:00:00+00:00"
    perspectives = ("quiz", "explain", "summary", "identity")

    def pairs() -> Iterator[tuple[int, str, str, str, str, bool]]:
        k = 0
        for i in range(docs):
            for j in range(chunks_per_doc):
                for n in range(pairs_per_chunk):
                    yield k, f"p{k:09d}", f"c{i:06d}-{j:04d}", f"d{i:06d}", perspectives[n % 4], j % 7 != 3
                    k += 1

    def question(k: int) -> str:
        return f"Question {k}: " + "why " * (k % 50 + text // 20)

    def answer(k: int) -> str:
        return f"Answer {k}: " + "because " * (k % 90 + text // 10)

    with Store(out) as store:
        db = store.db
        db.execute("BEGIN")
        summary = {"calls_per_perspective": {"quiz": docs * chunks_per_doc}, "model": "big-model"}
        db.execute("INSERT INTO runs VALUES(?,?,?,?,?,?,?)", (run_id, "ingest", now, now, "ok",
                                                             json.dumps({"judge_threshold": 0.5}), json.dumps(summary)))
        db.executemany("INSERT INTO documents VALUES(?,?,?,?,?,?,?,?)",
                       ((f"d{i:06d}", f"doc{i:06d}.md", f"Doc {i}", "md", 5000, "{}", now, now) for i in range(docs)))
        db.executemany("INSERT INTO run_docs VALUES(?,?,?)", ((run_id, f"d{i:06d}", f"doc{i:06d}.md") for i in range(docs)))
        db.executemany("INSERT INTO chunks VALUES(?,?,?,?,?,?,?)", (
            (f"c{i:06d}-{j:04d}", f"d{i:06d}", j, f"Doc {i}", f"Section {j}", 200, f"Chunk {i}/{j}. " + "text " * 100)
            for i in range(docs) for j in range(chunks_per_doc)))
        db.executemany("INSERT INTO pairs VALUES(?,?,?,?,?,?,?,?,?,?)", (
            (pid, chunk, doc, persp, f"req{k}", question(k), answer(k), "big-model", "[]", now)
            for k, pid, chunk, doc, persp, _ok in pairs()))
        db.executemany("INSERT INTO run_pairs VALUES(?,?,?)", ((run_id, pid, f"{k:012d}") for k, pid, *_ in pairs()))
        db.executemany("INSERT INTO verdicts VALUES(?,?,?,?,?,?,?,?,?,?,?)", (
            (run_id, pid, "exported" if ok else "judge_rejected", "", "{}", "logprobs", (k % 101) / 100, k % 5 != 0,
             100.0, "", None) for k, pid, _c, _d, _p, ok in pairs()))
        db.execute("COMMIT")
    with (out / "train.jsonl").open("w") as train, (out / "eval.jsonl").open("w") as evals:
        for k, pid, _c, _d, _p, ok in pairs():
            if ok:
                row = {"pair_id": pid, "messages": [{"role": "user", "content": question(k)},
                                                    {"role": "assistant", "content": answer(k)}]}
                (evals if k % 10 == 0 else train).write(json.dumps(row) + "\n")
    return out, run_id
