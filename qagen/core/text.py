"""Text folding shared by the stages that compare names: the grounding of rewrites (``generate/rewrite.py``) and
the pair filters (``curate/filters.py``)."""

from __future__ import annotations

import unicodedata

# Letters NFKD does not split into a base letter and an accent.
_LETTERS = str.maketrans({"ł": "l", "ø": "o", "đ": "d", "æ": "ae", "œ": "oe", "ı": "i"})


def fold(text: str) -> str:
    """Case-folded, without accents: "Łódź" and "Lodz", "Straße" and "STRASSE" fold to one string."""
    plain = unicodedata.normalize("NFKD", text.casefold().translate(_LETTERS))
    return "".join(ch for ch in plain if not unicodedata.combining(ch))
