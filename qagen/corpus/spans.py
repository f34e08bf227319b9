"""Answer spans found by code: the names, numbers, dates and code terms a chunk states, each with its sentence.

The fact ledger (``qagen/generate/ledger.py``) starts here. A *span* is a short piece of the chunk, copied
verbatim, that a closed-book question can have as its answer: "Lewis and Clarke", "$500,000", "1828-08-30",
"the Haro Channel", "autovacuum_naptime", "version 3.2". Each carries the sentence it comes from, which the
question writer sees and the fact's ID hashes. Answer-first question generation (PAQ, arXiv 2102.07033; lmqg)
picks the answer before the question for the same reason: a pair built on a span is grounded by construction.

What counts as a span, by kind (checked in this order; a span inside a longer one of the same sentence is dropped):

- ``code``: text in backticks, *italic* single words (parameter names in converted API docs), snake_case and
  dotted identifiers, ``--options``, ``call()``.
- ``number``: money, percentages, numbers with their scale and unit noun ("200 million transactions",
  "50 tuples", "2 milliseconds"), numbers written as words before a unit ("one minute"), versions.
- ``date``: ISO dates, "3 May 2021", "March 4, 1829", "the 30th day of September", years.
- ``name``: runs of capitalised words, with "of", "and", "the" between them ("Pacific Mail Steamship Company",
  "Emperor of Germany"); a sentence's first word alone only when it is not a common word.
- ``quoted``: a short phrase in quotation marks.
- ``list``: three things named together ("concord, peace, and plenty"), the examples after "like" or "such as".
- ``subject``: the subject of a sentence that says what it is ("Knowledge is ... the surest basis of ...").

Sentences come from pysbd (rule-based, no model to download), within each paragraph or line, so a markdown
heading or a definition-list term line is its own sentence. Headings give no spans: a title is not a fact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MAX_SPAN_WORDS = 8
MAX_SPAN_CHARS = 80


@dataclass(frozen=True)
class Sentence:
    text: str
    start: int  # character offsets in the chunk text
    end: int


@dataclass(frozen=True)
class Span:
    text: str  # as written in the chunk (markdown backticks and asterisks removed)
    start: int  # character offsets in the chunk text
    end: int
    kind: str  # code | number | date | name | quoted | phrase (a model's, verified by code)
    sentence: Sentence


_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
          r"Jan\.|Feb\.|Mar\.|Apr\.|Jun\.|Jul\.|Aug\.|Sep\.|Sept\.|Oct\.|Nov\.|Dec\.)")
_NUMBER_WORD = (r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|"
                r"fifty|sixty|hundred|thousand)")
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_SCALE = r"(?:\s+(?:hundred|thousand|million|billion|trillion))?"
_UNIT_NOUN = (r"(?:\s+(?:(?:milli|micro|nano|kilo|mega|giga)?(?:seconds?|bytes?)|minutes?|hours?|days?|weeks?|months?|"
              r"years?|dollars|cents|euros|pounds|francs|miles|feet|foot|meters?|metres?|kilometers?|kilometres?|"
              r"acres|tons|men|persons|people|vessels|ships|transactions|tuples|rows|pages|times|items|entries|"
              r"files|objects|packs|characters|spaces|lines|members|votes|states|percent)\b)?")
_TIME_UNIT = r"(?:second|minute|hour|day|week|month|year|millisecond|microsecond|byte|kilobyte|megabyte)s?"

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("code", re.compile(r"`([^`\n]{1,80})`")),
    ("code", re.compile(r"(?<![\w/.])[A-Za-z_][\w.-]*(?:/[\w.-]+)+\.[A-Za-z]{1,5}\b")),  # a path: Lib/copy.py
    ("code", re.compile(r"(?<![*\w])\*([A-Za-z_][\w.]{1,40})\*(?![*\w])")),
    ("code", re.compile(r"(?<![\w.`-])--[a-z][\w-]{1,40}")),
    ("code", re.compile(r"\b(?![A-Za-z]\.[A-Za-z]\b)[A-Za-z_][A-Za-z0-9]*(?:[._][A-Za-z0-9_]+)+(?:\(\))?")),
    ("code", re.compile(r"\b\d+(?:\.[A-Za-z]+)+\b")),
    ("number", re.compile(r"\b\d+(?:\.\d+){2,}\b")),
    ("code", re.compile(r"\b[A-Za-z_]\w{2,40}\(\)")),
    ("date", re.compile(r"\b\d{4}-\d{2}-\d{2}\b")),
    ("date", re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b")),
    ("date", re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}})?\b")),
    ("date", re.compile(rf"\b(?:the\s+)?\d{{1,2}}(?:st|nd|rd|th)\s+day\s+of\s+{_MONTH}(?:,?\s+\d{{4}})?")),
    ("date", re.compile(rf"\b{_MONTH}\s+\d{{4}}\b")),
    ("number", re.compile(rf"\$\s?{_NUM}(?:[MKB]\b|{_SCALE})")),
    ("number", re.compile(rf"\b{_NUM}\s?(?:%|per\s?cent\b)")),
    ("number", re.compile(r"\b[Vv]ersion\s+(\d+(?:\.\d+)+)\b")),
    ("number", re.compile(rf"(?<![\w.]){_NUM}{_SCALE}{_UNIT_NOUN}")),
    ("number", re.compile(rf"\b{_NUMBER_WORD}(?:[- ]{_NUMBER_WORD})?\s+{_TIME_UNIT}\b", re.IGNORECASE)),
    ("number", re.compile(rf"(?<=\bis\s){_NUMBER_WORD}\b(?=[.,;])")),
    ("quoted", re.compile(r"[\"“]([^\"”\n]{2,60})[\"”]")),
    # three things named together ("patriotism, firmness, and wisdom"), and the examples a sentence gives ("like
    # lists or class instances", "such as data which is intended to be shared between copies")
    ("list", re.compile(r"\b[a-z]{3,}, [a-z]{3,},? (?:and|or) [a-z]{3,}\b")),
    ("list", re.compile(r"\b(?:like|such as)\s+([a-z][\w\s-]{2,80}?)(?=[.;:)]|$)")),
)
_CAP = r"[A-Z][\w'’.&-]*"
_NAME = re.compile(rf"{_CAP}(?:\s+(?:(?:of|and|the|de|la|von|van|du|for|on|y)\s+)*{_CAP})*")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)
_YEAR = re.compile(r"\b1[5-9]\d\d\b|\b20\d\d\b")
# A capitalised sentence opener that is a common word, not a name ("The", "However", "This").
_COMMON_OPENERS = set(
    "a an the this that these those it its in on at of for to by with from as if when while after before since "
    "although though however moreover furthermore also but and or nor so yet then there here we our us you your "
    "they their he his she her i my some many most all any each every no not one two three other such both "
    "either neither very note see specifies controls sets if unless only even".split())
STOPWORDS = _STOP = _COMMON_OPENERS | set("is are was were be been being has have had do does did will would can could should "
                              "shall may might must which who whom whose what where why how than".split())


@lru_cache(maxsize=1)
def _segmenter() -> object:
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=True)


_BLOCK = re.compile(r"[^\n]+(?:\n(?![ \t]*\n)(?![ \t]*(?:#|[-*+] |\d+\. |```))[^\n]+)*")


def sentences(text: str) -> list[Sentence]:
    """The chunk's sentences with their offsets: pysbd within each paragraph; a heading line is one sentence."""
    found: list[Sentence] = []
    for block in _BLOCK.finditer(text):
        part = block.group(0)
        if part.lstrip().startswith("#") or len(part) < 3:
            found.append(Sentence(part.strip(), block.start(), block.end()))
            continue
        # a paragraph's line breaks are spaces to pysbd, which would end a sentence at each ("... then (to the
        # extent\n possible) inserts"); the text keeps them (same offsets)
        for seg in _segmenter().segment(part.replace("\n", " ")):  # type: ignore[attr-defined]
            raw = part[seg.start:seg.start + len(seg.sent)]
            lead = len(raw) - len(raw.lstrip())
            body = raw.strip()
            if body:
                start = block.start() + seg.start + lead
                found.append(Sentence(body, start, start + len(body)))
    return found


