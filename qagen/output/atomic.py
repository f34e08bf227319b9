"""Output files that are written whole, and a run's outputs that are replaced as one unit.

:func:`atomic_writer` writes a file to a temp file beside it, fsyncs it and
renames it into place, so a reader never sees half a file.

Inside ``with output_unit() as unit:`` the renames wait: every file a run
writes is staged, and ``unit.commit()`` puts them all in place at the end
(removals too). Leaving the block without a commit (a failed run, an error
half-way through the files) deletes the staged files, so the previous run's
outputs stay exactly as they were: never a new train.jsonl beside an old
eval.jsonl, never an empty dataset over a good one. Code that reads an output
the same run has just written asks :func:`current` where it is.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO


class OutputUnit:
    """The files one run has written but not yet put in place (``path -> temp file``) and those it removes."""

    def __init__(self) -> None:
        self._staged: dict[Path, str] = {}
        self._removed: set[Path] = set()

    def stage(self, path: Path, tmp: str) -> None:
        old = self._staged.pop(path, None)
        if old is not None:
            _unlink(old)
        self._removed.discard(path)
        self._staged[path] = tmp

    def remove(self, path: Path) -> None:
        old = self._staged.pop(path, None)
        if old is not None:
            _unlink(old)
        self._removed.add(path)

    def current(self, path: Path) -> Path:
        return Path(self._staged[path]) if path in self._staged else path

    def pending(self) -> list[str]:
        """The file names this unit replaces or removes when committed."""
        return sorted({p.name for p in self._staged} | {p.name for p in self._removed if p.exists()})

    def commit(self) -> None:
        folders = {p.parent for p in self._staged}
        for path, tmp in self._staged.items():  # every file is complete and fsynced: only renames are left
            os.replace(tmp, path)
        for path in self._removed:
            path.unlink(missing_ok=True)
        self._staged.clear()
        self._removed.clear()
        for folder in folders:  # the renames themselves survive a power cut
            _fsync_dir(folder)

    def discard(self) -> None:
        for tmp in self._staged.values():
            _unlink(tmp)
        self._staged.clear()
        self._removed.clear()


_unit: ContextVar[OutputUnit | None] = ContextVar("qagen_output_unit", default=None)


@contextmanager
def output_unit() -> Iterator[OutputUnit]:
    """Stage every output written inside the block; what is not committed when it ends is discarded."""
    unit = OutputUnit()
    token = _unit.set(unit)
    try:
        yield unit
    finally:
        _unit.reset(token)
        unit.discard()


def current(path: Path) -> Path:
    """Where ``path``'s newest content is: the staged temp file while a unit holds one, else ``path``."""
    unit = _unit.get()
    return unit.current(path) if unit is not None else path


def remove_output(path: Path) -> None:
    """Remove an output that this run does not write (a stale file): at commit time inside a unit."""
    unit = _unit.get()
    if unit is not None:
        unit.remove(path)
    else:
        path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: Path) -> Iterator[IO[str]]:
    """Write to a temp file in the same folder, fsync, then rename over ``path`` (at commit, inside a unit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get normal file modes
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        unit = _unit.get()
        if unit is not None:
            unit.stage(path, tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
