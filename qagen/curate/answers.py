"""No answer that cannot be one: a one- or two-character answer is junk unless it is a number, an initial, or the
kind of thing its question asks for (a symbol, a letter, an abbreviation).

A stub's or a small model's junk reply ("l", "a.") passes ``min_answer_words: 1`` and is "grounded" in any passage,
since a letter occurs in every one (issue 29). This check runs with the other deterministic filters
(``qagen/curate/filters.py``), whatever the perspective's minimum, and gives the same verdict: ``too_short``.
"""

from __future__ import annotations

import re
from typing import Protocol

MAX_TINY_CHARS = 2  # an answer this short (markup and surrounding quotes aside) must justify itself
_WRAPPING = " \t\n\"'`*_“”‘’"
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?%?|[-+]?[.,]\d")
_INITIAL = re.compile(r"[A-Z]\.")
# A question that asks for a symbol, a letter or a short code: "Which operator ...?" -> "+", "What letter ...?" -> "B"
_ASKS_FOR_SHORT = re.compile(
    r"\b(operators?|symbols?|signs?|characters?|chars?|punctuation|delimiters?|separators?|prefix(es)?|"
    r"suffix(es)?|glyphs?|marks?|letters?|initials?|abbreviations?|acronyms?|units?|codes?|flags?|"
    r"options?|switch(es)?|keys?|grades?)\b", re.IGNORECASE)


def asks_for_symbol(question: str) -> bool:
    """The question asks for a symbol, a letter or a short code, which may be an answer of no words."""
    return _ASKS_FOR_SHORT.search(question) is not None


class _Pair(Protocol):
    question: str
    answer: str


def tiny_answer(question: str, answer: str) -> str | None:
    """Why a one- or two-character answer cannot be one, or ``None`` when it can (or is longer)."""
    core = answer.strip(_WRAPPING)
    if len(core) > MAX_TINY_CHARS:
        return None
    if not core:
        return "an empty answer"
    if _NUMBER.fullmatch(core) or _INITIAL.fullmatch(core):
        return None
    if asks_for_symbol(question):
        return None
    return f"a {len(core)}-character answer ({core!r}) that is not a number, an initial or what its question asks for"


def check_tiny(v: _Pair, s: object = None) -> tuple[str, str] | None:
    """The filters' form of :func:`tiny_answer`: ``("too_short", reason)`` or ``None``."""
    reason = tiny_answer(v.question, v.answer)
    return ("too_short", reason) if reason is not None else None
