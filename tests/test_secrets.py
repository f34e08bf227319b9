"""The API key never leaks: not to stdout/stderr (verbose or JSON), not into any output file."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qagen.testing import StubReply, StubServer
from tests.helpers import passage_reply

CANARY = "sk-canary-7f3a9e-DO-NOT-LEAK"
QAGEN = [sys.executable, "-m", "qagen.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_") and k != "OPENAI_API_KEY"}
    clean.update(env or {})
    return subprocess.run([*QAGEN, *args], capture_output=True, timeout=120, env=clean)


def assert_no_canary(result: subprocess.CompletedProcess[bytes], out: Path) -> None:
    assert CANARY.encode() not in result.stdout
    assert CANARY.encode() not in result.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert out / "qagen.sqlite" in files
    for path in files:  # qagen.sqlite (+ -wal/-shm if left), train/eval jsonl, the lock file
        assert CANARY.encode() not in path.read_bytes(), path
    with sqlite3.connect(out / "qagen.sqlite") as db:
        rows = [json.loads(r[0]) for r in db.execute("SELECT settings FROM runs")]
    assert rows
    for settings in rows:
        assert "api_key" not in settings
        assert CANARY not in json.dumps(settings)


def flaky(req: dict) -> StubReply:
    """500 for about a third of the requests (deterministically), so errors get logged."""
    digest = hashlib.sha1(json.dumps(req.get("messages"), sort_keys=True).encode()).digest()
    return StubReply(status=500) if digest[0] % 3 == 0 else passage_reply(req)


@pytest.mark.parametrize("key_from", ["env", "flag"])
def test_api_key_never_leaks(corpus, tmp_path, key_from):
    out = tmp_path / "out"
    with StubServer(passage_reply, api_key=CANARY) as server:
        args = ["ingest", str(corpus), "--out", str(out), "--base-url", server.base_url, "--model", "stub-model",
                "-v", "--json"]
        if key_from == "flag":
            result = run_cli(*args, "--api-key", CANARY)
        else:
            result = run_cli(*args, env={"OPENAI_API_KEY": CANARY})
        assert result.returncode == 0, result.stderr.decode()
        assert server.count() > 0  # the key did authenticate the requests
    summary = json.loads(result.stdout)
    assert summary["status"] == "ok" and summary["requests_failed"] == 0
    assert_no_canary(result, out)


@pytest.mark.parametrize("as_json", [False, True])
def test_api_key_never_leaks_when_requests_fail(corpus, tmp_path, as_json):
    out = tmp_path / "out"
    with StubServer(flaky, api_key=CANARY) as server:
        args = ["ingest", str(corpus), "--out", str(out), "--base-url", server.base_url, "--model", "stub-model", "-v"]
        result = run_cli(*args, *(["--json"] if as_json else []), env={"OPENAI_API_KEY": CANARY, "QAGEN_MAX_RETRIES": "1"})
    assert result.returncode == 1  # partial
    text = result.stdout + result.stderr
    assert b"500" in text  # the errors were reported...
    assert_no_canary(result, out)  # ...without the key
    with sqlite3.connect(out / "qagen.sqlite") as db:
        errors = [r[0] for r in db.execute("SELECT error FROM failures")]
    assert errors and all("HTTP 500" in e for e in errors)


def test_rejected_api_key_never_leaks(corpus, tmp_path):
    """The server refuses the key (401): the error is reported, the key is not."""
    out = tmp_path / "out"
    with StubServer(passage_reply, api_key="sk-the-right-one") as server:
        args = ["ingest", str(corpus), "--out", str(out), "--base-url", server.base_url, "--model", "stub-model", "-v"]
        result = run_cli(*args, env={"OPENAI_API_KEY": CANARY})
    assert result.returncode == 1
    assert b"401" in result.stdout + result.stderr
    assert_no_canary(result, out)


def test_smtp_password_never_leaks(corpus, tmp_path):
    """`qagen run` logs in to a real SMTP server with QAGEN_SMTP_PASSWORD; the password is in no output,
    state row or email (the quality gate stops the flow early: this test is about the secret, not training)."""
    pytest.importorskip("aiosmtpd")
    from tests.smtp_server import SMTPServer

    out = tmp_path / "out"
    server = SMTPServer(users={"qagen-bot": CANARY})
    with StubServer(passage_reply) as llm, server as inbox:
        result = run_cli(
            "run", str(corpus), "--out", str(out), "--base-url", llm.base_url, "--model", "stub-model",
            "--min-pairs", "100000", "--email", "owner@example.org", "--smtp-host", "127.0.0.1",
            "--smtp-port", str(server.port), "--smtp-user", "qagen-bot", "--smtp-tls", "none", "-v", "--json",
            env={"QAGEN_SMTP_PASSWORD": CANARY},
        )
    assert result.returncode == 2, result.stderr.decode()  # gate not met, by design
    assert inbox.logins == [("qagen-bot", CANARY)] * 2  # the password did authenticate both emails
    assert len(inbox.raw) == 2 and all(CANARY.encode() not in raw for raw in inbox.raw)
    assert_no_canary(result, out)
    with sqlite3.connect(out / "qagen.sqlite") as db:
        stored = json.dumps(db.execute("SELECT * FROM notifications").fetchall())
    assert "qagen run started" in stored and CANARY not in stored
