"""Crash safety: SIGKILL at random points, Ctrl-C, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from qagen.testing import StubReply, StubServer
from qagen.testing.crash import cli, reference_run, run_with_kills, write_corpus
from tests.helpers import passage_reply


def slow_reply(req: dict) -> StubReply:
    reply = passage_reply(req)
    reply.delay = 0.05
    return reply


BROAD = ("--suite", "broad")


def test_ten_random_kills_then_byte_identical_dataset(tmp_path: Path):
    docs = tmp_path / "docs"
    write_corpus(docs, 8)
    with StubServer(slow_reply) as server:
        # the broad suite: every model-drafted perspective, so a run has enough calls for kills to land mid-run
        reference = reference_run(docs, tmp_path / "reference", server, BROAD)
        server.requests.clear()
        report = run_with_kills(docs, tmp_path / "out", tmp_path / "reference", server, kills=10, seed=7, flags=BROAD)
    assert report.kills == 10
    assert report.kills_with_progress >= 5  # most kills landed mid-run, after some calls had finished
    assert report.repeated_finished == []  # no finished LLM call was ever repeated
    assert report.final_status == "ok"
    assert report.identical  # byte-identical train.jsonl and eval.jsonl
    assert report.train_lines + report.eval_lines == reference["pairs_total"]
    lines = (tmp_path / "out" / "train.jsonl").read_text().splitlines()
    ids = [json.loads(line)["pair_id"] for line in lines]
    assert len(ids) == len(set(ids))  # no pair duplicated


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _wait_for_requests(db: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                count = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT count(*) FROM requests").fetchone()[0]
                if count >= n:
                    return count
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    raise AssertionError("no progress before the signal")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_writes_finished_pairs_and_exits_non_zero(tmp_path: Path, sig: int):
    docs = tmp_path / "docs"
    write_corpus(docs, 8)
    out = tmp_path / "out"
    with StubServer(slow_reply) as server:
        args = ["ingest", str(docs), "--out", str(out), "--base-url", server.base_url, "--model", "m",
                "--concurrency", "1", "--json"]
        proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_requests(out / "qagen.sqlite", 5, proc)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        summary = json.loads(stdout)
        assert summary["status"] == "interrupted"
        written = (out / "train.jsonl").read_text().splitlines() + (out / "eval.jsonl").read_text().splitlines()
        assert len(written) == summary["pairs_total"] > 0
        assert "run the same command again" in stderr
        # the next run finishes the job
        done = subprocess.run(cli(*args), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and json.loads(done.stdout)["status"] == "ok"


@pytest.mark.embedded
def test_ctrl_c_leaves_no_orphan_embedded_server(tmp_path: Path):
    pytest.importorskip("xllamacpp")
    docs = tmp_path / "docs"
    write_corpus(docs, 2)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    # --suite broad: the embedded default builds its rows by code and never starts the server
    proc = subprocess.Popen(cli("ingest", str(docs), "--out", str(out), "--json", "--suite", "broad"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    servers: list[int] = []
    while time.monotonic() < deadline and not servers:
        servers = [p for p in _children(proc.pid) if b"qagen.llm.embedded" in Path(f"/proc/{p}/cmdline").read_bytes()]
        time.sleep(0.1)
    assert servers, "the embedded server never started"
    time.sleep(2)  # let it load and take requests
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    for pid in servers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
