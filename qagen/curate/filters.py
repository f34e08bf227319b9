"""Deterministic filters: cheap checks, no LLM, that catch what a small model's judge lets through.

Each check looks at one pair and returns a verdict with its reason, or ``None``:

- ``repetitive``: degenerate repetition (``... a shallow copy of the original, which is a shallow copy of ...``),
  after Gopher's rules (Rae et al. 2021, appendix A: the share of characters inside duplicated word n-grams),
  with thresholds for short answers, not web pages (datatrove's version pulls a dozen dependencies).
- ``too_short``: under the perspective's ``min_answer_words`` (a summary of ``m``), or a 1-2 character non-answer.
- ``echo``: an answer that only restates the question or the title, or names nothing (``This document``,
  ``The subject of the passage``).
- ``truncated``: an answer cut off at a length limit (it fills the schema's limit, or stops mid-sentence).
- ``template``: a question with unfilled or generic slots (``{{ x }}``, ``<a city>``, ``What someone will do or
  did?``), a question copied from the prompt's own instructions, or one that is not a question at all
  (``What is``, ``copy.copy``).
- ``not_a_sentence``: a relation pair whose parts don't make a sentence, or that copies the prompt's example.
- ``ungrounded`` (metadata only): a date or author the document does not state as such. A date merely
  mentioned in the text is not the publication date.
- ``ungrounded`` / ``template`` ("The documents don't say", output ``unanswerable``): a question that names nothing
  the document names (not a near miss), one the document may answer (``prompting/declines.py``: cheap word-overlap
  tests, no LLM), or an answer that is no longer the code-built decline.

The generate stage screens pairs with :func:`screen` before the judge (a filtered pair costs no judge call);
curation settles the same verdicts, so a pair refined after drafting is checked as it ends up.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from rapidfuzz import fuzz

from qagen.core.text import FUNCTION_WORDS, GENERIC_NOUNS, MONTHS, folded_words, words
from qagen.curate.answers import asks_for_symbol, check_tiny
from qagen.prompting.declines import (
    decline_leaks,
    decline_off_topic,
    seems_answered,
    what_of,
)
from qagen.prompting.prompts import Prompt


@dataclass(frozen=True)
class FilterSettings:
    enabled: bool = True
    # The share of an answer's characters inside repeated word n-grams (n = 3..5) above which it is degenerate.
    # Gopher allows 15-10 % for 5- to 10-grams on web pages; short answers repeat less by nature.
    max_repetition: float = 0.3
    # An answer this long (in the prompt's max_answer_chars) was cut by the length limit.
    truncation_share: float = 0.97


@dataclass(frozen=True)
class PairView:
    """What a check needs to see of a pair: the text, its perspective's prompt and its document."""

    question: str
    answer: str
    prompt: Prompt | None
    title: str
    head: str = ""  # the pair's chunk (a document's opening for document-scope pairs): datelines, relations
    meta: tuple[tuple[str, str], ...] = ()  # the file's own metadata (front matter, PDF/DOCX properties)
    asked: tuple[str, ...] = ()  # the document's questions of other perspectives (answered ones): unanswerable only


_GENERIC_ANSWERS = {
    "this document", "the document", "this text", "the text", "this passage", "the passage", "this article",
    "the article", "it", "this", "that", "yes", "no", "none", "unknown", "the author", "this page", "the page",
}
_SLOT = re.compile(r"\{\{|\}\}|\{[a-z_]+\}|<[^<>]{1,40}>|\[[a-z _]{2,30}\]", re.IGNORECASE)
# Words a template uses for a slot it never filled: "What someone will do or did?", "What it is about?"
_GENERIC_SLOT_WORDS = re.compile(r"\b(someone|somebody|something|so-and-so|x|y)\b", re.IGNORECASE)
# "the passage" / "the text" / "the author" without saying which: the system prompt forbids it (not self-contained)
_UNNAMED = re.compile(r"\b(in|of|from|by|according to) (the|this) (passage|text|excerpt|document)\b", re.IGNORECASE)
_QUESTION_START = re.compile(
    r"^(who|whom|whose|what|which|when|where|why|how|is|are|was|were|do|does|did|can|could|should|would|will|"
    r"has|have|had|in|on|at|for|from|to|according|name|list|give|summari[sz]e|describe|explain|define|state|"
    r"tell|compare|outline|identify)\b", re.IGNORECASE)
