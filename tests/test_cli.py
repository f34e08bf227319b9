"""The CLI as a user runs it: real subprocesses, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

from qagen.testing import StubReply, StubServer
from tests.helpers import passage_reply

QAGEN = [sys.executable, "-m", "qagen.cli"]


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_") and k != "OPENAI_API_KEY"}
    clean.update(env or {})
    return subprocess.run([*QAGEN, *args], capture_output=True, text=True, timeout=timeout, env=clean)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_missing_folder_exits_non_zero(tmp_path):
    result = run("ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "documents folder not found" in result.stderr


def test_unreachable_endpoint_exits_non_zero(corpus, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = run("ingest", str(corpus), "--out", str(tmp_path / "out"), "--base-url", url, "--model", "m", "--json")
    assert result.returncode == 1
    assert "cannot reach the LLM endpoint" in result.stderr
    assert json.loads(result.stdout)["status"] == "failed"


def test_base_url_without_model_is_an_error(corpus, tmp_path, stub):
    result = run("ingest", str(corpus), "--out", str(tmp_path / "out"), "--base-url", stub.base_url)
    assert result.returncode == 1 and "--model is required" in result.stderr


def test_json_summary_and_api_key_from_env(corpus, tmp_path):
    with StubServer(passage_reply, api_key="sk-test-canary-123") as server:
        result = run(
            "ingest", str(corpus), "--out", str(tmp_path / "out"), "--base-url", server.base_url,
            "--model", "stub-model", "--json", env={"OPENAI_API_KEY": "sk-test-canary-123"},
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "ok" and summary["requests_sent"] == server.count() > 0
        assert summary["pairs_total"] == summary["train_pairs"] + summary["eval_pairs"] > 0
        # the key authenticated every request, and is stored nowhere
        db = (tmp_path / "out" / "qagen.sqlite").read_bytes()
        assert b"sk-test-canary-123" not in db
        assert "sk-test-canary-123" not in result.stdout + result.stderr


def test_skipped_files_are_listed_and_fail_on_skip_exits_1(corpus, tmp_path, stub):
    (corpus / "blob.bin").write_bytes(b"\x00\x01\x02")
    (corpus / "empty.txt").write_text("")
    args = ["ingest", str(corpus), "--out", str(tmp_path / "out"), "--base-url", stub.base_url, "--model", "m", "--json"]
    ok = run(*args)
    assert ok.returncode == 0, ok.stderr
    skipped = {s["path"]: s["reason"] for s in json.loads(ok.stdout)["documents_skipped"]}
    assert skipped == {"blob.bin": "unsupported format '.bin'", "empty.txt": "empty"}
    strict = run(*args, "--fail-on-skip")
    assert strict.returncode == 1


def test_prompts_list_shows_user_override(tmp_path):
    user = tmp_path / "prompts"
    user.mkdir()
    (user / "quiz.md").write_text("---\nid: quiz\nrole: generator\nenabled: false\n---\nunused\n")
    (user / "faq.md").write_text(
        "---\nid: faq\nrole: generator\noutput: qa_pairs\nsamples: 3\n---\nWrite {{ n }} FAQ pairs about {{ title }}.\n"
    )
    result = run("prompts", "list", "--prompts", str(user), "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r for r in json.loads(result.stdout)}
    assert rows["quiz"]["enabled"] is False and rows["quiz"]["source"] == str(user / "quiz.md")
    assert rows["faq"]["role"] == "generator" and rows["faq"]["samples"] == 3 and rows["about"]["samples"] == 1
    assert {"about", "summaries", "title_questions", "metadata", "facts", "entities", "section_summary", "identity"} <= set(rows)


def test_bad_prompt_file_is_a_clear_error(tmp_path):
    user = tmp_path / "prompts"
    user.mkdir()
    (user / "bad.md").write_text("---\nid: bad\nrole: generator\nn: 0\n---\nx\n")
    result = run("prompts", "list", "--prompts", str(user))
    assert result.returncode == 1 and "bad.md" in result.stderr and "n" in result.stderr
    (user / "bad.md").write_text("---\nid: bad\nrole: generator\nsamples: 0\n---\nx\n")
    result = run("prompts", "list", "--prompts", str(user))
    assert result.returncode == 1 and "bad.md" in result.stderr and "samples" in result.stderr
    result = run("prompts", "list", "--suite", "nope")
    assert result.returncode == 1 and "unknown suite 'nope'" in result.stderr


def test_kill_9_then_rerun_finishes_without_repeating_calls(corpus, tmp_path):
    """SIGKILL mid-run; the re-run completes, repeats no finished call, and matches an uninterrupted run."""
    for i in range(4):
        (corpus / f"extra{i}.txt").write_text(f"Extra report {i}. The council approved plan {i} on Monday.\n" * 3)

    def slow(req: dict) -> StubReply:
        reply = passage_reply(req)
        reply.delay = 0.15
        return reply

    with StubServer(slow) as server:
        out = tmp_path / "out"
        args = ["ingest", str(corpus), "--out", str(out), "--base-url", server.base_url, "--model", "m",
                "--concurrency", "2", "--json"]
        proc = subprocess.Popen([*QAGEN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        db_path = out / "qagen.sqlite"
        deadline = time.time() + 60
        stored = 0
        while time.time() < deadline:
            if db_path.exists():
                try:
                    stored = sqlite3.connect(db_path).execute("SELECT count(*) FROM requests").fetchone()[0]
                except sqlite3.OperationalError:
                    stored = 0
                if stored >= 6:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert stored >= 6
        assert not (out / "train.jsonl").exists()  # killed before export: no half-written file
        def sent(r: dict) -> str:  # a call: its messages and sampling (a prompt's samples differ by seed alone)
            return json.dumps([r["messages"], r.get("temperature"), r.get("seed")])

        sent_before = [sent(r) for r in server.requests]
        finished = {row[0] for row in sqlite3.connect(db_path).execute("SELECT request FROM requests")}
        result = run(*args)
        assert result.returncode == 0, result.stderr
        sent_after = [sent(r) for r in server.requests[len(sent_before):]]
        finished_calls = {sent({"messages": [{"role": a, "content": b} for a, b in d["messages"]],
                                "temperature": d.get("temperature"), "seed": d.get("seed")})
                          for d in map(json.loads, finished)}
        assert not finished_calls & set(sent_after)  # no finished call repeated
        summary = json.loads(result.stdout)
        assert summary["requests_cached"] >= len(finished)

        fresh = tmp_path / "fresh"
        clean = run("ingest", str(corpus), "--out", str(fresh), "--base-url", server.base_url, "--model", "m", "--json")
        assert clean.returncode == 0
    for name in ("train.jsonl", "eval.jsonl"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes()


def test_python_dash_m_qagen_is_the_qagen_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "qagen", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "ingest" in done.stdout and "review" in done.stdout


def test_ingest_ends_with_a_few_exported_pairs_and_the_report_path(corpus, tmp_path, stub):
    out = tmp_path / "out"
    result = run("ingest", str(corpus), "--out", str(out), "--base-url", stub.base_url, "--model", "m",
                 env={"COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    tail = result.stderr[result.stderr.index("dataset written to"):]
    shown = [line for line in tail.splitlines() if line.startswith("  Q: ")]
    assert 3 <= len(shown) <= 5 and all(len(line) <= 100 and "  A: " in line for line in shown)
    exported = [json.loads(line) for name in ("train.jsonl", "eval.jsonl") for line in (out / name).open()]
    answers = {" ".join(r["messages"][2]["content"].split()) for r in exported if r["perspective"] != "identity"}
    for line in shown:  # each is an exported pair (not an identity pair), its answer cut at most
        answer = line.split("  A: ", 1)[1]
        assert any(a == answer or (answer.endswith("...") and a.startswith(answer[:-3])) for a in answers), line
    assert f"{out / 'report.html'}" in tail.replace("\n", "")
    as_json = run("ingest", str(corpus), "--out", str(out), "--base-url", stub.base_url, "--model", "m", "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["status"] == "ok"  # stdout stays one JSON object
