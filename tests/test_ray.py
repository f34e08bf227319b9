"""``--executor ray`` on a real local Ray instance (``ray.init()`` on this box), against the stub server.

The dataset must be the one a local run writes from the same corpus and
cache; a re-run pays only for what is new; shards of a killed run are merged.
The embedded model's Ray run is in test_embedded_e2e.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from qagen.pipeline.ingest import ingest
from qagen.pipeline.ray import SHARDS_DIR, shard_of
from qagen.prompting.prompts import load_prompts
from qagen.store import DB_NAME, ShardStore, Store
from tests.helpers import COPY_DOC, NOTES, WASHINGTON

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _corpus(root: Path, n: int = 12) -> Path:
    """Enough documents that several shards are busy, one unreadable file, one duplicate."""
    (root / "sub").mkdir(parents=True)
    (root / "washington.md").write_text(WASHINGTON)
    (root / "copy.md").write_text(COPY_DOC)
    (root / "sub" / "notes.txt").write_text(NOTES)
    (root / "sub" / "notes-again.txt").write_text(NOTES)  # same content, second path
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    for i in range(n):
        (root / f"doc{i:02d}.md").write_text(f"# Report {i}\n\nThe figure for district {i} was {i * 37} units, "
                                              f"up from {i * 29} the year before, said officer number {i}.\n")
    return root


def _dataset(out: Path) -> dict[str, str]:
    return {name: (out / name).read_text() for name in ("train.jsonl", "eval.jsonl")}


def _rows(out: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(out / DB_NAME) as db:
        return db.execute(sql).fetchall()


def test_ray_dataset_equals_local_run(tmp_path, stub, settings_for):
    docs = _corpus(tmp_path / "docs")
    local = ingest(docs, tmp_path / "local", settings_for(refine=True, judge=True, dedup=True))
    sent_local = stub.count()
    assert local.status == "ok"

    settings = settings_for(refine=True, judge=True, dedup=True, executor="ray", workers=2, shards=5)
    remote = ingest(docs, tmp_path / "ray", settings)
    assert remote.status == "ok"
    assert stub.count() - sent_local == sent_local  # a fresh store: the same calls again, no more
    assert remote.documents_read == local.documents_read == 16
    assert remote.documents_skipped == local.documents_skipped
    assert [s["path"] for s in remote.documents_skipped] == ["broken.pdf"]
    assert remote.chunks == local.chunks
    assert remote.requests_sent == local.requests_sent > 0
    assert remote.pairs_per_perspective == local.pairs_per_perspective
    assert remote.verdicts == local.verdicts and remote.drafted == local.drafted > 0
    assert remote.revisions_histogram == local.revisions_histogram
    assert remote.pairs_total == local.pairs_total > 0
    assert _dataset(tmp_path / "ray") == _dataset(tmp_path / "local")  # byte for byte, same order
    assert (tmp_path / "ray" / "dpo.jsonl").read_text() == (tmp_path / "local" / "dpo.jsonl").read_text()
    # The shards were merged and removed; the main store holds every reply and the run's documents.
    assert not any((tmp_path / "ray" / SHARDS_DIR).glob("run-*"))
    assert _rows(tmp_path / "ray", "SELECT count(*) FROM requests") == _rows(
        tmp_path / "local", "SELECT count(*) FROM requests")
    assert _rows(tmp_path / "ray", "SELECT path FROM run_docs ORDER BY path") == _rows(
        tmp_path / "local", "SELECT path FROM run_docs ORDER BY path")


def test_ray_rerun_pays_only_for_what_is_new(tmp_path, stub, settings_for):
    docs = _corpus(tmp_path / "docs", n=6)
    out = tmp_path / "out"
    settings = settings_for(executor="ray", workers=2)
    first = ingest(docs, out, settings)
    calls = stub.count()
    assert first.requests_sent == calls > 0
    dataset = _dataset(out)

    unchanged = ingest(docs, out, settings)
    assert unchanged.unchanged and stub.count() == calls  # nothing new: not even a replay

    (out / "train.jsonl").unlink()  # an output is gone: the workers replay every call from the main store
    again = ingest(docs, out, settings)
    assert not again.unchanged
    assert stub.count() == calls
    assert again.requests_sent == 0 and again.requests_cached == first.requests_sent + first.requests_cached
    assert _dataset(out) == dataset

    (docs / "doc03.md").write_text("# Report 3\n\nA corrected figure: 999 units, said the new officer.\n")
    third = ingest(docs, out, settings)
    suite = [p for p in load_prompts(None).perspectives if p.role == "generator"]
    assert stub.count() - calls == third.requests_sent == len(suite)  # its one chunk gets the whole suite
    # and a local run over the same cache agrees, for free
    before = stub.count()
    local = ingest(docs, tmp_path / "out", settings_for())
    assert stub.count() == before and local.requests_sent == 0
    assert local.pairs_total == third.pairs_total


def test_shards_of_a_killed_run_are_merged_next_time(tmp_path, stub, settings_for):
    """A worker's shard left behind (the driver died before merging) is merged at the next start: nothing is paid twice."""
    docs = _corpus(tmp_path / "docs", n=2)
    warm = tmp_path / "warm"
    ingest(docs, warm, settings_for())  # fills a store with every reply
    calls = stub.count()
    out = tmp_path / "out"
    Store(out).close()
    shard = out / SHARDS_DIR / "run-7" / "shard-00003"
    with ShardStore(shard, None) as s:
        s.db.execute("ATTACH DATABASE ? AS w", (str(warm / DB_NAME),))
        s.db.execute("INSERT INTO requests SELECT * FROM w.requests")
        s.db.execute("DETACH DATABASE w")

    summary = ingest(docs, out, settings_for(executor="ray", workers=1))
    assert stub.count() == calls  # every reply came from the recovered shard
    assert summary.requests_sent == 0 and summary.requests_cached > 0
    assert not (out / SHARDS_DIR / "run-7").exists()
    assert _dataset(out) == _dataset(warm)