_TERMINAL = (".", "!", "?", '"', "'", ")", "”", "’", "]", "`", "*")
_DATE_LABEL = re.compile(r"^\W*(published|posted|date[d]?|updated|written|created)\b", re.IGNORECASE)
_BYLINE = re.compile(r"^\W*(by|author[s]?|written by)\b[:\s]", re.IGNORECASE)


def repetition(text: str) -> float:
    """The largest share of characters inside repeated word n-grams, n = 3, 4, 5 (0 when under 6 words)."""
    ws = words(text)
    if len(ws) < 6:
        return 0.0
    total = sum(len(w) for w in ws) or 1
    worst = 0.0
    for n in (3, 4, 5):
        grams = [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]
        counts = Counter(grams)
        covered = [False] * len(ws)
        for i, g in enumerate(grams):
            if counts[g] > 1:
                for j in range(i, i + n):
                    covered[j] = True
        worst = max(worst, sum(len(w) for w, c in zip(ws, covered, strict=True) if c) / total)
    return worst


def _check_repetition(v: PairView, s: FilterSettings) -> tuple[str, str] | None:
    share = repetition(v.answer)
    if share > s.max_repetition:
        return "repetitive", f"{share:.0%} of the answer is repeated word n-grams (limit {s.max_repetition:.0%})"
    return None


def _check_short(v: PairView, s: FilterSettings) -> tuple[str, str] | None:
    need = v.prompt.min_answer_words if v.prompt is not None else 1
    got = len(words(v.answer))
    if got < need and not (need == 1 and v.answer.strip() and asks_for_symbol(v.question)):  # "+" for an operator
        return "too_short", f"{got} word(s); {v.prompt.id if v.prompt else 'this perspective'} needs {need}"
    return None


_ANSWER_SLOT = re.compile(r"\[[a-z][a-z _]{2,30}\](?!\()|\{\{|<[a-z][a-z _]{1,30}>")
# An answer of these words alone names nothing ("The author of the passage"); "How many ...?" -> "One" does.
_NAMES_NOTHING = (FUNCTION_WORDS - {"one"}) | GENERIC_NOUNS | {"author", "authors", "writer", "speaker", "reader"}


def _slot(pattern: re.Pattern[str], text: str, v: PairView) -> bool:  # unfilled: not the document's `vector<int>`
    return any(m.group() not in v.title and m.group() not in v.head for m in pattern.finditer(text))


def _check_echo(v: PairView, s: FilterSettings) -> tuple[str, str] | None:
    if _slot(_ANSWER_SLOT, v.answer, v):
        return "template", "the answer keeps a placeholder ([specific details], <name>)"
    answer = folded_words(v.answer)
    if answer in _GENERIC_ANSWERS:
        return "echo", f"the answer {v.answer!r} says nothing"
    if not answer:  # "Which operator ...?" -> "+" is an answer of no words
        return None if v.answer.strip() and asks_for_symbol(v.question) else ("echo", "the answer has no words")
    if all(w in _NAMES_NOTHING for w in answer.split()):  # "who or what is General Miles?" -> "The subject of ..."
        return "echo", f"the answer {v.answer!r} names nothing"
    question = folded_words(v.question)
    metadata = v.prompt is not None and v.prompt.id == "metadata"  # "Who wrote 'George Washington: ...'?" is fair
    if question and not metadata and (answer == question or (len(answer) >= 4 and answer in question)):
        return "echo", "the answer only restates the question"
    # An answer that is the title is fine ("Which game was played on 7 February 2016?" -> "Super Bowl 50"), but a
    # title that is a cut sentence ("CITY — A strong indication on Friday that the...") answers nothing.
    title = folded_words(v.title)
    if title and answer == title and v.title.rstrip().endswith(("...", "…")):
        return "echo", "the answer only restates a cut title"
    if v.prompt is not None and v.prompt.output == "answers" and v.prompt.id != "metadata":  # prose answers
        named = set(title.split()) | set(question.split()) | FUNCTION_WORDS | GENERIC_NOUNS
        if all(w in named for w in answer.split()):
            return "echo", "the answer only restates the title"
    return None


