"""Safe in a CI pipeline (issue 31): the documents folder is the boundary, qagen's own output is never read back,
and a failed run never replaces a good dataset. Each test reproduces one failure found by trying it."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from qagen.core.errors import InputError
from qagen.corpus.reader import iter_documents
from qagen.pipeline.ingest import ingest

SECRET = "[http] extraheader = AUTHORIZATION: basic c2VjcmV0LXRva2Vu"


def _bodies(stub) -> str:
    return json.dumps(stub.requests)


def test_a_symlink_out_of_the_folder_is_skipped_and_never_sent(tmp_path: Path, corpus: Path, stub, settings_for):
    outside = tmp_path / "git-config"
    outside.write_text(SECRET + "\n" * 3 + "More lines of a private file that must not be read.\n")
    os.symlink(outside, corpus / "notes.txt")
    (corpus / "inside.txt").write_text("A linked copy of a file inside the folder may be read.\n" * 3)
    os.symlink(corpus / "inside.txt", corpus / "alias.txt")

    walked = {d.path: getattr(d, "reason", "read") for d in iter_documents(corpus)}
    assert walked["notes.txt"] == "symlink leaves the folder"
    assert walked["alias.txt"] == "read" and walked["inside.txt"] == "read"

    out = tmp_path / "out"
    summary = ingest(corpus, out, settings_for(report=True))
    assert {"path": "notes.txt", "reason": "symlink leaves the folder"} in summary.documents_skipped
    assert "c2VjcmV0LXRva2Vu" not in _bodies(stub)
    for name in ("train.jsonl", "eval.jsonl", "report.html", "qagen.sqlite"):
        assert b"c2VjcmV0LXRva2Vu" not in (out / name).read_bytes(), name

    # Opting in reads it (and is part of the inputs: the next run is not a no-op).
    opted = ingest(corpus, out, settings_for(follow_symlinks=True))
    assert not opted.unchanged and "notes.txt" not in {s["path"] for s in opted.documents_skipped}
    assert "c2VjcmV0LXRva2Vu" in _bodies(stub)


def test_an_output_folder_inside_the_docs_is_not_read_back(tmp_path: Path, corpus: Path, stub, settings_for):
    out = corpus / "qagen-out"
    settings = settings_for(report=True, exam=True)
    first = ingest(corpus, out, settings)
    assert first.status == "ok" and first.warnings and "inside the documents folder" in first.warnings[0]
    sent = stub.count()
    assert (out / "report.html").exists() and (out / "README.md").exists()
    second = ingest(corpus, out, settings)
    assert second.unchanged and stub.count() == sent  # the card and report did not become documents
    assert second.documents_read == first.documents_read == 2


def test_out_equal_to_docs_is_refused_and_out_as_a_file_is_an_error(tmp_path: Path, corpus: Path, settings_for):
    before = sorted(p.name for p in corpus.iterdir())
    with pytest.raises(InputError, match="documents folder"):
        ingest(corpus, corpus, settings_for())
    with pytest.raises(InputError, match="documents folder"):
        ingest(corpus, corpus / "speeches" / "..", settings_for())
    assert sorted(p.name for p in corpus.iterdir()) == before  # nothing written there
    a_file = tmp_path / "out.txt"
    a_file.write_text("not a folder")
    with pytest.raises(InputError, match="is a file"):
        ingest(corpus, a_file, settings_for())
    assert a_file.read_text() == "not a folder"


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and not p.name.startswith("qagen.")}


def test_an_empty_docs_folder_leaves_the_good_dataset(tmp_path: Path, corpus: Path, settings_for):
    out = tmp_path / "out"
    settings = settings_for(report=True, exam=True)
    assert ingest(corpus, out, settings).pairs_total > 0
    before = _snapshot(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = ingest(empty, out, settings)
    assert failed.status == "failed" and failed.replaced == []
    assert "nothing in" in failed.warnings[-1] and "train.jsonl" in failed.warnings[-1]
    assert _snapshot(out) == before  # train.jsonl still holds the good pairs, byte for byte
    assert not list(out.glob(".*.tmp"))  # no staged file left behind


def test_a_rejected_model_name_leaves_the_good_dataset(tmp_path: Path, corpus: Path, stub, settings_for):
    from qagen.testing.stub_server import StubReply

    out = tmp_path / "out"
    settings = settings_for(report=True, exam=True, max_retries=0)
    good = ingest(corpus, out, settings)
    before = _snapshot(out)
    stub.handler = lambda req: StubReply(status=404)  # "The model `mistral-7b` does not exist"
    bad = ingest(corpus, out, settings_for(report=True, exam=True, max_retries=0, seed=7))  # new requests: not cached
    assert bad.status == "failed" and "every request to the model failed" in bad.error
    assert bad.requests_failed > 0 and good.pairs_total > 1
    assert _snapshot(out) == before


def test_a_report_that_cannot_be_written_makes_the_run_partial(tmp_path: Path, corpus: Path, settings_for,
                                                               monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "out"
    settings = settings_for(report=True)
    ingest(corpus, out, settings)
    assert (out / "report.html").exists() and (out / "README.md").exists()
    import qagen.output.report as report

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_report", broken)
    second = ingest(corpus, out, settings_for(report=True, seed=3))
    assert second.status == "partial" and any("report" in f for f in second.failure_examples)
    assert not (out / "report.html").exists() and not (out / "README.md").exists()  # no stale report beside new data
    assert {"report.html", "README.md", "train.jsonl"} <= set(second.replaced)
    monkeypatch.undo()
    third = ingest(corpus, out, settings_for(report=True, seed=3))
    assert not third.unchanged and third.status == "ok" and (out / "report.html").exists()


def test_the_outputs_are_replaced_together_or_not_at_all(tmp_path: Path, corpus: Path, settings_for,
                                                         monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "out"
    ingest(corpus, out, settings_for(exam=True))
    before = _snapshot(out)
    import qagen.pipeline.finish as pipeline

    def exam_fails(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "write_exam", exam_fails)  # after train.jsonl and eval.jsonl were written
    from qagen.core.errors import StoreError

    with pytest.raises(StoreError, match="no space left under"):
        ingest(corpus, out, settings_for(exam=True, seed=5))
    assert _snapshot(out) == before  # neither a new train.jsonl beside the old eval.jsonl nor the reverse
    assert not list(out.glob(".*.tmp"))
    with sqlite3.connect(out / "qagen.sqlite") as db:  # the run is closed, not left "running"
        status, summary = db.execute("SELECT status, summary FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
    assert status == "failed" and "no space left" in json.loads(summary)["error"]


def test_train_refuses_a_dataset_whose_last_ingest_failed(tmp_path: Path, corpus: Path, stub, settings_for):
    from typer.testing import CliRunner

    from qagen.cli.app import app
    from qagen.flow.train import last_ingest_problem
    from qagen.store import Store

    out = tmp_path / "out"
    ingest(corpus, out, settings_for())
    with Store(out) as store:
        assert last_ingest_problem(store) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    ingest(empty, out, settings_for())  # failed: no readable documents
    result = CliRunner().invoke(app, ["train", str(out), "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout.strip().splitlines()[-1])["error"]
    assert "last `qagen ingest` of this folder failed" in error and "--force" in error
    with sqlite3.connect(out / "qagen.sqlite") as db:  # nothing was trained
        assert db.execute("SELECT count(*) FROM runs WHERE command='train'").fetchone()[0] == 0


@pytest.mark.parametrize("name,content,expected", [
    ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("deep.jsonl", '{"question": "q?", "answer": "a"}\n' + "[" * 100_000 + "]" * 100_000 + "\n",
     "line 2: not usable JSON: nested too deeply"),
    ("digits.jsonl", '{"question": "q?", "answer": "a"}\n{"question": "q?", "answer": ' + "9" * 5000 + "}\n",
     "line 2: not usable JSON: Exceeds the limit"),
    ("big.jsonl", '{"question": "' + "x" * 1_100_000 + '", "answer": "a"}\n', "line 1"),
])
def test_hostile_question_files_are_one_line_errors(tmp_path: Path, name: str, content: str, expected: str):
    from qagen.corpus.questions import load_questions
    from qagen.corpus.questions import question_texts as decontamination_questions

    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError) as err:
        load_questions(path)
    message = str(err.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message
    with pytest.raises(InputError, match=str(path)):
        decontamination_questions([path])


def test_question_count_and_file_size_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from qagen.corpus.questions import load_questions

    path = tmp_path / "many.jsonl"
    path.write_text("".join(f'{{"question": "question {i}?", "answer": "a{i}"}}\n' for i in range(120)))
    assert len(load_questions(path)) == 120
    monkeypatch.setenv("QAGEN_MAX_QUESTIONS", "100")
    with pytest.raises(InputError, match="more than 100 questions"):
        load_questions(path)
    monkeypatch.delenv("QAGEN_MAX_QUESTIONS")
    monkeypatch.setenv("QAGEN_MAX_QUESTION_FILE_BYTES", "2000")
    with pytest.raises(InputError, match="over the limit"):
        load_questions(path)


def test_eval_cli_reports_a_deep_file_in_one_line(tmp_path: Path, corpus: Path, settings_for):
    from typer.testing import CliRunner

    from qagen.cli.app import app

    out = tmp_path / "out"
    ingest(corpus, out, settings_for())
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    result = CliRunner().invoke(app, ["eval", str(out), "--questions", str(deep), "--json"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "nested too deeply" in json.loads(result.stdout.strip().splitlines()[-1])["error"]


def test_angle_brackets_the_document_writes_are_not_template_slots():
    from qagen.curate.filters import FilterSettings, PairView, screen
    from qagen.prompting.prompts import load_prompts

    prompts = load_prompts()

    def check(perspective: str, question: str, answer: str, title: str, head: str = "") -> object:
        return screen(PairView(question, answer, prompts.by_id(perspective), title, head), FilterSettings())

    vec = "std::vector<int> and its growth policy"
    head = "A std::vector<int> doubles its capacity when it is full. The <details> element hides its content."
    assert check("title_questions", f'What does "{vec}" say about growth?', "It doubles its capacity.", vec) is None
    assert check("quiz", 'What does the <details> element do in "HTML elements"?', "It hides its content.",
                 "HTML elements", head) is None
    # a slot the document does not write is still a template leak
    got = check("quiz", f'What does <a function> return in "{vec}"?', "A copy.", vec, head)
    assert got is not None and got[0] == "template"


def test_report_shows_control_and_bidi_characters_in_file_names_as_escapes(tmp_path: Path, settings_for):
    docs = tmp_path / "docs"
    docs.mkdir()
    name = "invoice\u202egpj.exe\x07.md"  # a right-to-left override and a bell in a file name
    (docs / name).write_text("# Invoice\n\nThe invoice of March 2024 lists 12 items shipped to Lisbon.\n")
    out = tmp_path / "out"
    summary = ingest(docs, out, settings_for(report=True))
    assert summary.status == "ok"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "\u202e" not in html and "\x07" not in html
    assert "invoice\\u202egpj.exe\\u0007.md" in html


def test_a_ci_log_gets_plain_progress_lines_while_the_run_goes(tmp_path: Path, corpus: Path):
    import subprocess
    import sys

    from qagen.testing import StubServer
    from tests.helpers import passage_reply

    def slow(req: dict):
        reply = passage_reply(req)
        reply.delay = 0.25
        return reply

    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    env["QAGEN_PROGRESS_EVERY"] = "0.5"
    with StubServer(slow) as server:
        done = subprocess.run(
            [sys.executable, "-m", "qagen.cli", "ingest", str(corpus), "--out", str(tmp_path / "out"), "--base-url",
             server.base_url, "--model", "stub", "--concurrency", "1", "--suite", "broad", "--no-report", "--json"],
            capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # stdout stays one JSON object
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("[ingest] requests")]
    assert len(lines) >= 3, done.stderr[-2000:]
    import re

    counts = [tuple(map(int, m.groups())) for ln in lines if (m := re.search(r"requests (\d+)/(\d+)", ln))]
    assert counts and all(d <= t for d, t in counts)  # never more done than planned
    assert counts[-1][0] > counts[0][0] and "/s" in lines[-1] and "elapsed" in lines[-1]
    assert summary["requests_sent"] >= counts[-1][0]


# --- a full disk ------------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs where the machine lets us mount one (root in a container usually can), else None: the tests
    then simulate ENOSPC at the database's writes."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True).returncode == 0
    yield disk if mounted else None
    if mounted:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free on ``disk``."""
    ballast = disk / "ballast"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with ballast.open("ab") as fh:
        fh.write(b"\0" * max(free - leave, 0))
    return ballast