def test_a_shard_worker_reads_the_main_cache(tmp_path):
    main = tmp_path / "main"
    with Store(main) as store:
        store.db.execute(
            "INSERT INTO requests VALUES('k1','generator','p','h','m','{}','cached reply','stop',1,2,0.1,1,'[]',1,'t')")
    with ShardStore(tmp_path / "shard", main / DB_NAME) as shard:
        assert shard.get_response("k1").content == "cached reply"
        assert shard.get_response("k2") is None
        # writes go to the shard, never to the main store
        shard.db.execute(
            "INSERT INTO requests VALUES('k2','generator','p','h','m','{}','new','stop',1,2,0.1,1,'[]',1,'t')")
    assert _rows(main, "SELECT key FROM requests") == [("k1",)]


def test_shard_of_depends_on_content_only():
    from qagen.core import ids as qids

    ids = [qids.doc_id(f"document {i}") for i in range(200)]
    assert [shard_of(i, 8) for i in ids] == [shard_of(i, 8) for i in ids]
    assert set(shard_of(i, 8) for i in ids) == set(range(8))


def test_ray_missing_gives_an_install_hint(tmp_path, stub, settings_for, monkeypatch):
    import qagen.pipeline.ray as distributed
    from qagen.core.errors import BackendError

    def missing():
        raise distributed.RayMissing("--executor ray needs Ray Data, which is not installed: pip install 'qagen[ray]'")

    monkeypatch.setattr(distributed, "require_ray", missing)
    docs = _corpus(tmp_path / "docs", n=1)
    with pytest.raises(BackendError, match=r"pip install 'qagen\[ray\]'"):
        ingest(docs, tmp_path / "out", settings_for(executor="ray"))
    runs = _rows(tmp_path / "out", "SELECT status FROM runs")
    assert runs == [("failed",)]


def test_cli_executor_ray_json(tmp_path, stub):
    import subprocess
    import sys

    docs = _corpus(tmp_path / "docs", n=2)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "qagen.cli", "ingest", str(docs), "--out", str(out), "--base-url", stub.base_url,
         "--model", "stub-model", "--executor", "ray", "--workers", "1", "--no-refine", "--no-judge", "--no-report",
         "--json"],
        capture_output=True, text=True, timeout=300,
    )
    summary = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert summary["documents_skipped"] == [{"path": "broken.pdf", "reason": summary["documents_skipped"][0]["reason"]}]
    assert summary["documents_read"] == 6 and summary["pairs_total"] > 0
    assert len((out / "train.jsonl").read_text().splitlines()) == summary["train_pairs"]


def test_a_killed_worker_shard_is_redone_and_the_output_matches_a_clean_run(tmp_path, stub, settings_for):
    """SIGKILL to the Ray worker running a shard, mid-shard: Ray retries it or the run fails clearly; either way
    the next run finishes and its dataset is byte-identical to a clean local run's."""
    import os
    import signal
    import threading
    import time

    import psutil

    docs = _corpus(tmp_path / "docs")
    clean = ingest(docs, tmp_path / "clean", settings_for())
    assert clean.status == "ok"
    start = stub.count()
    killed: list[int] = []

    def kill_a_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and stub.count() - start < 8:
            time.sleep(0.01)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if any("ShardWorker" in part for part in proc.info["cmdline"] or []):
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed.append(proc.info["pid"])
                return

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    out = tmp_path / "ray"
    settings = settings_for(executor="ray", workers=2, shards=4)
    try:
        first = ingest(docs, out, settings)
    except Exception as exc:  # noqa: BLE001 - a lost worker may end the run; it must say how to continue
        assert "run the same command again" in str(exc)
        first = None
    killer.join()
    assert killed, "no shard worker was found to kill"
    again = ingest(docs, out, settings)
    assert again.status == "ok"
    if first is None or first.status != "ok":
        assert not again.unchanged
    assert _dataset(out) == _dataset(tmp_path / "clean")


def test_a_document_that_states_no_title_gets_the_same_title_on_ray(tmp_path, stub, settings_for):
    """Ray's documents keep every field (title_from included): a headingless document gets its model-written
    title on Ray as in a local run, so the two datasets are the same."""
    from qagen.corpus.reader import read_file

    docs = tmp_path / "docs"
    docs.mkdir()
    text = ("the peso fell to a record low on friday as traders weighed the central bank's next move, and the "
            "finance ministry said it would act if the fall went on for another week.\n\nMore detail followed.\n")
    (docs / "news-2011-peso.txt").write_text(text)
    (docs / "other.md").write_text("# Budget\n\nThe council approved 12 bridges in 1999.\n")
    assert read_file(docs / "news-2011-peso.txt", "news-2011-peso.txt").title_from == "filename"
    local = ingest(docs, tmp_path / "local", settings_for())
    remote = ingest(docs, tmp_path / "ray", settings_for(executor="ray", workers=2, shards=2))
    assert local.status == remote.status == "ok"
    titles = "SELECT d.path, d.title FROM documents d ORDER BY d.path"
    assert _rows(tmp_path / "ray", titles) == _rows(tmp_path / "local", titles)
    assert dict(_rows(tmp_path / "local", titles))["news-2011-peso.txt"] != "news 2011 peso"  # the model named it
    assert _dataset(tmp_path / "ray") == _dataset(tmp_path / "local")
