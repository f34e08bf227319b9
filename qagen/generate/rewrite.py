"""Rewrites of a chunk for continued pretraining (``qagen ingest --cpt``, written to ``OUT/cpt.jsonl``).

A model learns a fact from fine-tuning when it meets it several times, in different words. EntiGraph (Yang et
al. 2024, "Synthetic continued pretraining", arXiv 2409.07431) continues pretraining on entity-centred rewrites
of the documents and beats training on the raw documents; Augmentoolkit trains on the raw chunks plus
"representation variations" of them before its QA fine-tune. This is both, small: one cached request per chunk
(``prompts/rewrite.md``) asks for ``m`` rewrites, each in a style code picks (how two entities of the passage
relate, a brief, an encyclopedia entry, a list of facts), and ``qagen train --recipe cpt+sft`` trains on the
chunks and their rewrites before the QA pairs.

A rewrite that states a number, a name (a capitalised word) or a date its chunk does not is dropped, not stored,
and counted (``GenStats.rewrites_dropped``): continued pretraining on an invented fact teaches it as well as a
true one. What the model was shown beside the passage (its title, section and the file's metadata) counts as
stated.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

from qagen.core import ids
from qagen.core.text import fold
from qagen.core.types import Chunk, Document, Rewrite
from qagen.generate.caller import Caller
from qagen.prompting.prompts import PromptError, PromptSet
from qagen.prompting.requests import build_request
from qagen.prompting.schemas import REWRITE_STYLES

log = logging.getLogger(__name__)

ROLE = "rewriter"


def styles_for(chunk_text: str, m: int) -> list[str]:
    """The ``m`` styles asked of one chunk: all of them in turn, from a start picked by the chunk's text.

    So a corpus gets every style even with m = 2, and the same chunk always gets the same styles (by its
    text, not its ID: an edit elsewhere in the document changes the chunk ID but must not re-ask it).
    """
    start = int(ids.hash_str("rewrite-styles", chunk_text)[:8], 16) % len(REWRITE_STYLES)
    return [REWRITE_STYLES[(start + i) % len(REWRITE_STYLES)] for i in range(m)]


# --- grounding: numbers, names and dates ---------------------------------------------------------
_MONTH_NUMBERS = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
                  "oct": 10, "nov": 11, "dec": 12}
# Capitalised, as dates are written (so the verb "may" is no month)
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sept?(?:ember)?|"
          r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)(?![^\W\d_])\.?")
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_DATE = re.compile(
    r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)"  # 1790-01-08
    rf"|(?<![\w]){_DAY}\s+(?:of\s+)?({_MONTH})(?:,?\s+(\d{{4}}))?(?!\d)"  # 8 January 1790, 8th of January
    rf"|(?<![\w])({_MONTH})\s+{_DAY}(?:,?\s+(\d{{4}}))?(?![\w])"  # January 8, 1790
    rf"|(?<![\w])({_MONTH})\s+(\d{{4}})(?!\d)",  # January 1790
)
_NUMBER = re.compile(r"(?<![\w.,])(\d+(?:[.,]\d+)*)(?:st|nd|rd|th|s)?(?!\w)")
_THOUSANDS = re.compile(r"^\d{1,3}(?:,\d{3})+$")
_NUMBER_WORDS = {w: str(i) for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
))}
_NUMBER_WORDS.update({w: str(10 * i) for i, w in enumerate((
    "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
), 3)})
_LETTERS = re.compile(r"[^\W\d_]+")
# Capitalised words that are not names: sentence openers, and the words a rewrite uses for what it is.
_NOT_NAMES = frozenset((
    "a", "an", "the", "this", "that", "these", "those", "it", "its", "they", "them", "their", "there", "he", "she",
    "his", "her", "hers", "we", "our", "you", "your", "i", "in", "on", "at", "to", "for", "from", "by", "with",
    "about", "as", "of", "after", "before", "during", "while", "when", "where", "which", "who", "whom", "whose",
    "what", "why", "how", "both", "each", "all", "some", "many", "most", "several", "few", "one", "two", "three",
    "four", "five", "six", "seven", "eight", "nine", "ten", "first", "second", "third", "last", "next", "finally",
    "also", "however", "moreover", "furthermore", "additionally", "together", "meanwhile", "then", "thus",
    "therefore", "hence", "because", "since", "although", "though", "but", "and", "or", "nor", "yet", "so", "if",
    "unless", "unlike", "like", "besides", "according", "among", "between", "under", "over", "through", "within",
    "without", "other", "another", "such", "only", "not", "no", "yes", "here", "today", "later", "earlier",
    "instead", "overall", "into", "upon", "once", "even", "further", "again", "still", "every", "any", "either",
    "neither", "despite", "following", "along", "across", "around", "beyond", "given", "based", "known", "called",
    "named", "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "do", "does", "did", "can",
    "could", "will", "would", "shall", "should", "may", "might", "must", "key", "main", "document", "documents",
    "passage", "text", "section", "part", "summary", "brief", "entry", "fact", "facts", "list", "relation",
    "relations", "encyclopedia", "note", "notes", "introduction", "background", "conclusion",
))


def _number(raw: str) -> str:
    if _THOUSANDS.match(raw):
        raw = raw.replace(",", "")
    return str(int(raw)) if raw.isdigit() else raw


Date = tuple[int | None, int | None, int | None]  # day, month, year: what a mention states


def _dates(text: str) -> list[tuple[Date, str]]:
    found = []
    for m in _DATE.finditer(text):
        g = m.groups()
        if g[0]:
            date: Date = (int(g[2]), int(g[1]), int(g[0]))
        elif g[3]:
            date = (int(g[3]), _MONTH_NUMBERS[g[4][:3].lower()], int(g[5]) if g[5] else None)
        elif g[6]:
            date = (int(g[7]), _MONTH_NUMBERS[g[6][:3].lower()], int(g[8]) if g[8] else None)
        else:
            date = (None, _MONTH_NUMBERS[g[9][:3].lower()], int(g[10]))
        if date[0] is None or 1 <= date[0] <= 31:
            found.append((date, m.group(0)))
    return found


@dataclass(frozen=True)
class Stated:
    """The numbers, words and dates a chunk states (with its title, section and the file's metadata)."""

    numbers: frozenset[str]
    words: frozenset[str]
    dates: tuple[Date, ...]

    @classmethod
    def of(cls, *texts: str) -> Stated:
        text = "\n".join(texts)
        words = frozenset(fold(w) for w in _LETTERS.findall(text))
        numbers = {_number(m.group(1)) for m in _NUMBER.finditer(text)}
        numbers |= {_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS}  # "eight months" may become "8 months"
        return cls(frozenset(numbers), words, tuple(d for d, _ in _dates(text)))

    def has_word(self, word: str) -> bool:
        w = fold(word)
        return w in self.words or (w.endswith("s") and w[:-1] in self.words) or f"{w}s" in self.words

    def has_date(self, date: Date) -> bool:
        return any(all(part is None or part == theirs for part, theirs in zip(date, other, strict=True))
                   for other in self.dates)

    def unstated(self, rewrite: str) -> str:
        """What the rewrite states that the chunk does not ("date 3 May 2021", "number 1791", "name Napoleon"),
        or "" when it states nothing new."""
        for date, mention in _dates(rewrite):
            if not self.has_date(date):
                return f"date {mention.rstrip('.')}"
        rest = _DATE.sub(" ", rewrite)  # a stated date's parts need no further check ("8 January" = "January 8")
        for m in _NUMBER.finditer(rest):
            if _number(m.group(1)) not in self.numbers:
                return f"number {m.group(1)}"
        for word in _LETTERS.findall(rest):
            folded = fold(word)
            # "nine months" where the chunk says eight ("one" is a pronoun as often as a number)
            if folded in _NUMBER_WORDS and folded != "one" and _NUMBER_WORDS[folded] not in self.numbers:
                return f"number {word}"
            if len(word) > 1 and word[0].isupper() and folded not in _NOT_NAMES and not self.has_word(word):
                return f"name {word}"
        return ""


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


# --- the stage -------------------------------------------------------------------------------------
class Rewriter:
    """``m`` rewrites of each chunk in one cached request; the grounded ones go to the store (``rewrites``)."""

    def __init__(self, caller: Caller, prompts: PromptSet, m: int = 2):
        found = next((p for p in prompts.all if p.role == ROLE and p.enabled), None)
        if found is None:
            raise PromptError(f"--cpt needs an enabled prompt with role {ROLE!r} (the built-in prompts/rewrite.md)")
        self.caller, self.prompts, self.m = caller, prompts, m
        # n rewrites asked (the schema's maxItems too); the token budget grows with them
        self.prompt = replace(found, n=m, max_tokens=min(16384, -(-found.max_tokens * m // found.n)))

    async def run(self, doc: Document, chunk: Chunk) -> list[Rewrite]:
        """Ask for the chunk's rewrites (cache first), keep the grounded ones, store them for this run."""
        c, prompt = self.caller, self.prompt
        c.stats.calls[prompt.id] += 1
        c.progress.requests_added(1)
        request = build_request(self.prompts, prompt, doc, chunk, c.model_for(prompt.role),
                                styles=styles_for(chunk.text, self.m))
        result = await c.ask_structured(prompt, request, chunk)
        if result is None:  # recorded as a failure by the caller
            return []
        obj, request = result
        stated = Stated.of(chunk.text, chunk.title, chunk.section, *(v for _, v in doc.meta))
        kept: list[tuple[Rewrite, str]] = []
        for i, item in enumerate(obj.model_dump()["rewrites"]):
            style, text = str(item["style"]), str(item["text"]).strip()
            if _same(text, chunk.text) or any(_same(text, r.text) for r, _ in kept):
                why = "a copy of the passage or of another rewrite"
            else:
                why = stated.unstated(text)
            if why:
                c.stats.rewrites_dropped += 1
                log.info("rewrite %d (%s) of chunk %s dropped: %s", i, style, ids.short(chunk.chunk_id), why)
                continue
            rewrite_id = ids.hash_str("rewrite", request.key, chunk.chunk_id, str(i), style, text)
            kept.append((Rewrite(rewrite_id, chunk.chunk_id, doc.doc_id, request.key, style, text), f"{i:04d}"))
        c.stats.rewrites += len(kept)
        if kept:
            c.store.add_rewrites(c.run_id, kept)
        return [r for r, _ in kept]