def _check_truncated(v: PairView, s: FilterSettings) -> tuple[str, str] | None:
    text = v.answer.rstrip()
    limit = v.prompt.max_answer_chars if v.prompt is not None else 0
    if v.prompt is not None and v.prompt.output == "unanswerable":  # code wrote the answer: only ``what`` can be cut
        what = what_of(text) or ""
        if limit and len(what) >= s.truncation_share * limit:
            return "truncated", f"its 'what' ({len(what)} characters) fills the {limit}-character limit"
        return None
    if limit and len(text) >= s.truncation_share * limit:
        return "truncated", f"{len(text)} characters fill the {limit}-character limit"
    if text.endswith(("...", "…")) or (len(words(text)) >= 25 and not text.endswith(_TERMINAL)):
        return "truncated", "the answer stops mid-sentence"
    return None


def _check_template(v: PairView, s: FilterSettings) -> tuple[str, str] | None:
    q = v.question.strip()
    if _slot(_SLOT, q, v):
        return "template", "the question has an unfilled slot"
    qw = words(q)
    if len(qw) < 3 or not (q.endswith("?") or _QUESTION_START.match(q)):
        return "template", f"{q!r} is not a question"
    if all(w in FUNCTION_WORDS or w in GENERIC_NOUNS for w in qw):
        return "template", f"{q!r} names nothing"
    if v.prompt is not None and v.prompt.output in ("qa_pairs", "unanswerable"):  # model-written questions
        if _UNNAMED.search(q):
            return "template", "the question points at the passage instead of naming what it is about"
        if _GENERIC_SLOT_WORDS.search(q):
            return "template", "the question keeps a generic slot word (someone, something)"
        body = folded_words(v.prompt.body)
        if len(qw) <= 8 and folded_words(q) in body:
            return "template", "the question is copied from the prompt's instructions"
    return None


def _check_relation(v: PairView, s: FilterSettings) -> tuple[str, str] | None:
    if v.prompt is None or v.prompt.output != "entities" or " related to " not in v.question:
        return None
    if _slot(_SLOT, v.answer, v):
        return "not_a_sentence", "the relation keeps a placeholder"
    n = len(words(v.answer))
    if n < 3 or n > 40:
        return "not_a_sentence", f"a relation of {n} word(s) does not read as a sentence"
    if v.head and not _stated_together(v):
        return "ungrounded", "the passage has no sentence naming both ends of the relation with its verb"
    example = re.search(r'for example ([^)]*)\)', v.prompt.body)
    if example:
        copied = [m for m in re.findall(r'"([^"]+)"', example.group(1)) if len(words(m)) >= 2]
        if any(folded_words(m) in folded_words(v.answer) for m in copied):
            return "not_a_sentence", "the relation copies the prompt's example"
    return None


def _stated_together(v: PairView) -> bool:
    """A relation pair ("S rel O.") is stated when one sentence of the passage names S and O and holds the
    relation's main word (its first 5 letters, so "defeated" matches "defeat"): "Denver Broncos defeated
    Levi's Stadium" names two ends that never meet in a sentence."""
    m = re.match(r"In \"[^\"]*\", how is (.+) related to (.+)\?$", v.question.strip())
    if not m:
        return True
    subject, obj = folded_words(m.group(1)), folded_words(m.group(2))
    rest = folded_words(v.answer)
    if not (rest.startswith(subject) and rest.endswith(obj)):
        return True  # not the code-built shape: nothing to check
    relation = [w for w in rest[len(subject):len(rest) - len(obj)].split() if w not in FUNCTION_WORDS]
    stem = max(relation, key=len)[:5] if relation else ""
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", v.head):
        s = folded_words(sentence)
        if (fuzz.partial_ratio(subject, s) >= 90 and fuzz.partial_ratio(obj, s) >= 90
                and (not stem or stem in s)):
            return True
    return False


