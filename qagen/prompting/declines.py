"""The code-built answer of the ``unanswerable`` output: "The documents don't say ...".

The model writes, per item, a question and a short phrase of what it asks (``what``: "how many people attended
Super Bowl 50"); code writes the answer, so every such pair declines in the same well-formed sentence. A ``what``
that does not read as that phrase (empty, "unknown", a whole sentence, a question, cut off) gives the plain
decline instead: "The documents don't say."

Shared by the generate stage (which builds the answer) and the filters (which read ``what`` back, and check the
pair with :func:`decline_off_topic`, :func:`decline_leaks` and :func:`seems_answered`: cheap word-overlap tests,
no LLM), so it lives below both.
"""

from __future__ import annotations

import re
from functools import lru_cache

from qagen.core.text import FUNCTION_WORDS, GENERIC_NOUNS, MONTHS, folded_words

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


# --- "The documents don't say" (prompts/unanswerable.md) ---------------------------------------------------------
# Words that say what kind of answer a question wants, not what it asks about ("how many", "in what year").
_ASK_WORDS = frozenset({"many", "much", "number", "numbers", "year", "years", "date", "dates", "day", "days", "month",
                        "time", "times", "long", "old", "often", "far", "called", "named", "kind", "type", "sort",
                        "exactly", "first", "last"})
_SUFFIXES = ("ations", "ation", "ances", "ance", "ences", "ence", "ments", "ment", "ings", "ing", "ies", "ied", "ers",
             "er", "ed", "es", "s", "ly")
_TOKEN = re.compile(r"[\w'’.-]+")


def _terms(text: str) -> list[str]:
    """Lower-case words without accents or a possessive 's ("Ruiz's" -> "ruiz")."""
    return [re.sub(r"['’]s$", "", w) for w in folded_words(text).split()]


def _stem(word: str) -> str:
    """A crude stem: one common suffix off, then 6 letters ("attended", "attendance" -> "attend")."""
    if word.isdigit():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:6]


def _content(terms: list[str]) -> list[str]:
    return [w for w in terms if (len(w) > 2 or w.isdigit()) and w not in FUNCTION_WORDS
            and w not in GENERIC_NOUNS and w not in _ASK_WORDS]


def _names(text: str, numbers: bool = True) -> set[str]:
    """The words of names (and numbers) in a sentence: its capitalised (or numeric) tokens after the first word."""
    tokens = _TOKEN.findall(text)[1:]
    return {t for tok in tokens if tok[:1].isupper() or (numbers and tok[:1].isdigit())
            for t in _content(_terms(tok))}


