"""The HTML report and the dataset card: their figures checked against the state database (real SQLite)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from qagen.output import report
from qagen.output.card import card_info, render_card, write_card
from qagen.output.report import (
    ReportError,
    build_report,
    latest_run,
    render_report,
    word_diff,
    write_report,
)
from qagen.store import Store
from tests.report_fixture import HOSTILE_TITLE, JUDGE_THRESHOLD, make_big_run, make_run

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "output"
QAGEN = [sys.executable, "-m", "qagen.cli"]


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    return make_run(tmp_path_factory.mktemp("report"))


@pytest.fixture
def sample_out(tmp_path: Path) -> Path:
    """A copy of the committed sample run (a real embedded-model run with the full loop)."""
    out = tmp_path / "sample"
    shutil.copytree(SAMPLE, out, ignore=shutil.ignore_patterns("*-wal", "*-shm", "report.html", "README.md"))
    return out


def q(db: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql, args).fetchall()


def stats(page: str, attr: str) -> dict[str, int]:
    """Numbers the page tags with data-ATTR="name"."""
    return {k: int(v) for k, v in re.findall(rf'data-{attr}="([^"]+)">(\d+)<', page)}


def qagen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("QAGEN_", "HF_"))}
    env = {**clean, **(env or {})}
    return subprocess.run([*QAGEN, *args], check=False, capture_output=True, text=True, timeout=180, env=env)


def test_report_figures_match_the_database(judged_run):
    out, run_id = judged_run
    db = out / "qagen.sqlite"
    with Store(out) as store:
        data = build_report(store, run_id, out)
        page = write_report(store, run_id, out).read_text()
    generated = q(db, "SELECT count(*) FROM run_pairs WHERE run_id=?", run_id)[0][0]
    verdicts = dict(q(db, "SELECT verdict, count(*) FROM verdicts WHERE run_id=? GROUP BY verdict", run_id))
    docs = q(db, "SELECT count(*) FROM run_docs WHERE run_id=?", run_id)[0][0]
    chunks = q(db, "SELECT count(*) FROM chunks c JOIN run_docs d ON d.doc_id=c.doc_id WHERE d.run_id=?", run_id)[0][0]
    zero = q(db, "SELECT count(*) FROM chunks c JOIN run_docs d ON d.doc_id=c.doc_id AND d.run_id=? WHERE c.chunk_id "
                 "NOT IN (SELECT p.chunk_id FROM verdicts v JOIN pairs p ON p.pair_id=v.pair_id "
                 "WHERE v.run_id=? AND v.verdict='exported')", run_id, run_id)[0][0]
    failures = dict(q(db, "SELECT stage, count(*) FROM failures WHERE run_id=? GROUP BY stage", run_id))
    grounded = q(db, "SELECT sum(grounded=1), sum(grounded=0) FROM verdicts WHERE run_id=?", run_id)[0]

    # the numbers the fixture set up are there, and not trivially zero
    assert verdicts["judge_rejected"] > 0 and verdicts["duplicate"] == 1 and verdicts["ungrounded"] == 1
    assert zero == 2 and failures.get("generate", 0) > 0
    assert stats(page, "k") == {
        "documents": docs, "skipped": 0, "chunks": chunks, "zero_chunks": zero, "generated": generated,
        "exported": verdicts["exported"], "thrown_away": generated - verdicts["exported"],
        "failures": sum(failures.values()), "duplicates": 1,
    }
    assert {k: v for k, v in stats(page, "verdict").items() if v} == verdicts
    assert stats(page, "stage") == failures
    assert stats(page, "grounded") == {"yes": grounded[0], "no": grounded[1], "unchecked": generated - sum(grounded)}
    assert (data.generated, data.exported_count, data.documents_total, data.zero_chunks_total) == (
        generated, verdicts["exported"], docs, zero)
    # perspective mix: generated, exported and chunks per perspective, and calls from the run summary
    per = dict(q(db, "SELECT p.perspective, count(*) FROM run_pairs r JOIN pairs p USING(pair_id) WHERE r.run_id=? "
                     "GROUP BY p.perspective", run_id))
    per_exported = {r[0]: (r[1], r[2]) for r in q(
        db, "SELECT p.perspective, count(*), count(DISTINCT p.chunk_id) FROM verdicts v JOIN pairs p USING(pair_id) "
            "WHERE v.run_id=? AND v.verdict='exported' GROUP BY p.perspective", run_id)}
    calls = json.loads(q(db, "SELECT summary FROM runs WHERE run_id=?", run_id)[0][0])["calls_per_perspective"]
    assert {p.name: p.generated for p in data.perspectives} == per
    assert {p.name: (p.exported, p.chunks) for p in data.perspectives if p.exported} == per_exported
    assert {p.name: p.calls for p in data.perspectives if p.calls is not None} == calls
    quiz = next(p for p in data.perspectives if p.name == "quiz")
    assert quiz.pairs_per_call == pytest.approx(quiz.exported / calls["quiz"])
    # documents: pairs generated and exported per document
    per_doc = {r[0]: (r[1], r[2]) for r in q(
        db, "SELECT d.path, count(p.pair_id), count(CASE WHEN v.verdict='exported' THEN 1 END) FROM run_docs d "
            "LEFT JOIN pairs p ON p.doc_id=d.doc_id AND p.pair_id IN (SELECT pair_id FROM run_pairs WHERE run_id=?) "
            "LEFT JOIN verdicts v ON v.run_id=d.run_id AND v.pair_id=p.pair_id WHERE d.run_id=? GROUP BY d.path",
        run_id, run_id)}
    assert {d.path: (d.generated, d.exported) for d in data.documents} == per_doc
    assert sorted(d.path for d in data.top_documents) == sorted(per_doc)  # the chart: every document (< 25)
    assert data.models == sorted(r[0] for r in q(db, "SELECT DISTINCT p.model FROM run_pairs r JOIN pairs p "
                                                     "USING(pair_id) WHERE r.run_id=?", run_id))
    zero_ids = {r[0] for r in q(db, "SELECT c.chunk_id FROM chunks c JOIN run_docs d ON d.doc_id=c.doc_id AND d.run_id=? "
                                    "WHERE c.chunk_id NOT IN (SELECT p.chunk_id FROM verdicts v JOIN pairs p USING(pair_id)"
                                    " WHERE v.run_id=? AND v.verdict='exported')", run_id, run_id)}
    assert {c.chunk_id for c in data.zero_chunks} == zero_ids and all(c.text for c in data.zero_chunks)
    # the duplicate, with the question it repeats
    dups = q(db, "SELECT p.question, o.question FROM verdicts v JOIN pairs p USING(pair_id) "
                 "JOIN pairs o ON o.pair_id=v.duplicate_of WHERE v.run_id=? AND v.verdict='duplicate'", run_id)
    assert [(d.question, d.repeats) for d in data.duplicates] == dups
    # the table: one row per pair (in run order), its verdict as a data attribute
    order = [r[0] for r in q(db, "SELECT pair_id FROM run_pairs WHERE run_id=? ORDER BY sort_key", run_id)]
    assert [p.pair_id for p in data.table_rows] == order
    assert len(re.findall(r'<tr data-perspective="', page)) == generated
    assert len(re.findall(r'data-verdict="exported"><td>', page)) == verdicts["exported"]
    assert 'class="cut"' not in page  # nothing was cut: every list is shorter than its cap


def test_report_judge_refinement_and_charts(judged_run):
    out, run_id = judged_run
    db = out / "qagen.sqlite"
    with Store(out) as store:
        data = build_report(store, run_id, out)
        page = write_report(store, run_id, out).read_text()
    scores = [r[0] for r in q(db, "SELECT judge_score FROM verdicts WHERE run_id=?", run_id)]
    edges = [i / 20 for i in range(21)]
    assert data.judge_scored == len(scores) > 0 and data.judge_hist.edges == edges
    assert data.judge_hist.counts == np.histogram(scores, bins=edges)[0].tolist()
    # lengths of the exported pairs: 20 bins from the shortest to the longest
    texts = q(db, "SELECT p.question, p.answer FROM verdicts v JOIN pairs p USING(pair_id) "
                  "WHERE v.run_id=? AND v.verdict='exported'", run_id)
    for hist, lengths in ((data.question_lengths, [len(t[0]) for t in texts]),
                          (data.answer_lengths, [len(t[1]) for t in texts])):
        assert (hist.edges[0], hist.edges[-1], len(hist.counts)) == (min(lengths), max(lengths), 20)
        assert hist.counts == np.histogram(lengths, bins=hist.edges)[0].tolist()
    assert data.judge_threshold == JUDGE_THRESHOLD and f"threshold {JUDGE_THRESHOLD:g}" in page
    rounds = dict(q(db, "SELECT n, count(*) FROM (SELECT max(round) n FROM refinements x JOIN run_pairs r ON "
                        "r.pair_id=x.final_pair_id AND r.run_id=? GROUP BY x.final_pair_id) GROUP BY n", run_id))
    assert data.rounds_histogram == rounds and sum(rounds.values()) > 0
    refined = "FROM refined rf JOIN run_pairs r ON r.pair_id=rf.final_pair_id AND r.run_id=?"
    assert data.revisions_histogram == dict(q(db, f"SELECT revisions, count(*) {refined} GROUP BY 1", run_id))
    assert data.stop_reasons == dict(q(db, f"SELECT stop_reason, count(*) {refined} GROUP BY 1", run_id))
    assert data.refined_pairs == sum(rounds.values())
    for chart in ("documents", "perspectives", "verdicts", "judge", "rounds", "qlen", "alen"):
        assert re.search(rf'<figure class="chart" id="chart-{chart}"><svg', page), chart
    # draft -> critique -> final, with the regenerator's edit marked as inserted text
    assert len(data.examples) == 3
    assert "<ins>In short, </ins>" in page and "(revised)</ins>" in page
    assert "Too vague; name the subject." in page


def test_report_escapes_document_text_and_fetches_nothing(judged_run):
    out, run_id = judged_run
    with Store(out) as store:
        page = write_report(store, run_id, out).read_text()
    assert HOSTILE_TITLE not in page and html.escape(HOSTILE_TITLE, quote=False) in page
    assert "<b>odd" not in page and "&lt;b&gt;odd&amp;amp;$x$.md" in page
    assert "<img" not in page and "a quote &lt;i&gt;from nowhere&lt;/i&gt;" in page
    # no resource loads: no src=/href= except in-page anchors, and a CSP that forbids them anyway
    assert re.findall(r'\b(?:src|href)="(?!#)[^"]*"', page) == []
    assert "default-src 'none'" in page
    # zero-pair chunks link to their text, which is on the page
    links = re.findall(r'<a href="#(chunk-[0-9a-f]+)">', page)
    assert len(links) == 2 and all(f'<details id="{a}">' in page for a in links)
    assert "FAILCHUNK: every generator call" in page


SAMPLE_RUN = 1  # samples/output: the README command 1 run whose outputs are committed (embedded profile: no critic loop)


def test_sample_run_report_matches_its_summary_and_files(sample_out):
    with Store(sample_out) as store:
        data = build_report(store, SAMPLE_RUN, sample_out)
        page = write_report(store, SAMPLE_RUN, sample_out).read_text()
    summary = json.loads((sample_out / "summary.json").read_text())
    lines = {n: len((sample_out / f"{n}.jsonl").read_text().splitlines()) for n in ("train", "eval")}
    assert data.has_verdicts and data.exported_count == summary["pairs_total"] == sum(lines.values())
    assert data.generated == summary["pairs_generated"]
    assert {p.name: p.exported for p in data.perspectives if p.exported} == summary["exported_per_perspective"]
    assert {p.name: p.calls for p in data.perspectives if p.calls} == summary["calls_per_perspective"]
    assert data.split_counts == lines
    in_files = {json.loads(x)["pair_id"]: n for n in lines for x in (sample_out / f"{n}.jsonl").read_text().splitlines()}
    assert len(data.table_rows) == data.generated and all(p.split == in_files.get(p.pair_id, "") for p in data.table_rows)
    exam = sum(n for v, n in summary["verdicts"].items() if v.startswith("exam"))  # never exported, by design
    assert stats(page, "k")["thrown_away"] == summary["pairs_generated"] - summary["pairs_total"] - exam


def test_run_without_verdicts_counts_every_pair_as_exported(sample_out):
    db = sample_out / "qagen.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM verdicts WHERE run_id=?", (SAMPLE_RUN,))
    with Store(sample_out) as store:
        data = build_report(store, SAMPLE_RUN, sample_out)
        page = write_report(store, SAMPLE_RUN, sample_out).read_text()
    generated = q(db, "SELECT count(*) FROM run_pairs WHERE run_id=?", SAMPLE_RUN)[0][0]
    assert not data.has_verdicts and data.exported_count == data.generated == generated
    assert 'id="no-judge"' in page and stats(page, "k")["thrown_away"] == 0


def _table_rows(page: str, table: str) -> int:
    return len(re.findall(r"<tr><td", re.search(rf'<table id="{table}">(.*?)</table>', page, re.DOTALL).group(1)))


def test_report_caps_its_lists_but_not_its_totals(judged_run, monkeypatch):
    """Past a cap the page lists the first rows only and says so; every count is still the run's total."""
    out, run_id = judged_run
    db = out / "qagen.sqlite"
    for name, cap in (("MAX_TABLE_ROWS", 5), ("MAX_DOC_ROWS", 2), ("MAX_ZERO_CHUNK_ROWS", 1)):
        monkeypatch.setattr(report, name, cap)
    with Store(out) as store:
        data = build_report(store, run_id, out)
    page = render_report(data)
    generated = q(db, "SELECT count(*) FROM run_pairs WHERE run_id=?", run_id)[0][0]
    first = [r[0] for r in q(db, "SELECT pair_id FROM run_pairs WHERE run_id=? ORDER BY sort_key LIMIT 5", run_id)]
    paths = [r[0] for r in q(db, "SELECT path FROM run_docs WHERE run_id=? ORDER BY path", run_id)]
    assert generated > 5 and len(paths) == 3
    assert [p.pair_id for p in data.table_rows] == first and len(re.findall(r'<tr data-perspective="', page)) == 5
    assert f"The first 5 of {generated} pairs are shown" in page
    assert [d.path for d in data.documents] == paths[:2] and _table_rows(page, "documents") == 2
    assert "The first 2 of 3 documents (by path) are listed." in page
    assert len(data.zero_chunks) == 1 and _table_rows(page, "zero-chunks") == 1
    assert "The first 1 of 2 chunks with no exported pair are listed." in page
    assert len(re.findall(r'<details id="chunk-', page)) == 1
    # the totals (and the charts) still cover the whole run
    assert {k: v for k, v in stats(page, "k").items() if k in ("documents", "zero_chunks", "generated")} == {
        "documents": 3, "zero_chunks": 2, "generated": generated}
    assert len(data.top_documents) == 3 and sum(p.generated for p in data.perspectives) == generated


