"""Walk a documents folder in a stable order, within its boundary.

:func:`iter_entries` lists every non-hidden file under a folder as ``(rel,
path)`` or a :class:`SkippedFile` with a reason, sorted by relative POSIX path,
without reading anything. The folder is the boundary: a symlinked file whose
target lies outside it is skipped unless the caller opts in, symlinked folders
are never followed, and excluded folders (qagen's own output, when it lies
inside the documents) are not entered. :mod:`qagen.corpus.reader` reads what
it yields.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from qagen.core.types import SkippedFile


def iter_entries(
    root: Path, *, follow_symlinks: bool = False, exclude: tuple[Path, ...] = ()
) -> Iterator[tuple[str, Path] | SkippedFile]:
    """The walk of :func:`iter_documents` without reading: ``(rel, path)`` per file, or a SkippedFile.

    The distributed executor lists on the driver and reads on the workers.
    """
    root = Path(root)
    if root.is_file():
        yield root.name, root
        return
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    walk = _Walk(os.path.realpath(root), follow_symlinks, frozenset(os.path.realpath(p) for p in exclude))
    stack = [iter(_list_dir(root, "", walk))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        kind, rel, path, reason = entry
        if kind == "dir":
            stack.append(iter(_list_dir(path, rel + "/", walk)))
        elif kind == "file":
            yield rel, path
        else:
            yield SkippedFile(rel, reason)


class _Walk(NamedTuple):
    root: str  # the documents folder, resolved: the boundary a symlinked file may not leave
    follow_symlinks: bool
    exclude: frozenset[str]  # resolved paths never read: qagen's own output inside the documents, its qagen.toml


def inside(path: str, folder: str) -> bool:
    """True when the resolved ``path`` is ``folder`` or lies below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _list_dir(folder: Path, prefix: str, walk: _Walk) -> list[tuple[str, str, Path, str]]:
    """Sorted (kind, rel, path, reason) entries of one folder.

    Folders sort as ``name/`` so that the walk order equals a global sort of
    relative paths (every path below ``d`` starts with ``d/``).
    """
    rows = []
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError as e:
        rel = prefix.rstrip("/") or "."
        return [("skip", rel, folder, f"cannot list folder: {e.strerror or e}")]
    for e in entries:
        if e.name.startswith("."):
            continue
        rel, path, link = prefix + e.name, Path(e.path), e.is_symlink()
        try:
            e.name.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes (surrogates) would crash the store and the JSON output
            rows.append(("skip", os.fsencode(rel).decode("utf-8", "backslashreplace"), path,
                         "name is not valid UTF-8"))
            continue
        try:
            mode = os.stat(path).st_mode  # follows symlinks
        except OSError as err:
            reason = ("symlink loop" if err.errno == errno.ELOOP
                      else "broken symlink" if link and err.errno == errno.ENOENT
                      else f"unreadable: {err.strerror or err}")
            rows.append(("skip", rel, path, reason))
            continue
        if stat.S_ISDIR(mode):
            if not link and os.path.realpath(path) in walk.exclude:
                continue
            rows.append(("skip", rel, path, "symlink to a folder (not followed)") if link
                        else ("dir", rel, path, ""))
        elif not link and os.path.realpath(path) in walk.exclude:
            continue  # qagen's own settings file (DOCS/qagen.toml)
        elif link and not walk.follow_symlinks and not inside(os.path.realpath(path), walk.root):
            rows.append(("skip", rel, path, "symlink leaves the folder"))  # `ln -s ~/.ssh/id_rsa docs/x.txt`
        else:
            rows.append(("file", rel, path, "") if stat.S_ISREG(mode)
                        else ("skip", rel, path, "not a regular file"))
    rows.sort(key=lambda r: r[1] + "/" if r[0] == "dir" else r[1])
    return rows