@lru_cache(maxsize=8)  # a document's few pairs share one split (the hash of a str is cached)
def _sentences(text: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """The passage's sentences, each with its words' stems."""
    out = []
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
        if sentence.strip():
            out.append((sentence.strip(), frozenset(_stem(w) for w in _terms(sentence))))
    return tuple(out)


# Questions whose answer is a number or a date, and those whose answer is a name.
_WANTS_NUMBER = re.compile(
    r"^\W*(how (many|much|long|old|far|often|big|tall|large|high)|when|(in|on|at|by|since) (what|which) "
    r"(year|date|day|month|time)|what (year|date|day|month|time|number|percentage|share|amount|age|price|cost|size))\b",
    re.IGNORECASE)
_WANTS_NAME = re.compile(r"^\W*(who|whom|whose|where|(in|at|from|by) (what|which)|which)\b", re.IGNORECASE)
_MONTH_WORDS = frozenset(MONTHS.split())


def _answer_kind(sentence: str, question: str, known: set[str]) -> str:
    """What kind of answer a sentence holds that the question does not: "number", "name" or ""."""
    kinds = ""
    numbers = set(re.findall(r"\d+", sentence)) - set(re.findall(r"\d+", question))
    if numbers or _MONTH_WORDS & set(_terms(sentence)):
        kinds += "number "
    if _names(sentence, numbers=False) - known:
        kinds += "name"
    return kinds


def seems_answered(question: str, what: str, text: str, asked: tuple[str, ...] = (), title: str = "") -> str | None:
    """Why the passage may answer this "unanswerable" question, or ``None`` when nothing suggests it does.

    Cheap and judge-free, so it errs on the side of dropping (a pair lost costs little; a false "the documents don't
    say" teaches the model to deny what it was taught). Words are compared by a crude stem ("attendance" matches
    "attended").

    - The question must name something the passage names (a capitalised name or a number, else a content word):
      otherwise it is not a near miss.
    - Its *asked* words (content words of the question and of ``what`` that are neither names nor the title's words:
      "people attended", "built"; a name the passage does not give, "MVP", is asked too) must not meet in one
      sentence of the passage: two thirds of them, or only some of them where the sentence also holds the kind of
      answer the question wants (a number or a date for "how many" / "when", a name for "who" / "where"). A
      question with no asked word ("Who is Ana Ruiz?") is taken as answered.
    - No question another perspective asked of this document (and answered) holds all its asked words and one of
      its names ("Which team won Super Bowl 50?" answers "Who won Super Bowl 50?").

    Limits: synonyms and paraphrase get through ("the crowd numbered 71,088" answers "How many people attended?"
    with no shared word; "won" vs "defeated"), as do answers put together from two sentences; a shared common word
    drops a good question. Only the text given is read (curation passes the document's chunks that have pairs),
    never the rest of the corpus.
    """
    sentences = _sentences(text)
    stems = {w for _, sentence in sentences for w in sentence}
    names = _names(question) | _names(f"x {what}")
    named = {_stem(n) for n in names} & stems  # the names the passage gives ("MVP", when it does not, is asked)
    terms = _content(_terms(question))
    if not (named if names else any(_stem(w) in stems for w in terms)):
        return "the question names nothing the passage names: not a near miss"
    asked_words = {_stem(w) for w in [*terms, *_content(_terms(what))]} - named - {
        _stem(w) for w in _content(_terms(title))}
    if not asked_words:
        return "it asks only about names the passage gives, so the passage may well answer it"
    need = -(-2 * len(asked_words) // 3)  # two thirds, rounded up: 1 of 1, 2 of 2 or 3, 3 of 4
    wants = "number" if _WANTS_NUMBER.match(question) else "name" if _WANTS_NAME.match(question) else ""
    for sentence, sentence_stems in sentences:
        hits = asked_words & sentence_stems
        if len(hits) >= need or (hits and wants and wants in _answer_kind(sentence, question, names)):
            return f"the passage may answer it ({', '.join(sorted(hits))}): {sentence[:120]!r}"
    for other in asked:
        theirs = {_stem(w) for w in _content(_terms(other))}
        if asked_words <= theirs and (not named or named & theirs):
            return f"another perspective asked (and answered) it: {other!r}"
    return None


def decline_off_topic(question: str, what: str) -> str | None:
    """The decline is about something else: fewer than two thirds of the content words of its "what" ("when the
    bridge was painted") are in the question ("When did the bridge pass through the Bay Area?"). A well-formed
    decline restates its question."""
    words = {_stem(w): w for w in _content(_terms(what))}
    if not words:
        return None
    missing = sorted(w for stem, w in words.items() if stem not in {_stem(t) for t in _content(_terms(question))})
    if 3 * (len(words) - len(missing)) < 2 * len(words):
        return f"the decline is not about its question: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in it"
    return None


def decline_leaks(question: str, what: str, text: str) -> str | None:
    """The decline names something the passage gives and the question does not ("The documents don't say San
    Francisco Bay Area.", to "Where was it held?"): the answer leaked into it, so the passage answers it."""
    stems = {w for _, sentence in _sentences(text) for w in sentence}
    asked = {_stem(w) for w in _terms(question)}
    leaked = sorted(n for n in _names(f"x {what}") if _stem(n) in stems and _stem(n) not in asked)
    if leaked:
        return f"the decline names what the passage gives ({', '.join(leaked)}): the answer leaked into it"
    return None