def test_report_memory_is_flat_in_the_run_size(tmp_path, monkeypatch):
    """20,000 pairs (about 25 MB of text): what build_report allocates in Python stays far below the text."""
    import tracemalloc

    out, run_id = make_big_run(tmp_path, docs=100, chunks_per_doc=20, pairs_per_chunk=10, text=1000)
    monkeypatch.setattr(report, "MAX_TABLE_ROWS", 100)  # the table's cost is capped by design; leave it out
    text_bytes = q(out / "qagen.sqlite", "SELECT sum(length(question) + length(answer)) FROM pairs")[0][0]
    with Store(out) as store:
        tracemalloc.start()
        try:
            data = build_report(store, run_id, out)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert data.generated == 20_000 and data.split_counts["train"] > 0 and data.zero_chunks_total > 0
    assert text_bytes > 20_000_000 and peak < 4_000_000, peak  # a list of 20,000 pairs would hold all the text


def test_word_diff_marks_changes():
    assert word_diff("the cat sat", "the dog sat") == [("eq", "the "), ("del", "cat"), ("ins", "dog"), ("eq", " sat")]
    assert "".join(t for op, t in word_diff("a b", "a c d") if op != "del") == "a c d"


def test_empty_store_has_nothing_to_report(tmp_path):
    with Store(tmp_path) as store, pytest.raises(ReportError, match="no finished ingest run"):
        latest_run(store)


