"""The state store's database: one SQLite file (WAL) beside the output, its schema and its commits.

It holds documents, chunks, every LLM request with its response (keyed by
the request hash), failures, pairs and runs. Resume after a crash, an
incremental CI run and "I changed one prompt" are one code path: the
pipeline asks the store before it asks the model.

This module is the connection: the lock, the migrations (the schema is
``schema.py``), the group commit and the merge of a worker's shard. The queries live in the
modules beside it, one concern each (``cache``, ``corpus``, ``pairs``,
``facts``, ``rewrites``, ``flow``, ``report``, ``reviews``), and :class:`qagen.store.store.Store` is all of them.

Writes are group-committed: they join one open transaction that is
committed at most ``commit_window`` seconds (or ``commit_rows`` writes) after
it began, so a thousand replies a second cost a few commits, not a thousand
fsync'd ones. A kill -9 loses at most the requests in flight plus the
replies of the last window (they are asked again on the next run; nothing is
repeated that the database holds). Without a running event loop (plain
synchronous use) every write commits at once, as before.

One process at a time: a lock file next to the database makes a second
process fail fast with a clear message.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from filelock import FileLock, Timeout

from qagen.core.errors import StoreError
from qagen.store.schema import MERGE, MIGRATIONS

log = logging.getLogger(__name__)

DB_NAME = "qagen.sqlite"

def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


DATASET_FILES = ("train.jsonl", "eval.jsonl")  # what an ingest leaves beside its database


def cannot_write(exc: BaseException, folder: Path) -> StoreError | None:
    """The StoreError for a full disk or a folder qagen may not write, told apart from a damaged database."""
    text = str(exc).lower()
    if ("database or disk is full" in text or getattr(exc, "errno", None) == errno.ENOSPC or "no space left" in text
            or ("disk i/o error" in text and _free_bytes(folder) < 1 << 20)):  # the WAL could not be created
        return StoreError(f"no space left under {folder}: free some and run again; nothing is lost (finished "
                          "replies are kept in the state database)")
    if "readonly" in text or "unable to open" in text or getattr(exc, "errno", None) in (errno.EACCES, errno.EROFS):
        return StoreError(f"cannot write the state database in {folder} ({exc}): check the folder's permissions "
                          "and free space")
    return None


# What a write to the state database or OUT raises on a full disk or a folder it may not write (store_fault sorts them)
WRITE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)


def _free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def store_fault(exc: BaseException, folder: Path) -> StoreError | None:
    """:func:`cannot_write` for ``exc`` or anything it wraps (a task group's errors, a cause)."""
    todo: list[BaseException] = [exc]
    visited: set[int] = set()
    while todo:
        e = todo.pop()
        if id(e) in visited:  # a context chain can loop back on itself
            continue
        visited.add(id(e))
        if isinstance(e, StoreError):
            return e if "no space left" in str(e) or "cannot write" in str(e) else None
        if isinstance(e, (sqlite3.Error, OSError)) and (fault := cannot_write(e, folder)) is not None:
            return fault
        todo += list(getattr(e, "exceptions", ())) + [x for x in (e.__cause__, e.__context__) if x is not None]
    return None


def utc_now() -> str:
    """The timestamp every row is written with (UTC, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class Database:
    """The connection, its lock, the migrations and the group commit; the query mixins build on it."""

    checkpoint_each_commit = True  # False only to measure what it costs (benchmarks/wal_cost.py)

    def __init__(self, folder: Path, *, commit_window: float = 0.05, commit_rows: int = 2000):
        folder.mkdir(parents=True, exist_ok=True)
        self.commit_window = commit_window
        self.commit_rows = commit_rows
        self._pending = 0  # writes in the open group transaction
        self._opened = 0.0  # when it began (monotonic)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._deferred: sqlite3.Error | None = None  # a timed commit's failure, raised at the next write
        self.path = folder / DB_NAME
        self._lock = FileLock(str(folder / ".qagen.lock"))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise StoreError(
                f"another qagen process is using {folder} (lock {folder / '.qagen.lock'}); "
                "wait for it to finish or use another --out folder"
            ) from None
        try:
            self.db = self._open()
        except BaseException:
            self._lock.release()
            raise

    def _open(self) -> sqlite3.Connection:
        present = self.path.exists()  # a 0-byte file too: moving it away is how a user starts over, emptying it is not
        existed = present and self.path.stat().st_size > 0
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if existed:
                check = db.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise sqlite3.DatabaseError(check)
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if (cannot := cannot_write(exc, self.path.parent)) is not None:
                raise cannot from None
            raise self._damaged(str(exc)) from None
        if present and version == 0 and any((self.path.parent / name).exists() for name in DATASET_FILES):
            # An emptied or replaced database beside a dataset it made: starting over would bill every request again.
            db.close()
            raise self._damaged("it is empty, but the folder holds a dataset it made")
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} was written by a newer qagen (schema {version}); upgrade qagen")
        for number in range(version, len(MIGRATIONS)):
            db.executescript(f"BEGIN;\n{MIGRATIONS[number]}\nPRAGMA user_version={number + 1};\nCOMMIT;")
            log.info("state database migrated to schema %d", number + 1)
        # The lock is ours, so a run still "running" belongs to a process that died (kill -9, a full disk that
        # refused even its closing write): say so, so that `qagen train` and the report do not take it for live.
        db.execute("UPDATE runs SET status='killed' WHERE status='running'")
        return db

    def _damaged(self, why: str) -> StoreError:
        return StoreError(
            f"the state database {self.path} is damaged ({why}). qagen will not silently start over, because that "
            "would re-bill every request. Restore it from a backup or CI cache, or move it (and the dataset beside "
            "it) away to start from scratch."
        )

    def close(self) -> None:
        try:
            self.flush()
            self.db.close()
        finally:
            self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- group commit -----------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Atomic writes inside the group transaction (a savepoint), committed by the window rule.

        Store methods that write go through here (or ``_execute`` for one
        statement); code that needs its own atomic multi-statement write should
        too (a bare ``BEGIN`` fails while a group transaction is open).
        """
        self._begin()
        self.db.execute("SAVEPOINT qagen_write")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO qagen_write")
            self.db.execute("RELEASE qagen_write")
            raise
        self.db.execute("RELEASE qagen_write")
        self._written()

    def _execute(self, sql: str, params: tuple[object, ...]) -> sqlite3.Cursor:
        """One statement (atomic by itself, so no savepoint) inside the group transaction."""
        self._begin()
        cursor = self.db.execute(sql, params)
        self._written()
        return cursor

    def _raise_deferred(self) -> None:
        if self._deferred is not None:
            exc, self._deferred = self._deferred, None
            raise exc

    def _begin(self) -> None:
        self._raise_deferred()
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
            self._opened, self._pending = time.monotonic(), 0
            self._arm_timer()

    def _written(self) -> None:
        self._pending += 1
        timed = self._timer is not None and self._timer_loop is _running_loop()
        if not timed or self._pending >= self.commit_rows or time.monotonic() - self._opened >= self.commit_window:
            self.flush()

    def _arm_timer(self) -> None:
        """Inside an event loop, commit when the window closes even if no further write comes."""
        self._timer_loop = _running_loop()
        # synchronous use (no loop): no timer, every write commits at once
        self._timer = self._timer_loop.call_later(self.commit_window, self._timed_flush) if self._timer_loop else None

    def _timed_flush(self) -> None:
        """The window's commit from the event loop: a failure (a full disk) is raised at the next write or flush,
        by the code that can report it, not logged as a stray callback error."""
        try:
            self.flush()
        except sqlite3.Error as exc:
            self._deferred = exc

    def flush(self) -> None:
        """Commit the open group transaction, if any (idempotent)."""
        self._raise_deferred()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.db.in_transaction:
            self.db.execute("COMMIT")
            if self.checkpoint_each_commit:
                # Copy the commit into the database file now: a WAL deleted after a kill -9 (a CI cache that keeps
                # only qagen.sqlite) then loses nothing committed. Cost: benchmarks/wal_cost.py, RESULTS.md.
                try:
                    self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.OperationalError:  # a query of ours is still reading: the next commit copies both
                    pass
        self._pending = 0

    def merge_shard(self, shard_db: Path) -> int:
        """Copy a worker's state shard into this store in one transaction; returns the replies it held."""
        self.flush()  # ATTACH cannot run inside a transaction
        self.db.execute("ATTACH DATABASE ? AS shard", (f"{shard_db.resolve().as_uri()}?mode=ro",))
        try:
            version = self.db.execute("PRAGMA shard.user_version").fetchone()[0]
            if version != len(MIGRATIONS):
                raise StoreError(f"state shard {shard_db} has schema {version}, expected {len(MIGRATIONS)}")
            replies = int(self.db.execute("SELECT count(*) FROM shard.requests").fetchone()[0])
            with self.transaction():
                for sql in MERGE:
                    self.db.execute(sql)
            self.flush()
        finally:
            self.db.execute("DETACH DATABASE shard")
        return replies
