"""Group commit in the state store: fewer commits, same crash safety."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qagen.core.types import QAPair
from qagen.llm.base import ChatRequest, ChatResponse, Message
from qagen.store import Store


def request(i: int) -> ChatRequest:
    return ChatRequest(model="m", messages=(Message("user", f"question {i}"),), temperature=0.0, max_tokens=16)


def reply(i: int) -> ChatResponse:
    return ChatResponse(content=f"answer {i}", finish_reason="stop", model="m")


def committed(folder: Path) -> int:
    """Rows another process would see (a separate read-only connection)."""
    with sqlite3.connect(f"file:{folder / 'qagen.sqlite'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM requests").fetchone()[0])


def test_writes_in_an_event_loop_are_grouped_then_committed_by_the_window(tmp_path: Path):
    store = Store(tmp_path, commit_window=0.2)
    run_id = store.start_run("test", {})

    async def work() -> tuple[int, int, int]:
        for i in range(100):
            store.put_response(run_id, request(i), reply(i))
        own = store.get_response(request(99).key)  # the writer reads its own uncommitted rows
        assert own is not None and own.content == "answer 99"
        during = committed(tmp_path)
        await asyncio.sleep(0.4)  # the window closes: the timer commits without another write
        after = committed(tmp_path)
        return during, after, store.db.in_transaction

    during, after, still_open = asyncio.run(work())
    assert during == 0  # grouped: nothing committed inside the window
    assert after == 100 and not still_open
    store.close()


def test_row_limit_commits_early(tmp_path: Path):
    with Store(tmp_path, commit_window=60, commit_rows=10) as store:
        run_id = store.start_run("test", {})

        async def work() -> int:
            for i in range(25):
                store.put_response(run_id, request(i), reply(i))
            return committed(tmp_path)

        assert asyncio.run(work()) == 20  # two full groups of 10; the last 5 wait for the window
    assert committed(tmp_path) == 25  # close() commits the rest


def test_synchronous_use_commits_every_write(tmp_path: Path):
    with Store(tmp_path) as store:
        run_id = store.start_run("test", {})
        store.put_response(run_id, request(1), reply(1))
        assert committed(tmp_path) == 1
        assert not store.db.in_transaction


def test_a_failed_write_rolls_back_alone(tmp_path: Path):
    with Store(tmp_path, commit_window=60) as store:
        run_id = store.start_run("test", {})

        def bad_pairs():
            yield QAPair("p1", "c", "d", "quiz", "q", "a", "k", "m"), "key1"
            raise ValueError("boom")

        async def work() -> None:
            store.put_response(run_id, request(1), reply(1))
            with pytest.raises(ValueError):
                store.add_pairs(run_id, bad_pairs())
            store.put_response(run_id, request(2), reply(2))

        asyncio.run(work())
        store.flush()
        assert committed(tmp_path) == 2
        assert store.db.execute("SELECT count(*) FROM pairs").fetchone()[0] == 0


CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from qagen.store import Store
    from tests.test_store_batching import reply, request

    store = Store(__import__("pathlib").Path(sys.argv[1]), commit_window=0.1)
    run_id = store.start_run("test", {})

    async def work():
        for i in range(50):
            store.put_response(run_id, request(i), reply(i))
        await asyncio.sleep(0.3)  # committed by the window timer
        for i in range(50, 60):
            store.put_response(run_id, request(i), reply(i))
        os.kill(os.getpid(), signal.SIGKILL)  # inside the next window: these 10 are lost

    asyncio.run(work())
    """
)


def test_kill_minus_nine_loses_at_most_the_open_window(tmp_path: Path):
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=root, capture_output=True, timeout=60, check=False)
    assert done.returncode == -9, done.stderr.decode()
    with sqlite3.connect(tmp_path / "qagen.sqlite") as db:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        keys = {r[0] for r in db.execute("SELECT key FROM requests")}
    assert keys == {request(i).key for i in range(50)}
    with Store(tmp_path) as store:  # the next run opens it and sees every committed reply
        assert store.get_response(request(49).key) is not None
        assert store.get_response(request(50).key) is None