def _strip(text: str, start: int) -> tuple[str, int]:
    """A span without surrounding spaces, punctuation that ends a clause, or a leading article."""
    lead = len(text) - len(text.lstrip(" \t\n(\"'“"))
    text, start = text[lead:], start + lead
    text = text.rstrip(" \t\n,;:.\"'”")
    if text.endswith(")") and "(" not in text:
        text = text.rstrip(")")
    if text.endswith(".") and not re.search(r"\b[A-Z]\.$", text):
        text = text[:-1]
    article = _ARTICLE.match(text)
    if article and len(text) > len(article.group(0)) + 2:
        text, start = text[article.end():], start + article.end()
    return text, start


def _is_heading(sentence: Sentence) -> bool:
    return sentence.text.startswith("#")


def _name_ok(text: str, at_sentence_start: bool, chunk: str) -> bool:
    words = text.split()
    if not words or all(w.lower().strip(".,'’") in _STOP for w in words):
        return False
    if len(words) > 1 or not at_sentence_start or text.isupper():
        return len(text) >= 2
    # One capitalised word opening a sentence ("Serialize", "Congress"): a name only when the chunk also writes it
    # capitalised in mid-sentence.
    return re.search(rf"[\w,;] {re.escape(text)}\b", chunk) is not None


def _candidates(text: str) -> list[tuple[str, int, int, str]]:
    """(span text, start, end, kind) for every pattern match, before sentences and nesting are sorted out."""
    out: list[tuple[str, int, int, str]] = []
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            group = 1 if pattern.groups else 0
            span, start = _strip(m.group(group), m.start(group))
            if span:
                out.append((span, start, start + len(span), kind))
    for m in _YEAR.finditer(text):
        out.append((m.group(0), m.start(), m.end(), "date"))
    for m in _NAME.finditer(text):
        span, start = _strip(m.group(0), m.start())
        # a connector at the end belongs to what follows ("Treaty of" -> "Treaty")
        span = re.sub(r"(?:\s+(?:of|and|the|de|la|von|van|du|for|on|y))+$", "", span)
        if span:
            out.append((span, start, start + len(span), "name"))
    return out


