"""What a long stage reports as it goes. Library code calls these; only the CLI draws them."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def requests_added(self, n: int) -> None: ...

    def request_done(self, *, cached: bool, failed: bool) -> None: ...

    def pairs_added(self, n: int) -> None: ...


class IngestProgress(Progress, Protocol):
    def doc_read(self, path: str, n_chunks: int) -> None: ...

    def doc_skipped(self, path: str, reason: str) -> None: ...


class NullProgress:
    """Reports nothing (library use, tests, Ray workers)."""

    def requests_added(self, n: int) -> None:
        pass

    def request_done(self, *, cached: bool, failed: bool) -> None:
        pass

    def pairs_added(self, n: int) -> None:
        pass

    def doc_read(self, path: str, n_chunks: int) -> None:
        pass

    def doc_skipped(self, path: str, reason: str) -> None:
        pass
