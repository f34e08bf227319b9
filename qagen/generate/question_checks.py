"""The checks code makes of an answer-first question, and the cloze sentence (``qagen/generate/answer_first.py``
asks the questions and builds the rows).

* :func:`check_question`: it reads as a question, does not hold its own answer (:func:`leaks`), and names its
  subject well enough to stand alone closed-book;
* :func:`near_duplicate`: it asks what a question already kept asks;
* :func:`align`: the fact of its sentence it asks for (a small teacher shifts answers);
* :func:`cloze_sentence` and :func:`wh_word`: the fact's sentence with its span blanked, and what an echo question
  asks in the span's place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from rapidfuzz import fuzz

from qagen.core.text import fold
from qagen.core.types import Fact
from qagen.corpus.spans import STOPWORDS, plain
from qagen.generate.ledger import norm

DUPLICATE_SCORE = 88.0  # rapidfuzz token_sort_ratio: two questions this close ask the same thing
CLOZE_WORDS = 30
# A blank needs words around it: "` ____ ` (`integer`)", a parameter's heading, asks nothing (hand audit, RESULTS.md "Knowledge: which suite")
CLOZE_CONTEXT = 2
# The word an echo question puts where a fact's span was ("... amounted to near how much?"): cloze templates may use it
WH_WORDS = {"number": "how much", "date": "what date", "name": "who", "code": "what", "quoted": "what",
            "phrase": "what"}
# "in the passage", "the text says": a question that points at a passage nobody has closed-book
_POINTS_AT_PASSAGE = re.compile(
    r"\b(the|this|that|above|given|following) (passage|text|excerpt|paragraph|sentence|section|document|article)\b"
    r"|\baccording to (it|the author|the speaker)\b", re.IGNORECASE)


# --- question checks ----------------------------------------------------------
def _content(text: str) -> list[str]:
    return [w for w in norm(text).split() if w not in STOPWORDS and len(w) > 1]


def leaks(question: str, span: str) -> bool:
    """The question holds its own answer: the span as words, or every content word of a longer span."""
    q, a = f" {norm(question)} ", norm(span)
    if not a:
        return False
    if f" {a} " in q:
        return True
    content = _content(span)
    return len(content) >= 2 and all(f" {w} " in q for w in content)


def _anchors(question: str, fact: Fact, title: str) -> list[str]:
    """What names the question's subject: a capitalised word after the first, a number, a code term, a word of the
    document's title, or a long word (7+ letters) of the fact's sentence. None of them may be the answer's own."""
    answer = set(norm(fact.span).split())
    title_words = set(_content(title))
    sentence_words = {w for w in _content(fact.sentence) if len(w) >= 7}
    found = []
    for i, raw in enumerate(question.split()):
        token = raw.strip("?.,;:!\"'“”()[]`*")
        ws = [w for w in norm(token).split() if w not in answer and w not in STOPWORDS]
        if not ws:
            continue
        specific = ((i > 0 and token[:1].isupper()) or any(c.isdigit() for c in token)
                    or any(c in token for c in "_./()`") or any(w in title_words or w in sentence_words for w in ws))
        if specific:
            found.extend(ws)
    return found


def check_question(question: str, fact: Fact, title: str) -> str:
    """"" when the question passes; else what it failed: not_a_question | leak | not_standalone."""
    q = question.strip()
    n_words = len(q.split())
    if not q.endswith("?") or n_words < 4 or n_words > 40:
        return "not_a_question"
    if leaks(q, fact.span):
        return "leak"
    if _POINTS_AT_PASSAGE.search(q) or not _anchors(q, fact, title):
        return "not_standalone"
    return ""


def near_duplicate(question: str, kept: Iterable[str]) -> bool:
    q = norm(question)
    return any(fuzz.token_sort_ratio(q, norm(k)) >= DUPLICATE_SCORE for k in kept)


_DURATION = re.compile(r"\b(second|minute|hour|day|week|month|year)s?\b", re.IGNORECASE)
_AMOUNT = re.compile(r"[$€£%]|\b(dollars|cents|euros|pounds|per ?cent)\b", re.IGNORECASE)


def wh_word(fact: Fact) -> str:
    """What an echo question asks in the span's place: "how long" for a duration, "how much" for money or a
    share, "how many" for a count, "what date", "who", else "what"."""
    if fact.kind == "number":
        if _DURATION.search(fact.span):
            return "how long"
        return "how much" if _AMOUNT.search(fact.span) or not re.search(r"\d", fact.span) else "how many"
    if fact.kind == "name" and re.search(r"\b(the|an?|(state|city|country|county|river|port|town) of)\s*$",
                                         fact.sentence[: max(fact.sentence.find(fact.span), 0)], re.IGNORECASE):
        return "what"  # "the Union", "a gracious Providence", "the state of North Carolina": no person
    return WH_WORDS.get(fact.kind, "what")


