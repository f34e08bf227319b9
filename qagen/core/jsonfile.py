"""Reading untrusted question files: every way they can be too big or too odd becomes one ``ValueError`` line.

``json.loads`` alone turns a file nested 100,000 deep into a ``RecursionError`` and a 5,000-digit number into
an error that names neither file nor line; a 150 MB line is parsed at about 3x its size in memory. The
caller (``qagen/corpus/questions.py``, the one question-file loader) adds the file and line to the message.
"""

from __future__ import annotations

import json
from pathlib import Path


def loads(raw: str) -> object:
    """``json.loads`` whose every failure is a ValueError with a short reason (no position: the caller knows it)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}" if e.lineno > 1 or "\n" in raw else f"column {e.colno}"
        raise ValueError(f"not JSON (invalid JSON at {where}: {e.msg})") from None
    except RecursionError:
        raise ValueError("not usable JSON: nested too deeply") from None
    except ValueError as e:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(f"not usable JSON: {str(e).split(';')[0]}") from None


def read_text(path: Path, max_bytes: int) -> str:
    """The file's UTF-8 text (a BOM is dropped); ValueError when it is over ``max_bytes`` or not UTF-8."""
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"the file is {size / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.0f} MB "
                         "(QAGEN_MAX_QUESTION_FILE_BYTES sets it)")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start})") from None


def check_line(raw: str, number: int, max_bytes: int) -> None:
    if len(raw) > max_bytes:
        raise ValueError(f"line {number} is {len(raw) / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB "
                         "(QAGEN_MAX_QUESTION_BYTES)")


def check_count(count: int, max_count: int) -> None:
    if count > max_count:
        raise ValueError(f"more than {max_count} questions (QAGEN_MAX_QUESTIONS sets the limit)")