def _big_corpus(root: Path) -> Path:
    root.mkdir()
    sections = "\n\n".join(f"## Part {i}\n\n" + " ".join(
        f"In {1900 + i + j} the council of district {i} approved budget line {i * 31 + j} for {j + 2} bridges."
        for j in range(10)) for i in range(40))
    (root / "ledger.md").write_text(f"# District budgets\n\n{sections}\n")
    return root


@pytest.mark.parametrize("simulate", [False, True], ids=["tmpfs", "simulated"])
def test_a_full_disk_is_one_clear_error_and_loses_nothing(tmp_path: Path, small_disk, settings_for, stub,
                                                         monkeypatch: pytest.MonkeyPatch, simulate: bool):
    from typer.testing import CliRunner

    from qagen.cli.app import app
    from qagen.core.errors import StoreError
    from qagen.store import Store

    small_disk = None if simulate else small_disk
    docs = _big_corpus(tmp_path / "docs")
    out = (small_disk or tmp_path) / "out"
    good = ingest(docs, out, settings_for(concurrency=2))
    assert good.status == "ok"
    before = _snapshot(out)
    fuller = settings_for(concurrency=2, seed=11)  # new requests: the database must grow
    if small_disk is not None:
        ballast = _fill(small_disk, 48_000)
    else:  # simulated: the database refuses its writes after a few replies, as SQLite does on a full disk
        from qagen.store.store import Store as Real

        calls = {"n": 0}
        original = Real.put_response

        def full(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] > 5:
                raise sqlite3.OperationalError("database or disk is full")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Real, "put_response", full)
    with pytest.raises(StoreError, match="no space left under") as err:
        ingest(docs, out, fuller)
    assert "\n" not in str(err.value) and "nothing is lost" in str(err.value)
    result = CliRunner().invoke(app, ["ingest", str(docs), "--out", str(out), "--base-url", stub.base_url,
                                      "--model", "stub-model", "--suite", "broad", "--seed", "11", "--json"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["error"].startswith("no space left under")
    if small_disk is not None:
        ballast.unlink()
    else:
        monkeypatch.undo()
    assert _snapshot(out) == before  # the good dataset is untouched
    with Store(out) as store:  # no run is left "running"
        assert store.last_status("ingest")[0] in ("failed", "killed")
    sent_before = stub.count()
    again = ingest(docs, out, fuller)
    assert again.status == "ok" and again.requests_cached > 0  # the replies paid for before the disk filled
    assert again.requests_sent + again.requests_cached >= stub.count() - sent_before


def test_a_full_disk_at_the_start_is_not_called_damage(tmp_path: Path, small_disk, settings_for):
    from qagen.core.errors import StoreError

    if small_disk is None:
        pytest.skip("no tmpfs here: the simulated case is covered by the test above")
    out = small_disk / "out"
    settings = settings_for()
    ingest(_big_corpus(tmp_path / "docs"), out, settings)
    ballast = _fill(small_disk, 0)
    with pytest.raises(StoreError) as err:
        ingest(tmp_path / "docs", out, settings_for(seed=4))
    assert "no space left" in str(err.value) and "damaged" not in str(err.value)
    ballast.unlink()
    assert ingest(tmp_path / "docs", out, settings).unchanged  # nothing was damaged: the same run is a no-op


# --- the state database -----------------------------------------------------------------------------------------
def test_an_emptied_database_beside_a_dataset_is_damage_not_a_silent_restart(tmp_path: Path, corpus: Path, stub,
                                                                               settings_for):
    from qagen.core.errors import StoreError

    out = tmp_path / "out"
    ingest(corpus, out, settings_for())
    sent = stub.count()
    for suffix in ("-wal", "-shm"):
        (out / f"qagen.sqlite{suffix}").unlink(missing_ok=True)
    (out / "qagen.sqlite").write_bytes(b"")  # a CI cache restored an empty file
    with pytest.raises(StoreError, match="damaged .*empty, but the folder holds a dataset"):
        ingest(corpus, out, settings_for())
    assert stub.count() == sent  # nothing was billed again


def test_a_wal_deleted_after_kill_9_loses_no_committed_reply(tmp_path: Path):
    import signal
    import subprocess
    import sys
    import time

    from qagen.testing import StubServer
    from tests.helpers import passage_reply

    def slow(req: dict):
        reply = passage_reply(req)
        reply.delay = 0.1
        return reply

    docs = _big_corpus(tmp_path / "docs")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    with StubServer(slow) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qagen.cli", "ingest", str(docs), "--out", str(out), "--base-url",
             server.base_url, "--model", "stub", "--concurrency", "2", "--suite", "broad"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 120
        while server.count() < 30 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered = server.count()
    assert answered >= 30
    for suffix in ("-wal", "-shm"):  # a cache step that keeps only qagen.sqlite
        (out / f"qagen.sqlite{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(out / "qagen.sqlite") as db:
        kept = db.execute("SELECT count(*) FROM requests").fetchone()[0]
    # at most the requests in flight (2) and the last commit window's replies are asked again
    assert kept >= answered - 6, (kept, answered)


@pytest.mark.parametrize("suite", ["ledger", "broad"])
def test_the_request_total_is_never_below_what_is_done(tmp_path: Path, stub, settings_for, suite: str):
    """A long document's whole-document map requests are counted when planned (a 20 MB document once showed
    42,746 done of 37,411), and the repair loop's calls are counted once."""
    docs = _big_corpus(tmp_path / "docs")

    class Count:
        added = done = 0

        def requests_added(self, n: int) -> None:
            self.added += n

        def request_done(self, *, cached: bool, failed: bool) -> None:
            self.done += 1

        def pairs_added(self, n: int) -> None: ...

        def doc_read(self, path: str, n_chunks: int) -> None: ...

        def doc_skipped(self, path: str, reason: str) -> None: ...

    counted = Count()
    summary = ingest(docs, tmp_path / "out", settings_for(suite=suite, exam=True, refine="repair", filters=True),
                     progress=counted)
    assert summary.chunks > 3 and counted.done == summary.requests_sent + summary.requests_cached > 0
    assert counted.added == counted.done


def test_files_a_killed_run_had_staged_are_cleaned_up(tmp_path: Path, corpus: Path, settings_for):
    out = tmp_path / "out"
    ingest(corpus, out, settings_for())
    (out / ".train.jsonl.abc123.tmp").write_text("half a dataset")  # a kill -9 between staging and the rename
    ingest(corpus, out, settings_for(seed=2))
    assert not list(out.glob(".*.tmp"))