# Where a markdown link points (``](pickle.html#module-pickle "pickle: Convert ...")``) and bare URLs: converted web
# pages are full of them, and "pickle.html" or "github.com" is no fact (hand audit, issue 29).
LINK_TARGET = re.compile(r"\]\((?:[^()\s]|\([^()\s]*\))*(?:\s+\"[^\"]*\")?\)|<?\bhttps?://[^\s)>\]]+>?")


_MD_LINK = re.compile(r"\[([^\[\]\n]*)\]\((?:[^()\s]|\([^()\s]*\))*(?:\s+\"[^\"]*\")?\)")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+\.)\s+")
_MD_EMPHASIS = re.compile(r"(?<![*\w])(\*{1,2})(?=[^*\s])([^*\n]*?[^*\s])\1(?![*\w])")


def plain(text: str) -> str:
    """Markdown as a reader sees it: a link as its text, no emphasis marks ("[`pickle`](pickle.html "...")" ->
    "`pickle`", "**Source code:**" -> "Source code:"); backticks stay, they mark code."""
    return _MD_EMPHASIS.sub(r"\2", _MD_LINK.sub(r"\1", _BULLET.sub("", text)))


# The subject of a sentence that says what something is ("The welfare of our country is the great object to which
# ...", "Knowledge is in every country the surest basis of public happiness"): "What is the great object ...?" asks
# for it. A subject that points back ("The former is called ...") names nothing by itself.
_SUBJECT = re.compile(r"^(?:[*_`\"“]*)([A-Z][\w'’-]*(?:\s+[\w'’-]+){0,7}?)\s+(?:is|are|was|were)\s+(?=\S+\s+\S+\s+\S)")
_POINTS_BACK = _STOP | set("former latter first last same other others rest result reason case fact following "
                           "there which".split())
