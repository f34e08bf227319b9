"""The state store: one SQLite database (WAL) beside the output.

It holds documents, chunks, every LLM request with its response (keyed by
the request hash), failures, pairs and runs. Resume after a crash, an
incremental CI run and "I changed one prompt" are one code path: the
pipeline asks the store before it asks the model.

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
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
from filelock import FileLock, Timeout

from qagen.core.errors import StoreError
from qagen.core.records import Judgement, RefineRound, RunPair, Verdict
from qagen.core.types import Chunk, Document, QAPair
from qagen.llm.base import ChatRequest, ChatResponse

log = logging.getLogger(__name__)

DB_NAME = "qagen.sqlite"

MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE documents(
        doc_id TEXT PRIMARY KEY, path TEXT NOT NULL, title TEXT NOT NULL, fmt TEXT NOT NULL,
        n_chars INTEGER NOT NULL, meta TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
    CREATE TABLE chunks(
        chunk_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, idx INTEGER NOT NULL, title TEXT NOT NULL,
        section TEXT NOT NULL, n_tokens INTEGER NOT NULL, text TEXT NOT NULL);
    CREATE INDEX chunks_by_doc ON chunks(doc_id, idx);
    CREATE TABLE requests(
        key TEXT PRIMARY KEY, role TEXT NOT NULL, prompt_id TEXT NOT NULL, prompt_hash TEXT NOT NULL,
        model TEXT NOT NULL, request TEXT NOT NULL, content TEXT NOT NULL, finish_reason TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, latency_s REAL NOT NULL,
        attempts INTEGER NOT NULL, top_logprobs TEXT NOT NULL, run_id INTEGER, created_at TEXT NOT NULL);
    CREATE TABLE failures(
        id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, stage TEXT NOT NULL, request_key TEXT NOT NULL,
        prompt_id TEXT NOT NULL, chunk_id TEXT NOT NULL, error TEXT NOT NULL, retryable INTEGER NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE pairs(
        pair_id TEXT PRIMARY KEY, chunk_id TEXT NOT NULL, doc_id TEXT NOT NULL, perspective TEXT NOT NULL,
        request_key TEXT NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL, model TEXT NOT NULL,
        extra TEXT NOT NULL, created_at TEXT NOT NULL);
    CREATE TABLE runs(
        run_id INTEGER PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
        status TEXT NOT NULL, settings TEXT NOT NULL, summary TEXT);
    CREATE TABLE run_pairs(
        run_id INTEGER NOT NULL, pair_id TEXT NOT NULL, sort_key TEXT NOT NULL, PRIMARY KEY(run_id, pair_id));
    CREATE TABLE run_docs(
        run_id INTEGER NOT NULL, doc_id TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY(run_id, doc_id));
    """,
    # 2: refinement (critic -> regenerator rounds)
    """
    CREATE TABLE refinements(
        final_pair_id TEXT NOT NULL, round INTEGER NOT NULL, draft_pair_id TEXT NOT NULL,
        question TEXT NOT NULL, answer TEXT NOT NULL, critique TEXT NOT NULL, problems TEXT NOT NULL,
        needs_revision INTEGER NOT NULL, forced INTEGER NOT NULL, revised_question TEXT, revised_answer TEXT,
        PRIMARY KEY(final_pair_id, round));
    CREATE TABLE refined(
        final_pair_id TEXT PRIMARY KEY, draft_pair_id TEXT NOT NULL, revisions INTEGER NOT NULL,
        stop_reason TEXT NOT NULL);
    """,
    # 3: what happened to each of a run's pairs after generation: judge scores,
    # grounding, dedup, decontamination, and the verdict that decided export.
    # verdict: exported | judge_rejected | ungrounded | duplicate | contaminated
    """
    CREATE TABLE verdicts(
        run_id INTEGER NOT NULL, pair_id TEXT NOT NULL, verdict TEXT NOT NULL, detail TEXT NOT NULL,
        judge TEXT NOT NULL, judge_method TEXT NOT NULL, judge_score REAL, grounded INTEGER, grounding REAL,
        quote TEXT NOT NULL, duplicate_of TEXT, PRIMARY KEY(run_id, pair_id));
    """,
    # 4: the train -> eval -> notify flow (issue 4). A stage is done for a given
    # input key (a hash of what it consumed), so `qagen run` resumes where it stopped.
    # Notifications are kept until sent: SMTP being down never loses one.
    """
    CREATE TABLE stages(
        stage TEXT NOT NULL, key TEXT NOT NULL, run_id INTEGER NOT NULL, status TEXT NOT NULL,
        started_at TEXT NOT NULL, finished_at TEXT, result TEXT NOT NULL, PRIMARY KEY(stage, key));
    CREATE TABLE notifications(
        id INTEGER PRIMARY KEY, run_id INTEGER, kind TEXT NOT NULL, recipient TEXT NOT NULL,
        subject TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
        last_error TEXT NOT NULL, created_at TEXT NOT NULL, sent_at TEXT);
    """,
)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    def __init__(self, folder: Path, *, commit_window: float = 0.05, commit_rows: int = 2000):
        folder.mkdir(parents=True, exist_ok=True)
        self.commit_window = commit_window
        self.commit_rows = commit_rows
        self._pending = 0  # writes in the open group transaction
        self._opened = 0.0  # when it began (monotonic)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
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
        existed = self.path.exists() and self.path.stat().st_size > 0
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
            raise StoreError(
                f"the state database {self.path} is damaged ({exc}). qagen will not silently start over, "
                "because that would re-bill every request. Restore it from a backup or CI cache, or move it "
                "away to start from scratch."
            ) from None
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} was written by a newer qagen (schema {version}); upgrade qagen")
        for number in range(version, len(MIGRATIONS)):
            db.executescript(f"BEGIN;\n{MIGRATIONS[number]}\nPRAGMA user_version={number + 1};\nCOMMIT;")
            log.info("state database migrated to schema %d", number + 1)
        return db

    def close(self) -> None:
        try:
            self.flush()
            self.db.close()
        finally:
            self._lock.release()

    def __enter__(self) -> Store:
        return self

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

    def _begin(self) -> None:
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
        self._timer = self._timer_loop.call_later(self.commit_window, self.flush) if self._timer_loop else None

    def flush(self) -> None:
        """Commit the open group transaction, if any (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.db.in_transaction:
            self.db.execute("COMMIT")
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
                for sql in _MERGE:
                    self.db.execute(sql)
            self.flush()
        finally:
            self.db.execute("DETACH DATABASE shard")
        return replies

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs -----------------------------------------------------------
    def start_run(self, command: str, settings: dict[str, object]) -> int:
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO runs(command, started_at, status, settings) VALUES(?,?,?,?)",
                (command, _now(), "running", json.dumps(settings, sort_keys=True, default=str)),
            )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, summary: dict[str, object]) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE runs SET finished_at=?, status=?, summary=? WHERE run_id=?",
                (_now(), status, json.dumps(summary, sort_keys=True, default=str), run_id),
            )
        self.flush()  # the end of a run is always durable

    # --- documents and chunks --------------------------------------------
    def add_document(self, run_id: int, doc: Document, chunks: Iterable[Chunk]) -> None:
        now = _now()
        with self.transaction():
            self.db.execute(
                "INSERT INTO documents VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(doc_id) DO UPDATE SET "
                "path=excluded.path, title=excluded.title, last_seen=excluded.last_seen",
                (doc.doc_id, doc.path, doc.title, doc.fmt, len(doc.text), json.dumps(doc.meta), now, now),
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO chunks VALUES(?,?,?,?,?,?,?)",
                [(c.chunk_id, c.doc_id, c.index, c.title, c.section, c.n_tokens, c.text) for c in chunks],
            )
            self.db.execute("INSERT OR REPLACE INTO run_docs VALUES(?,?,?)", (run_id, doc.doc_id, doc.path))

    def run_doc_ids(self, run_id: int) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT doc_id FROM run_docs WHERE run_id=? ORDER BY path", (run_id,))]

    def first_chunk(self, run_id: int, doc_id: str) -> tuple[str, str, str] | None:
        """(chunk_id, document title, path in this run) of a document's first chunk."""
        row = self.db.execute(
            "SELECT c.chunk_id, d.title, r.path FROM chunks c JOIN documents d ON d.doc_id=c.doc_id "
            "JOIN run_docs r ON r.doc_id=d.doc_id AND r.run_id=? WHERE c.doc_id=? ORDER BY c.idx LIMIT 1",
            (run_id, doc_id),
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def chunk_count(self, run_id: int) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM chunks WHERE doc_id IN (SELECT doc_id FROM run_docs WHERE run_id=?)", (run_id,)
        ).fetchone()
        return int(row[0])

    # --- requests --------------------------------------------------------
    def get_response(self, key: str) -> ChatResponse | None:
        return self._response_from(self.db, key)

    @staticmethod
    def _response_from(db: sqlite3.Connection, key: str) -> ChatResponse | None:
        row = db.execute(
            "SELECT content, finish_reason, model, prompt_tokens, completion_tokens, latency_s, attempts, "
            "top_logprobs FROM requests WHERE key=?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        top = tuple((str(t), float(lp)) for t, lp in json.loads(row[7]))
        return ChatResponse(row[0], row[1], row[2], row[3], row[4], row[5], row[6], top)

    def put_response(self, run_id: int, request: ChatRequest, response: ChatResponse) -> None:
        wire = request.wire()
        self._execute(
            "INSERT OR IGNORE INTO requests VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                request.key, request.role, request.prompt_id, request.prompt_hash, request.model,
                orjson.dumps(wire).decode(), response.content, response.finish_reason, response.prompt_tokens,
                response.completion_tokens, response.latency_s, response.attempts,
                orjson.dumps(response.top_logprobs).decode(), run_id, _now(),
            ),
        )

    def record_failure(
        self, run_id: int, stage: str, request_key: str, prompt_id: str, chunk_id: str, error: str, retryable: bool
    ) -> None:
        self._execute(
            "INSERT INTO failures(run_id, stage, request_key, prompt_id, chunk_id, error, retryable, created_at) "
            "VALUES(?,?,?,?,?,?,?,?)",
            (run_id, stage, request_key, prompt_id, chunk_id, error, int(retryable), _now()),
        )

    def failures(self, run_id: int) -> list[tuple[str, str, str, str]]:
        return list(
            self.db.execute(
                "SELECT stage, prompt_id, chunk_id, error FROM failures WHERE run_id=? ORDER BY id", (run_id,)
            )
        )

    # --- pairs -----------------------------------------------------------
    def _insert_pairs(self, pairs: Iterable[QAPair]) -> None:
        now = _now()
        self.db.executemany(
            "INSERT OR IGNORE INTO pairs VALUES(?,?,?,?,?,?,?,?,?,?)",
            [
                (p.pair_id, p.chunk_id, p.doc_id, p.perspective, p.request_key, p.question, p.answer,
                 p.model, json.dumps(p.extra), now)
                for p in pairs
            ],
        )

    def add_pairs(self, run_id: int, pairs: Iterable[tuple[QAPair, str]]) -> None:
        """Store pairs (idempotent) and mark them as produced by this run, with a sort key."""
        rows = list(pairs)
        with self.transaction():
            self._insert_pairs(p for p, _ in rows)
            self.db.executemany(
                "INSERT OR REPLACE INTO run_pairs VALUES(?,?,?)", [(run_id, p.pair_id, key) for p, key in rows]
            )

    def add_drafts(self, pairs: Iterable[QAPair]) -> None:
        """Keep draft pairs (the refinement loop's starting points) without exporting them."""
        with self.transaction():
            self._insert_pairs(pairs)

    def add_refinement(self, final_pair_id: str, draft_pair_id: str, rounds: list[RefineRound], stop: str) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO refinements VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (final_pair_id, i + 1, draft_pair_id, r.question, r.answer, r.critique, json.dumps(r.problems),
                     int(r.needs_revision), int(r.forced), r.revised_question, r.revised_answer)
                    for i, r in enumerate(rounds)
                ],
            )
            revisions = sum(1 for r in rounds if r.revised_answer is not None)
            self.db.execute(
                "INSERT OR REPLACE INTO refined VALUES(?,?,?,?)", (final_pair_id, draft_pair_id, revisions, stop)
            )

    # --- verdicts (schema 3) -----------------------------------------------
    def put_judgements(self, run_id: int, judged: Iterable[tuple[str, Judgement]]) -> None:
        """Judge scores for this run's pairs; the verdict is settled at the end of the run."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (run_id, pid, "pending", "", json.dumps(j.scores, sort_keys=True), j.method, j.score,
                     None, None, "", None)
                    for pid, j in judged
                ],
            )

    def judgements(self, run_id: int) -> dict[str, tuple[dict[str, float], str, float | None]]:
        """pair_id -> (scores, method, mean score) for this run's judged pairs."""
        rows = self.db.execute("SELECT pair_id, judge, judge_method, judge_score FROM verdicts WHERE run_id=?", (run_id,))
        return {r[0]: (json.loads(r[1]), r[2], r[3]) for r in rows}

    def put_verdicts(self, run_id: int, rows: Iterable[Verdict]) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (run_id, v.pair_id, v.verdict, v.detail, json.dumps(v.judge, sort_keys=True), v.judge_method,
                     v.judge_score, v.grounded, v.grounding, v.quote, v.duplicate_of)
                    for v in rows
                ],
            )

    def exported_per_perspective(self, run_id: int) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT p.perspective, count(*) FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
            "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=r.pair_id "
            "WHERE r.run_id=? AND coalesce(v.verdict, 'exported')='exported' GROUP BY p.perspective",
            (run_id,),
        )
        return {r[0]: int(r[1]) for r in rows}

    def chunks_without_pairs(self, run_id: int) -> tuple[int, list[tuple[str, int, str]]]:
        """How many of this run's chunks ended with no exported pair, and the first few (path, index, section)."""
        # NOT IN over an uncorrelated subquery: SQLite builds its set once. (A correlated NOT EXISTS scanned
        # the run's pairs once per chunk: 70,000 chunks x 460,000 pairs at 1 GB of text.)
        rows = self.db.execute(
            "SELECT d.path, c.idx, c.section FROM run_docs d JOIN chunks c ON c.doc_id=d.doc_id WHERE d.run_id=? "
            "AND c.chunk_id NOT IN (SELECT p.chunk_id FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
            "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=r.pair_id "
            "WHERE r.run_id=? AND coalesce(v.verdict, 'exported')='exported') "
            "ORDER BY d.path, c.idx",
            (run_id, run_id),
        )
        count, first = 0, []
        for path, idx, section in rows:  # streamed: only the count and the first few are kept
            count += 1
            if len(first) < 5:
                first.append((path, int(idx), section))
        return count, first

    def mark_duplicates(self, run_id: int, dupes: Iterable[tuple[str, str, str]]) -> None:
        """(pair_id, kept pair_id, detail): turn exported verdicts into ``duplicate``."""
        with self.transaction():
            self.db.executemany(
                "UPDATE verdicts SET verdict='duplicate', duplicate_of=?, detail=? WHERE run_id=? AND pair_id=?",
                [(kept, detail, run_id, pid) for pid, kept, detail in dupes],
            )

    def verdict_counts(self, run_id: int) -> dict[str, int]:
        rows = self.db.execute("SELECT verdict, count(*) FROM verdicts WHERE run_id=? GROUP BY verdict", (run_id,))
        return {r[0]: int(r[1]) for r in rows}

    def run_revisions(self, run_id: int) -> Iterator[tuple[RunPair, str, int, str]]:
        """This run's refined pairs with their first draft's answer, revisions and stop reason."""
        yield from self._run_pairs(run_id, None, refined=True)  # type: ignore[misc]

    def run_pairs(self, run_id: int, perspective: str | None = None) -> Iterator[RunPair]:
        yield from self._run_pairs(run_id, perspective, refined=False)  # type: ignore[misc]

    def _run_pairs(self, run_id: int, perspective: str | None, *, refined: bool) -> Iterator[object]:
        """One query, in export order, with each pair's verdict; ``refined`` joins its refinement record.

        Streams rows (never the whole run in memory), so export stays flat in memory.
        """
        sql = (
            "SELECT p.pair_id, p.chunk_id, p.doc_id, p.perspective, p.question, p.answer, p.request_key, p.model, "
            "p.extra, d.path, docs.title, v.verdict, v.judge, v.judge_method, v.judge_score, v.grounded"
            + (", draft.answer, rf.revisions, rf.stop_reason" if refined else "")
            + " FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
            "JOIN run_docs d ON d.run_id=r.run_id AND d.doc_id=p.doc_id JOIN documents docs ON docs.doc_id=p.doc_id "
            "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=p.pair_id "
            + ("JOIN refined rf ON rf.final_pair_id=p.pair_id JOIN pairs draft ON draft.pair_id=rf.draft_pair_id "
               if refined else "")
            + "WHERE r.run_id=?"
        )
        args: tuple[object, ...] = (run_id,)
        if perspective is not None:
            sql += " AND p.perspective=?"
            args += (perspective,)
        for row in self.db.execute(sql + " ORDER BY r.sort_key", args):
            extra = tuple((str(k), str(v)) for k, v in json.loads(row[8]))
            pair = QAPair(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], extra)
            notes: list[tuple[str, object]] = []
            if row[13] not in (None, "none"):
                notes += [("judge", json.loads(row[12])), ("judge_score", row[14])]
            if row[15] is not None:
                notes.append(("grounded", bool(row[15])))
            rp = RunPair(pair, row[9], row[10], row[11], tuple(notes))
            yield (rp, row[16], int(row[17]), row[18]) if refined else rp

    # --- flow stages and notifications (issue 4) ---------------------------
    def stage_result(self, stage: str, key: str) -> dict[str, object] | None:
        """The result of ``stage`` finished for input ``key``, or None if it must (re)run."""
        row = self.db.execute(
            "SELECT result FROM stages WHERE stage=? AND key=? AND status='done'", (stage, key)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def record_stage(self, run_id: int, stage: str, key: str, status: str, result: dict[str, object]) -> None:
        self.db.execute(
            "INSERT INTO stages VALUES(?,?,?,?,?,?,?) ON CONFLICT(stage, key) DO UPDATE SET run_id=excluded.run_id, "
            "status=excluded.status, finished_at=excluded.finished_at, result=excluded.result",
            (stage, key, run_id, status, _now(), _now(), json.dumps(result, sort_keys=True, default=str)),
        )

    def add_notification(self, run_id: int | None, kind: str, recipient: str, subject: str, body: str) -> int:
        cur = self.db.execute(
            "INSERT INTO notifications(run_id, kind, recipient, subject, body, status, attempts, last_error, "
            "created_at) VALUES(?,?,?,?,?,'pending',0,'',?)",
            (run_id, kind, recipient, subject, body, _now()),
        )
        return int(cur.lastrowid or 0)

    def mark_notification(self, notification_id: int, *, sent: bool, error: str = "") -> None:
        self.db.execute(
            "UPDATE notifications SET status=?, attempts=attempts+1, last_error=?, sent_at=? WHERE id=?",
            ("sent" if sent else "pending", error, _now() if sent else None, notification_id),
        )

    def pending_notifications(self) -> list[tuple[int, str, str, str, str]]:
        """(id, kind, recipient, subject, body) of every notification not yet delivered, oldest first."""
        return list(
            self.db.execute(
                "SELECT id, kind, recipient, subject, body FROM notifications WHERE status='pending' ORDER BY id"
            )
        )

    def last_clean_run(self, command: str) -> dict[str, object] | None:
        """The summary of the newest finished ``command`` run, if it ended ok with nothing left to retry."""
        row = self.db.execute(
            "SELECT run_id, status, summary FROM runs WHERE command=? AND finished_at IS NOT NULL "
            "ORDER BY run_id DESC LIMIT 1", (command,)
        ).fetchone()
        if not row or row[1] != "ok" or not row[2]:
            return None
        retry = self.db.execute("SELECT 1 FROM failures WHERE run_id=? AND retryable=1 LIMIT 1", (row[0],)).fetchone()
        return None if retry else json.loads(row[2])

    def last_run_summary(self, command: str, status: str = "ok") -> dict[str, object] | None:
        """The summary of the newest ``command`` run that ended with ``status`` (e.g. the last adapter trained)."""
        row = self.db.execute(
            "SELECT summary FROM runs WHERE command=? AND status=? ORDER BY run_id DESC LIMIT 1", (command, status)
        ).fetchone()
        return json.loads(row[0]) if row and row[0] else None


class ShardStore(Store):
    """A worker's own state shard (``--executor ray``): writes go here, cached replies also come from ``base``.

    ``base`` is the main store's database, opened read-only, so a worker pays
    only for requests neither its shard nor the main store has seen. The
    driver merges every shard into the main store at the end
    (:meth:`Store.merge_shard`).
    """

    def __init__(self, folder: Path, base: Path | None, **kwargs: object):
        super().__init__(folder, **kwargs)  # type: ignore[arg-type]
        self.base: sqlite3.Connection | None = None
        if base is not None and base.exists():
            self.base = sqlite3.connect(f"{base.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)

    def get_response(self, key: str) -> ChatResponse | None:
        found = super().get_response(key)
        if found is None and self.base is not None:
            found = self._response_from(self.base, key)
        return found

    def close(self) -> None:
        if self.base is not None:
            self.base.close()
        super().close()


# Per table: how a shard's rows join the main store. Content-keyed rows are
# immutable (OR IGNORE); per-run rows take the shard's (OR REPLACE);
# failures get new ids.
_MERGE = (
    "INSERT OR IGNORE INTO main.requests SELECT * FROM shard.requests",
    "INSERT INTO main.documents SELECT * FROM shard.documents WHERE true ON CONFLICT(doc_id) DO UPDATE SET "
    "path=excluded.path, title=excluded.title, last_seen=excluded.last_seen",
    "INSERT OR IGNORE INTO main.chunks SELECT * FROM shard.chunks",
    "INSERT INTO main.failures(run_id, stage, request_key, prompt_id, chunk_id, error, retryable, created_at) "
    "SELECT run_id, stage, request_key, prompt_id, chunk_id, error, retryable, created_at FROM shard.failures "
    "ORDER BY id",
    "INSERT OR IGNORE INTO main.pairs SELECT * FROM shard.pairs",
    "INSERT OR REPLACE INTO main.run_pairs SELECT * FROM shard.run_pairs",
    "INSERT OR REPLACE INTO main.run_docs SELECT * FROM shard.run_docs",
    "INSERT OR REPLACE INTO main.refinements SELECT * FROM shard.refinements",
    "INSERT OR REPLACE INTO main.refined SELECT * FROM shard.refined",
    "INSERT OR REPLACE INTO main.verdicts SELECT * FROM shard.verdicts",
)