def test_card_header_and_counts(judged_run):
    out, run_id = judged_run
    db = out / "qagen.sqlite"
    with Store(out) as store:
        path = write_card(store, run_id, out)
        info = card_info(store, run_id, out, license="mit")
    text = path.read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    lines = {n: len((out / f"{n}.jsonl").read_text().splitlines()) for n in ("train", "eval")}
    assert header["license"] == "cc-by-4.0" and info.license == "mit"  # from the run settings; flag overrides
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "train.jsonl"},
                                                   {"split": "eval", "path": "eval.jsonl"}]
    # the fixture's verdicts came after export, so the JSONL still holds every pair: the card counts what
    # the files hold that the run exported
    exported_ids = {r[0] for r in q(db, "SELECT pair_id FROM verdicts WHERE run_id=? AND verdict='exported'", run_id)}
    in_files = {n: {json.loads(x)["pair_id"] for x in (out / f"{n}.jsonl").read_text().splitlines()} for n in lines}
    expected = {n: len(in_files[n] & exported_ids) for n in lines}
    assert {s["name"]: s["num_examples"] for s in header["dataset_info"]["splits"]} == expected
    hashes = q(db, "SELECT DISTINCT prompt_id, prompt_hash FROM requests")
    assert hashes and all(f"`{pid}`" in text and f"`{h}`" in text for pid, h in hashes)
    assert "`stub-model`" in text and '- judge_threshold: `0.5`' in text
    assert HOSTILE_TITLE not in text


