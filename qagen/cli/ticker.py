"""Progress for a log: one plain line every few seconds, whatever happens in between.

A CI log is not a terminal, so the progress bars draw nothing there, and a line per request is a flood on a fast
server and silence on a slow one. :class:`Ticker` keeps the counters the stages report and a background thread
prints, every ``every`` seconds (15 by default; ``QAGEN_PROGRESS_EVERY``), where the command stands::

    [ingest] requests 1,204/3,480 (35%), 21.3/s, ETA 1m47s; 4/9 documents, 880 pairs; 58 s elapsed

Stage changes print at once. Every long command uses it: ingest (when stderr is not a terminal), run, train, eval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from qagen.config import progress_every



def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Ticker:
    """Counters for one stage at a time, and a thread that prints them every ``every`` seconds."""

    def __init__(self, say: Callable[[str], None], every: float | None = None) -> None:
        self.say, self.every = say, every if every is not None else progress_every()
        self.name, self.unit, self.done, self.total, self.note = "starting", "", 0, 0, ""
        self.started = self.stage_started = time.monotonic()
        self.docs = self.docs_total = self.pairs = self.failed = 0
        self._first: tuple[float, int] | None = None  # (when, done) at the unit's first count
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- the stages report here ---------------------------------------------------------------------------------
    def stage(self, name: str, detail: str = "", *, unit: str = "", total: int = 0) -> None:
        with self._lock:
            self.name, self.unit, self.done, self.total, self.note = name, unit, 0, total, ""
            self.stage_started, self._first = time.monotonic(), None
            if name != "ingest":  # the documents and pairs belong to the ingest line
                self.docs = self.docs_total = self.pairs = 0
        self.say(f"[{name}] {detail}".rstrip())

    def count(self, done: int, total: int | None = None, note: str = "") -> None:
        with self._lock:
            if self._first is None or done < self.done:
                self._first = (time.monotonic(), done)
            self.done = done
            if total is not None:
                self.total = total
            if note:
                self.note = note

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total += n

    def advance(self, n: int = 1, *, failed: bool = False) -> None:
        with self._lock:
            self.done += n
            self.failed += int(failed)

    # --- what is printed ------------------------------------------------------------------------------------------
    def line(self) -> str:
        with self._lock:
            now = time.monotonic()
            parts = [f"[{self.name}]"]
            if self.unit:
                # the rate since the first count of this unit (a model that loads for a minute first is no slower)
                t0, d0 = self._first if self._first is not None else (self.stage_started, 0)
                rate = (self.done - d0) / max(now - t0, 1e-9)
                what = f"{self.unit} {self.done:,}" + (f"/{self.total:,}" if self.total else "")
                if self.total:
                    what += f" ({min(self.done / self.total, 1.0):.0%})"
                if rate > 0:
                    what += f", {rate:.1f}/s" if rate >= 0.1 else f", {rate * 60:.1f}/min"
                    if self.total and self.done < self.total:
                        what += f", ETA {_duration((self.total - self.done) / rate)}"
                parts.append(what + (f" ({self.failed} failed)" if self.failed else ""))
            extra = []
            if self.docs_total or self.docs:
                extra.append(f"{self.docs}/{self.docs_total} documents" if self.docs_total else f"{self.docs} documents")
            if self.pairs:
                extra.append(f"{self.pairs:,} pairs")
            if self.note:
                extra.append(self.note)
            text = " ".join(parts) + ("; " + ", ".join(extra) if extra else "")
            return f"{text}; {_duration(now - self.started)} elapsed"

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.say(self.line())

    def __enter__(self) -> Ticker:
        self._thread = threading.Thread(target=self._loop, name="qagen-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


class TickerProgress:
    """The pipeline's progress hooks (qagen.core.progress.IngestProgress, the flow's train hooks) on a Ticker."""

    def __init__(self, ticker: Ticker, total_files: int = 0) -> None:
        self.t = ticker
        ticker.docs_total = total_files
        self._train_seen = False

    def doc_read(self, path: str, n_chunks: int) -> None:
        self.t.docs += 1

    def doc_skipped(self, path: str, reason: str) -> None:
        self.t.docs += 1
        self.t.say(f"  skipped {path}: {reason}")

    def requests_added(self, n: int) -> None:
        if not self.t.unit:
            self.t.unit = "requests"
        self.t.add_total(n)

    def request_done(self, *, cached: bool, failed: bool) -> None:
        self.t.advance(failed=failed)

    def pairs_added(self, n: int) -> None:
        self.t.pairs += n

    def stage(self, name: str, detail: str) -> None:
        self.t.stage(name, detail, unit="requests" if name == "ingest" else "")

    def count(self, done: int, total: int) -> None:
        """Answers generated by a model so far (eval): batches of prompts on CPU take minutes."""
        self.t.unit = "answers"
        self.t.count(done, total)

    def update(self, step: int, total: int, loss: float | None, eta: str) -> None:
        self.t.unit = "steps"
        self.t.count(step, total, f"loss {loss:.4f}" if loss is not None else "")
