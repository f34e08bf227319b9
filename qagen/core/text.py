"""Text folding shared by the stages that compare names: the grounding of rewrites (``generate/rewrite.py``), the
pair filters (``curate/filters.py``) and the checks of a "The documents don't say" pair (``prompting/declines.py``),
and the fact ledger (``generate/ledger.py``, ``core/exposure.py``); with the filters' word lists."""

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


_FILTER_WORD = re.compile(r"\w+(?:[.'’-]\w+)*")  # a word keeps its inner apostrophe: "ruiz's", "don't"


def words(text: str) -> list[str]:
    """Lower-case words as the pair filters count them ("U.S.", "Ruiz's" and "well-known" are one word each)."""
    return _FILTER_WORD.findall(text.lower())


def folded_words(text: str) -> str:
    """Case-folded words without accents, space-separated ("Łazienki" and "Lazienki" are one name); unlike
    :func:`norm_words`, a word keeps its apostrophe."""
    return " ".join(words(fold(text)))


# A question made of these words alone names nothing ("What it is about?", "What is this?")
FUNCTION_WORDS = frozenset(
    ["a", "an", "the", "it", "its", "this", "that", "these", "those", "they", "them", "he", "she", "him", "her", "his", "hers", "we", "you", "i", "me", "my", "our", "your", "their", "there", "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "is", "are", "was", "were", "be", "been", "do", "does", "did", "will", "would", "can", "could", "should", "shall", "may", "might", "must", "has", "have", "had", "of", "in", "on", "at", "to", "for", "from", "by", "with", "about", "as", "or", "and", "not", "no", "so", "do", "done", "did", "doing", "someone", "something", "somebody", "thing", "things", "one", "ones"])
# Words that name no particular thing: a prose answer made of the title's words and these restates the title.
GENERIC_NOUNS = frozenset({"passage", "document", "text", "article", "page", "summary", "title", "name", "topic",
                           "subject", "section", "part", "main", "idea", "ideas", "point", "points", "content",
                           "information", "details"})
MONTHS = "january february march april may june july august september october november december"