def cloze_sentence(fact: Fact, max_words: int = CLOZE_WORDS, follow: str = "") -> str:
    """The fact's sentence with its span blanked, cut to about ``max_words`` words around the blank; "" when the
    span is not in it or the rest says too little to ask anything (fewer than CLOZE_CONTEXT content words).
    ``follow``, the text after the sentence, completes a heading: "` ____ ` (`integer`) Specifies the maximum
    number of autovacuum processes ..." asks for the term that a reference page's entry describes."""
    sentence, follow = plain(fact.sentence), plain(follow)  # links as their text, no emphasis marks
    at = sentence.find(fact.span)
    if at < 0:
        at = fold(sentence).find(fold(fact.span))
    if at < 0:
        return ""
    head_text, tail_text = sentence[:at], sentence[at + len(fact.span):]
    if not re.sub(r"[\s:*_]", "", head_text + tail_text):  # a salutation ("Fellow-Citizens of the Senate ...:")
        return ""
    if head_text.endswith("`") and tail_text.startswith("`"):  # "methods `____`": the blank is no code itself
        head_text, tail_text = head_text[:-1], tail_text[1:]
    if len(_content(head_text + " " + tail_text)) < CLOZE_CONTEXT:
        tail_text = f"{tail_text} {' '.join(follow.split()[:max_words])}"
        if len(_content(head_text + " " + tail_text)) < CLOZE_CONTEXT + 2:
            return ""
    before, after = head_text.split(), tail_text.split()
    room = max(max_words - 1, 2)
    keep_before = min(len(before), max(room // 2, room - len(after)))
    keep_after = min(len(after), room - keep_before)
    head = ("... " if keep_before < len(before) else "") + " ".join(before[len(before) - keep_before:])
    tail = " ".join(after[:keep_after]) + (" ..." if keep_after < len(after) else "")
    glue = "" if tail[:1] in ",.;:!?)]\u201d\u2019" else " "  # "at ____, and", not "at ____ , and"
    lead = "" if head[-1:] in "(\u201c\u2018" else " "  # "(____)", "\u201c____\u201d"
    return f"{head}{lead}____{glue}{tail}".strip()


# --- alignment ------------------------------------------------------------------
ALIGN_RADIUS = 10  # content words on each side of a span that say what it is
ALIGN_MARGIN = 0.25  # how much more another fact of the sentence must score to take a question


def _stem(word: str) -> str:
    """A crude stem: no plural or tense ending, then the first six letters ("estimated", "estimate" -> "estima";
    "takes", "take" -> "take")."""
    for end in ("ing", "ed", "s"):
        if len(word) > len(end) + 2 and word.endswith(end):
            word = word[: -len(end)]
            break
    return word[:6]


def _near(fact: Fact, sentence_start: int, radius: int = ALIGN_RADIUS) -> dict[str, float]:
    """The content words around a fact's span in its sentence, each weighted by its closeness (1 next to it)."""
    at = fact.start - sentence_start
    if not 0 <= at <= len(fact.sentence):
        at = max(fact.sentence.find(fact.span), 0)
    before = _content(fact.sentence[:at])[::-1][:radius]
    after = _content(fact.sentence[at + len(fact.span):])[:radius]
    weights: dict[str, float] = {}
    for side in (before, after):
        for d, w in enumerate(side):
            weights[_stem(w)] = max(weights.get(_stem(w), 0.0), 1 / (1 + d))
    return weights


_EXPECTS = (  # what kind of answer a question's opening asks for
    (re.compile(r"^\W*(how (much|many|long|often|far|large|big|old)|what (amount|number|percentage|share|sum|"
                r"value|size|rate|price|cost|total))\b", re.IGNORECASE), {"number"}),
    (re.compile(r"^\W*(when|(in|on|by) what (year|date|day|month)|what (year|date|day|month))\b", re.IGNORECASE),
     {"date", "number"}),
    (re.compile(r"^\W*(who|whom|whose)\b", re.IGNORECASE), {"name", "phrase", "quoted"}),
)


def _fit(question: str, kind: str) -> float:
    """How well a fact's kind fits what the question asks for: 2 fits, 0.3 does not, 1 when the question says
    nothing about it ("What ...?")."""
    for pattern, kinds in _EXPECTS:
        if pattern.search(question):
            return 2.0 if kind in kinds else 0.3
    return 1.0


def align(question: str, fact: Fact, siblings: Sequence[Fact], sentence_start: int) -> Fact | None:
    """The fact of the sentence a question asks for. A small teacher often shifts answers ("what did the Treasury
    receive?" written for the next amount of the sentence), so each of the sentence's facts that the question does
    not contain is scored by the question's words near its span (closer words weigh more; the words of any span the
    question names are not evidence), times how well its kind fits the question ("How much ...?" asks for a number,
    "Who ...?" for a name); another fact takes the question only when it scores clearly higher (by
    ``ALIGN_MARGIN``). ``None``: the question shares no word with any answer's surroundings."""
    named = {w for f in (fact, *siblings) if leaks(question, f.span) for w in _content(f.span)}
    words = {_stem(w) for w in _content(question) if w not in named}
    scored = []
    for f in (fact, *[s for s in siblings if s.fact_id != fact.fact_id]):
        if leaks(question, f.span):
            continue
        near = _near(f, sentence_start)
        scored.append((_fit(question, f.kind) * sum(near.get(w, 0.0) for w in words), f))
    if not scored or max(score for score, _ in scored) <= 0:
        return None
    own = next((score for score, f in scored if f.fact_id == fact.fact_id), None)
    best_score, best = max(scored, key=lambda x: x[0])
    if own is not None and own > 0 and best_score < own + ALIGN_MARGIN:
        return fact
    return best
