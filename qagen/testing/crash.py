"""Crash harness: SIGKILL ``qagen ingest`` at random points, then prove nothing was lost or repeated.

Used by ``tests/test_crash.py`` (a few kills in CI) and ``benchmarks/crash_soak.py``
(many more). The LLM is a ``StubServer`` whose replies depend only on the
request, so an interrupted-and-resumed run must produce the *same bytes* as
an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .stub_server import StubServer


@dataclass
class CrashReport:
    kills: int = 0
    kills_with_progress: int = 0  # kills after which the store held more finished requests than before
    requests_sent: int = 0  # HTTP requests the stub received across all runs
    repeated_finished: list[str] = field(default_factory=list)  # finished requests that were sent again
    final_status: str = ""
    identical: bool = False
    train_lines: int = 0
    eval_lines: int = 0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "qagen.cli", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_") and k != "OPENAI_API_KEY"}


def _finished(db_path: Path) -> set[str]:
    """The calls the store holds (finished, committed), as :func:`_call` names them."""
    if not db_path.exists():
        return set()
    for _ in range(20):
        try:
            with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
                rows = db.execute("SELECT request FROM requests").fetchall()
            return {_call(d["messages"], d) for d in (json.loads(r[0]) for r in rows)}
        except sqlite3.OperationalError:  # schema not created yet, or busy
            time.sleep(0.05)
    return set()


def _sent(server: StubServer, start: int) -> list[str]:
    return [_call([[m["role"], m["content"]] for m in r["messages"]], r) for r in server.requests[start:]]


def _call(messages: list, request: dict) -> str:
    """One call's identity: its messages and sampling (a prompt's samples differ only by seed and temperature)."""
    return json.dumps([messages, request.get("temperature"), request.get("seed")])


def run_with_kills(
    docs: Path, out: Path, reference: Path, server: StubServer, *, kills: int, seed: int = 0, concurrency: int = 2,
    flags: tuple[str, ...] = (),
) -> CrashReport:
    """Kill ``qagen ingest DOCS --out OUT`` ``kills`` times, then let it finish; compare with REFERENCE."""
    rng = random.Random(seed)
    args = ["ingest", str(docs), "--out", str(out), "--base-url", server.base_url, "--model", "stub-model",
            "--concurrency", str(concurrency), "--json", *flags]
    report = CrashReport()
    db_path = out / "qagen.sqlite"
    finished = _finished(db_path)
    for _ in range(kills):
        before_sent = len(server.requests)
        proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        # Kill points vary: sometimes during start-up or export, mostly while requests are in flight.
        if rng.random() < 0.25:
            time.sleep(rng.uniform(0.0, 4.0))
        else:
            target = len(finished) + rng.randint(1, 4)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None and len(_finished(db_path)) < target:
                time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        report.kills += 1
        # A finished call must never be sent again by a later run.
        report.repeated_finished += [m for m in _sent(server, before_sent) if m in finished]
        now = _finished(db_path)
        report.kills_with_progress += len(now) > len(finished)
        finished = now
    before_sent = len(server.requests)
    done = subprocess.run(cli(*args), capture_output=True, text=True, env=_env(), timeout=600)
    report.repeated_finished += [m for m in _sent(server, before_sent) if m in finished]
    report.final_status = json.loads(done.stdout)["status"] if done.stdout.strip() else f"exit {done.returncode}"
    report.requests_sent = len(server.requests)
    same = all((out / n).read_bytes() == (reference / n).read_bytes() for n in ("train.jsonl", "eval.jsonl"))
    report.identical = same
    report.train_lines = len((out / "train.jsonl").read_text().splitlines())
    report.eval_lines = len((out / "eval.jsonl").read_text().splitlines())
    return report


def reference_run(docs: Path, out: Path, server: StubServer, flags: tuple[str, ...] = ()) -> dict[str, object]:
    args = ["ingest", str(docs), "--out", str(out), "--base-url", server.base_url, "--model", "stub-model", "--json",
            *flags]
    done = subprocess.run(cli(*args), capture_output=True, text=True, env=_env(), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"reference run failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def write_corpus(folder: Path, n_docs: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        (folder / f"report-{i:03d}.md").write_text(
            f"# Report {i}\n\n## Summary\n\nThe council of district {i} approved budget line {i * 7} on day {i % 28 + 1}.\n"
            f"Councillor Ada{i} proposed it, and {i % 5 + 3} members voted in favour.\n\n"
            f"## Next steps\n\nWork on project {i} starts next month and ends in {2030 + i % 5}.\n"
        )
