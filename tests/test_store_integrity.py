"""The state database: one process per output folder, and a damaged database is refused, never replaced."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from qagen.testing import StubReply, StubServer
from tests.helpers import passage_reply

QAGEN = [sys.executable, "-m", "qagen.cli"]


def cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_") and k != "OPENAI_API_KEY"}


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QAGEN, *args], capture_output=True, text=True, timeout=timeout, env=cli_env())


def ingest_args(docs: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    return ["ingest", str(docs), "--out", str(out), "--base-url", base_url, "--model", "stub-model", "--json", *extra]


def slow(req: dict) -> StubReply:
    reply = passage_reply(req)
    reply.delay = 0.5
    return reply


def test_second_process_on_same_folder_fails_fast(corpus, tmp_path):
    out = tmp_path / "out"
    with StubServer(slow) as server:
        args = ingest_args(corpus, out, server.base_url, "--concurrency", "1")
        first = subprocess.Popen([*QAGEN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
        try:
            deadline = time.monotonic() + 60
            while server.count() == 0:  # a request on the wire: the store (and its lock) is open
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "first qagen never sent a request"
                time.sleep(0.05)
            started = time.monotonic()
            second = run_cli(*args, timeout=30)
            elapsed = time.monotonic() - started
            assert second.returncode == 1
            assert "another qagen process" in " ".join(second.stderr.split())  # rich wraps lines
            assert json.loads(second.stdout)["status"] == "failed"
            assert elapsed < 15
            assert first.poll() is None  # the first run was not disturbed
        finally:
            if first.poll() is None:
                first.send_signal(signal.SIGTERM)  # stops like Ctrl-C: finished work written, lock released
            stdout, stderr = first.communicate(timeout=60)
        assert first.returncode == 130, stderr.decode()
        assert json.loads(stdout)["status"] == "interrupted"

        # the interrupted run released its lock: the same command resumes and finishes
        server.handler = passage_reply
        resumed = run_cli(*args)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["requests_cached"] > 0


def _assert_refused(corpus: Path, out: Path, base_url: str) -> None:
    db = out / "qagen.sqlite"
    before = db.read_bytes()
    result = run_cli(*ingest_args(corpus, out, base_url))
    assert result.returncode == 1
    assert "damaged" in " ".join(result.stderr.split())
    assert json.loads(result.stdout)["status"] == "failed"
    assert db.exists() and db.read_bytes() == before  # not replaced, not deleted, not "repaired"


def test_lock_released_after_normal_run_then_truncated_database_is_refused_and_kept(corpus, tmp_path):
    out = tmp_path / "out"
    with StubServer(passage_reply) as server:
        first = run_cli(*ingest_args(corpus, out, server.base_url))
        assert first.returncode == 0, first.stderr
        # a normal run releases its lock: a second run on the same folder works (all from the store)
        again = run_cli(*ingest_args(corpus, out, server.base_url))
        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        assert summary["requests_sent"] == 0 and summary["requests_cached"] > 0

        db = out / "qagen.sqlite"
        # the run closed normally: the WAL was checkpointed into the main file and removed
        wal = out / "qagen.sqlite-wal"
        assert not wal.exists() or wal.stat().st_size == 0
        size = db.stat().st_size
        assert size >= 4 * 4096  # several pages, so half of it loses real data
        with db.open("r+b") as f:
            f.truncate(size // 2)
        _assert_refused(corpus, out, server.base_url)
        assert server.count() == json.loads(first.stdout)["requests_sent"]  # nothing was sent for the refused run


def test_garbage_database_is_refused_and_kept(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "qagen.sqlite").write_bytes(random.Random(7).randbytes(64 * 1024))
    with StubServer(passage_reply) as server:
        _assert_refused(corpus, out, server.base_url)
        assert server.count() == 0