_DEMONSTRATIVES = set("this that these those it its such each both either neither".split())


# What a converted API reference puts in italics before an entry: the entry's kind, not a fact
DOC_KEYWORDS = set("exception class method function attribute data property classmethod staticmethod "
                    "abstractmethod async await coroutine module".split())


def _subjects(sents: list[Sentence]) -> list[tuple[str, int, int, str]]:
    out = []
    for s in sents:
        m = _SUBJECT.match(s.text)
        if m is None or _is_heading(s) or "," in m.group(1):
            continue
        span, start = m.group(1), s.start + m.start(1)  # with its article: "The ____ is" would ask "The what is"
        words = [w.lower() for w in span.split()]
        content = [w for w in words if w not in ("the", "a", "an")]
        if content and content[0] not in _DEMONSTRATIVES and content[-1] not in _POINTS_BACK:
            out.append((span, start, start + len(span), "subject"))
    return out


def find_spans(text: str, sentence_list: list[Sentence] | None = None) -> list[Span]:
    """Every code-found span of ``text``, in text order, each inside one sentence, none inside another, none in a
    link's target or a URL."""
    sents = sentence_list if sentence_list is not None else sentences(text)
    links = [(m.start(), m.end()) for m in LINK_TARGET.finditer(text)]
    kept: list[Span] = []
    for span, start, end, kind in _candidates(text) + _subjects(sents):
        sentence = next((s for s in sents if s.start <= start and end <= s.end), None)
        if sentence is None or _is_heading(sentence):
            continue
        if any(a < end and start < b for a, b in links):
            continue
        words = span.split()
        if not words or len(words) > MAX_SPAN_WORDS or len(span) > MAX_SPAN_CHARS:
            continue
        opener = not text[sentence.start:start].strip(" *_`\"'“(:")  # nothing but markup before it
        opener = opener or re.search(r"[:(]\s*[*_]*$", text[sentence.start:start]) is not None
        if kind == "name" and not _name_ok(span, opener, text):
            continue
        if not re.search(r"[A-Za-z0-9]", span):
            continue
        if kind in ("code", "quoted") and all(w.lower() in _STOP for w in words):
            continue
        if kind == "list" and {words[0].lower().strip(",;"), words[-1].lower()} & _STOP:  # "socket, window, or any (similar"
            continue
        if kind == "code" and span in DOC_KEYWORDS and text[start - 1:start] == "*":  # "*exception* copy.Error"
            continue
        kept.append(Span(span, start, end, kind, sentence))
    return _outermost(kept)


def _outermost(spans: list[Span]) -> list[Span]:
    """Drop a span that sits inside a longer one (of any kind) and repeats of the same span in one sentence."""
    spans = sorted(spans, key=lambda s: (s.start, -(s.end - s.start)))
    out: list[Span] = []
    seen: set[tuple[int, str]] = set()
    for s in spans:
        if any(o.start <= s.start and s.end <= o.end for o in out):
            continue
        key = (s.sentence.start, s.text.casefold())
        if key in seen:
            continue
        seen.add(key)
        out.append(s)
    return out


def locate(text: str, phrase: str, sentence_list: list[Sentence]) -> Span | None:
    """A phrase a model says the chunk states, as a span of it: found verbatim (case and spacing aside) inside one
    sentence, else ``None`` (the model invented or rewrote it)."""
    phrase = phrase.strip().strip("\"'“”`*").strip()
    if not phrase or len(phrase.split()) > MAX_SPAN_WORDS or len(phrase) > MAX_SPAN_CHARS:
        return None
    pattern = re.compile(r"\s+".join(re.escape(w) for w in phrase.split()), re.IGNORECASE)
    for sentence in sentence_list:
        if _is_heading(sentence):
            continue
        m = pattern.search(text, sentence.start, sentence.end)
        if m:
            span, start = _strip(m.group(0), m.start())
            if span and not all(w.lower() in _STOP for w in span.split()):
                return Span(span, start, start + len(span), "phrase", sentence)
    return None
