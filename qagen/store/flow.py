"""Runs, the flow's stages (train -> eval -> notify) and the notifications kept until sent."""

from __future__ import annotations

import json
from dataclasses import dataclass

from qagen.store.db import Database, utc_now


@dataclass(frozen=True)
class RunRecord:
    """One row of ``runs``, its JSON decoded."""

    run_id: int
    command: str
    status: str
    started_at: str
    finished_at: str | None  # None while running (or if the process died)
    settings: dict[str, object]
    summary: dict[str, object]  # {} until the run finished


class FlowQueries(Database):
    # --- runs -----------------------------------------------------------
    def start_run(self, command: str, settings: dict[str, object]) -> int:
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO runs(command, started_at, status, settings) VALUES(?,?,?,?)",
                (command, utc_now(), "running", json.dumps(settings, sort_keys=True, default=str)),
            )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, summary: dict[str, object]) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE runs SET finished_at=?, status=?, summary=? WHERE run_id=?",
                (utc_now(), status, json.dumps(summary, sort_keys=True, default=str), run_id),
            )
        self.flush()  # the end of a run is always durable

    def carry_run(self, from_run: int, to_run: int) -> None:
        """A run that changed nothing holds what the run it repeats held (its documents, pairs, verdicts and
        rewrites), so everything that reads "the latest ingest run" (eval, report, export) finds the corpus there."""
        with self.transaction():
            self.db.execute("INSERT OR IGNORE INTO run_docs SELECT ?, doc_id, path FROM run_docs WHERE run_id=?",
                            (to_run, from_run))
            self.db.execute("INSERT OR IGNORE INTO run_pairs SELECT ?, pair_id, sort_key FROM run_pairs "
                            "WHERE run_id=?", (to_run, from_run))
            self.db.execute("INSERT OR IGNORE INTO verdicts SELECT ?, pair_id, verdict, detail, judge, judge_method, "
                            "judge_score, grounded, grounding, quote, duplicate_of FROM verdicts WHERE run_id=?",
                            (to_run, from_run))
            self.db.execute("INSERT OR IGNORE INTO run_rewrites SELECT ?, rewrite_id, sort_key FROM run_rewrites "
                            "WHERE run_id=?", (to_run, from_run))

    def run_record(self, run_id: int) -> RunRecord | None:
        row = self.db.execute(
            "SELECT run_id, command, status, started_at, finished_at, settings, summary FROM runs WHERE run_id=?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        summary = json.loads(row[6]) if row[6] else {}
        return RunRecord(int(row[0]), row[1], row[2], row[3], row[4], json.loads(row[5] or "{}"), summary)

    def latest_finished_run(self, command: str) -> int | None:
        """The id of the newest finished ``command`` run (whatever its status), or None."""
        row = self.db.execute(
            "SELECT run_id FROM runs WHERE command=? AND finished_at IS NOT NULL ORDER BY run_id DESC LIMIT 1",
            (command,),
        ).fetchone()
        return None if row is None else int(row[0])

    def last_status(self, command: str) -> tuple[str, str] | None:
        """(status, error) of the newest ``command`` run, finished or not; None if there is none."""
        row = self.db.execute(
            "SELECT status, summary FROM runs WHERE command=? ORDER BY run_id DESC LIMIT 1", (command,)
        ).fetchone()
        if row is None:
            return None
        error = str((json.loads(row[1]) if row[1] else {}).get("error") or "")
        return str(row[0]), error

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
            (stage, key, run_id, status, utc_now(), utc_now(), json.dumps(result, sort_keys=True, default=str)),
        )

    def add_notification(self, run_id: int | None, kind: str, recipient: str, subject: str, body: str) -> int:
        cur = self.db.execute(
            "INSERT INTO notifications(run_id, kind, recipient, subject, body, status, attempts, last_error, "
            "created_at) VALUES(?,?,?,?,?,'pending',0,'',?)",
            (run_id, kind, recipient, subject, body, utc_now()),
        )
        return int(cur.lastrowid or 0)

    def mark_notification(self, notification_id: int, *, sent: bool, error: str = "") -> None:
        self.db.execute(
            "UPDATE notifications SET status=?, attempts=attempts+1, last_error=?, sent_at=? WHERE id=?",
            ("sent" if sent else "pending", error, utc_now() if sent else None, notification_id),
        )

    def pending_notifications(self) -> list[tuple[int, str, str, str, str]]:
        """(id, kind, recipient, subject, body) of every notification not yet delivered, oldest first."""
        return list(
            self.db.execute(
                "SELECT id, kind, recipient, subject, body FROM notifications WHERE status='pending' ORDER BY id"
            )
        )
