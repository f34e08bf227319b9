"""Text folding shared by the stages that compare names: the grounding of rewrites (``generate/rewrite.py``), the
pair filters (``curate/filters.py``) and the fact ledger (``generate/ledger.py``, ``core/exposure.py``)."""

from __future__ import annotations

import re
import unicodedata

# Letters NFKD does not split into a base letter and an accent.
_LETTERS = str.maketrans({"ł": "l", "ø": "o", "đ": "d", "æ": "ae", "œ": "oe", "ı": "i"})


def fold(text: str) -> str:
    """Case-folded, without accents: "Łódź" and "Lodz", "Straße" and "STRASSE" fold to one string."""
    plain = unicodedata.normalize("NFKD", text.casefold().translate(_LETTERS))
    return "".join(ch for ch in plain if not unicodedata.combining(ch))


_WORD = re.compile(r"\w+(?:[.-]\w+)*")  # "Missouri's" is "missouri s": a possessive still holds the name


def norm_words(text: str) -> str:
    """Case-, accent- and punctuation-folded words, space-separated: the form the fact ledger compares spans,
    answers and questions in ("The `gc.auto` default" -> "the gc.auto default")."""
    return " ".join(_WORD.findall(fold(text)))