def _dates_in(text: str) -> set[str]:
    found = set(re.findall(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b", text))
    found |= {m.lower() for m in re.findall(
        r"\b(?:\d{1,2}\s+)?(?:" + "|".join(MONTHS.split()) + r")\.?\s+(?:\d{1,2},?\s+)?\d{4}\b", text, re.IGNORECASE)}
    return found


def _check_metadata(v: PairView, s: FilterSettings) -> tuple[str, str] | None:
    if v.prompt is None or v.prompt.id != "metadata":
        return None
    meta = dict(v.meta)
    head = [line.strip() for line in v.head.splitlines() if line.strip()][:8]
    q = v.question.lower()
    if q.startswith("when was"):
        stated = [meta.get("date", "")]
        # a dateline: a short line of its own near the top, or one under a label (Published: ..., Date: ...)
        stated += [line for line in head if _DATE_LABEL.match(line) or (len(line) <= 40 and _dates_in(line))]
        answer_dates = _dates_in(v.answer) or {v.answer.strip().lower()}
        if not any(d in " ".join(stated).lower() or fuzz.partial_ratio(d, " ".join(stated).lower()) >= 95
                   for d in answer_dates if d):
            return "ungrounded", f"the date {v.answer!r} is not stated as the document's date"
    elif q.startswith("who wrote"):
        stated = [meta.get("author", "")] + [line for line in head if _BYLINE.match(line)]
        answer = folded_words(v.answer)
        if not any(answer and fuzz.partial_ratio(answer, folded_words(x)) >= 90 for x in stated if x):
            return "ungrounded", f"the author {v.answer!r} is not stated in a byline or the file's metadata"
    elif (q.startswith("what is the title") and fuzz.ratio(folded_words(v.answer), folded_words(v.title)) < 80
          and meta.get("title", "") != v.answer):
        return "ungrounded", f"{v.answer!r} is not the document's title {v.title!r}"
    return None


def check_unanswerable(v: PairView, s: FilterSettings | None = None) -> tuple[str, str] | None:
    """A "The documents don't say" pair: the answer is still the code-built decline, and nothing suggests the
    passage (``head``: the document's text, in curation) answers the question."""
    if v.prompt is None or v.prompt.output != "unanswerable":
        return None
    what = what_of(v.answer)
    if what is None:
        return "template", "the answer is not the code-built decline (\"The documents don't say ...\")"
    if off := decline_off_topic(v.question, what):
        return "template", off
    if not v.head:
        return None
    if leaked := decline_leaks(v.question, what, v.head):
        return "ungrounded", leaked
    why = seems_answered(v.question, what, v.head, v.asked, v.title)
    return ("ungrounded", why) if why else None


_CHECKS = (_check_template, _check_echo, _check_short, check_tiny, _check_repetition, _check_truncated,
           _check_relation, _check_metadata, check_unanswerable)


def _hits(view: PairView, settings: FilterSettings) -> Iterator[tuple[str, str]]:
    if settings.enabled:  # lazily: screen() stops at the first verdict, on every pair of a run
        yield from (hit for check in _CHECKS if (hit := check(view, settings)) is not None)


def screen_all(view: PairView, settings: FilterSettings) -> list[tuple[str, str]]:
    """Every filter verdict that applies to this pair, with its reason (the repair loop shows them all)."""
    return list(_hits(view, settings))


def screen(view: PairView, settings: FilterSettings) -> tuple[str, str] | None:
    """The first filter verdict that applies to this pair, with its reason; ``None`` when it passes them all."""
    return next(_hits(view, settings), None)
