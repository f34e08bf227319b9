"""The request cache (every LLM request with its response, keyed by the request hash) and failed requests."""

from __future__ import annotations

import json
import sqlite3

import orjson

from qagen.llm.base import ChatRequest, ChatResponse
from qagen.store.db import Database, utc_now


class CacheQueries(Database):
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
                orjson.dumps(response.top_logprobs).decode(), run_id, utc_now(),
            ),
        )

    def record_failure(
        self, run_id: int, stage: str, request_key: str, prompt_id: str, chunk_id: str, error: str, retryable: bool
    ) -> None:
        self._execute(
            "INSERT INTO failures(run_id, stage, request_key, prompt_id, chunk_id, error, retryable, created_at) "
            "VALUES(?,?,?,?,?,?,?,?)",
            (run_id, stage, request_key, prompt_id, chunk_id, error, int(retryable), utc_now()),
        )

    def failures(self, run_id: int) -> list[tuple[str, str, str, str]]:
        return list(
            self.db.execute(
                "SELECT stage, prompt_id, chunk_id, error FROM failures WHERE run_id=? ORDER BY id", (run_id,)
            )
        )

    def failures_by_stage(self, run_id: int) -> list[tuple[str, int, str, str, str]]:
        """(stage, failures, and the first one's prompt_id, chunk_id, error) per stage, by stage."""
        out = []
        for stage, n, first in sorted(self.db.execute(
            "SELECT stage, count(*), min(id) FROM failures WHERE run_id=? GROUP BY stage", (run_id,)
        ).fetchall()):
            example = self.db.execute("SELECT prompt_id, chunk_id, error FROM failures WHERE id=?", (first,)).fetchone()
            out.append((stage, n, *example))
        return out
