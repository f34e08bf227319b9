"""The code-built answer of the ``unanswerable`` output: "The documents don't say ...".

The model writes, per item, a question and a short phrase of what it asks (``what``: "how many people attended
Super Bowl 50"); code writes the answer, so every such pair declines in the same well-formed sentence. A ``what``
that does not read as that phrase (empty, "unknown", a whole sentence, a question, cut off) gives the plain
decline instead: "The documents don't say."

Shared by the generate stage (which builds the answer) and the filters (which read ``what`` back), so it lives
below both.
"""

from __future__ import annotations

import re

DECLINE = "The documents don't say"
PLAIN_DECLINE = f"{DECLINE}."
MAX_WHAT_WORDS = 25

# The model sometimes repeats the frame it completes ("The documents don't say how ..."): it is dropped.
_FRAME = re.compile(
    r"^(the |these |this )?(documents?|passages?|texts?|articles?|sources?) (do(es)?n['’]?t|do(es)? not|never) "
    r"(say|state|mention|specify|give|tell)\s*", re.IGNORECASE)
# First words of a phrase that read lower-case inside the sentence ("How many ..." -> "how many ...");
# anything else keeps its case (a name: "Super Bowl 50's attendance").
_LOWER_FIRST = frozenset({"how", "what", "who", "whom", "whose", "when", "where", "which", "why", "whether", "if",
                          "the", "a", "an", "its", "his", "her", "their", "any"})
_EMPTY = frozenset({"", "unknown", "n/a", "na", "none", "nothing", "not stated", "not given", "null", "-"})


def decline_answer(what: object) -> str:
    """'The documents don't say {what}.' from the model's phrase; the plain decline when it is missing or odd."""
    phrase = " ".join(str(what or "").split()).strip().strip("\"'“”‘’").strip()
    phrase = _FRAME.sub("", phrase).strip()
    if phrase.endswith(("...", "…")):
        return PLAIN_DECLINE  # cut off: the phrase would end mid-thought
    phrase = phrase.rstrip(" .;:,!").strip()
    if (phrase.lower() in _EMPTY or "?" in phrase or len(phrase.split()) > MAX_WHAT_WORDS
            or not any(ch.isalnum() for ch in phrase)):
        return PLAIN_DECLINE
    first, _, rest = phrase.partition(" ")
    if first.lower() in _LOWER_FIRST:
        phrase = first.lower() + (f" {rest}" if rest else "")
    return f"{DECLINE} {phrase}."


def what_of(answer: str) -> str | None:
    """The phrase a code-built decline completes ("" for the plain decline); None for any other answer."""
    text = answer.strip()
    if text == PLAIN_DECLINE:
        return ""
    if text.startswith(f"{DECLINE} ") and text.endswith(".") and len(text) > len(PLAIN_DECLINE) + 1:
        return text[len(DECLINE) + 1:-1]
    return None