def test_card_yaml_survives_odd_values(judged_run):
    out, run_id = judged_run
    with Store(out) as store:
        info = card_info(store, run_id, out, license="other\n---\nevil: 1")
    text = render_card(info, {"train": "train.jsonl"})
    assert yaml.safe_load(text.split("\n---\n")[0].removeprefix("---\n"))["license"] == "other\n---\nevil: 1"


def test_cli_report_and_hf_export(sample_out, tmp_path):
    result = qagen("report", str(sample_out), "--json")
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert Path(written["report"]).stat().st_size > 10_000 and Path(written["card"]).name == "README.md"
    hf = tmp_path / "hf"
    result = qagen("export", str(sample_out), "--hf", str(hf))
    assert result.returncode == 0, result.stderr
    from datasets import load_from_disk

    ds = load_from_disk(str(hf))
    train = [json.loads(x) for x in (sample_out / "train.jsonl").read_text().splitlines()]
    evals = (sample_out / "eval.jsonl").read_text().splitlines()
    assert ds["train"].num_rows == len(train) and ds["eval"].num_rows == len(evals) > 0
    assert ds["train"][0]["messages"] == train[0]["messages"] and ds["train"][0]["pair_id"] == train[0]["pair_id"]
    assert (hf / "README.md").read_text().count("data/train-*") == 1


def test_cli_errors_exit_non_zero(sample_out, tmp_path):
    missing = qagen("report", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "no qagen state database" in missing.stderr
    assert not (tmp_path / "nothing").exists()  # reporting never creates a store
    # pushing needs a token: a clear error, before anything is written (pushing itself is not testable here)
    hf = tmp_path / "hf"
    push = qagen("export", str(sample_out), "--hf", str(hf), "--push", "someone/data",
                 env={"HF_HOME": str(tmp_path / "hf-home")})
    assert push.returncode == 1 and "no Hugging Face token" in push.stderr and not hf.exists()
    # files that belong to another run are refused
    (sample_out / "eval.jsonl").write_text("")
    stale = qagen("export", str(sample_out), "--hf", str(hf))
    assert stale.returncode == 1 and "belong to another run" in stale.stderr


def test_report_while_ingest_holds_the_store(sample_out):
    """write_report works on the store the ingest process has open; a second process gets a clear error."""
    with Store(sample_out) as store:
        path = write_report(store, latest_run(store), sample_out)
        other = qagen("report", str(sample_out))
    assert path.is_file()
    assert other.returncode == 1 and "another qagen process" in other.stderr
