"""Template rows built by code from the fact ledger: a definition list's entry, asked both ways.

A converted API reference states its facts as entries, a term line and its definition (``copy.copy(x)`` /
``: Return a shallow copy of x.``). Blanking the term gives "What(x) : Return a shallow copy of x?"; a template asks
it as a reader would: which entry is documented as the definition (the answer: the term, a span of the chunk), and
what the documentation says about the term (the answer: the definition, verbatim). The templates are the cloze
prompt's ``entry`` and ``define`` questions (``prompts/cloze.md``). No teacher tokens.
"""

from __future__ import annotations

import re

from qagen.core.types import Fact
from qagen.corpus.spans import DOC_KEYWORDS, plain

# "term\n: definition" (markdown's definition list, as markitdown writes an HTML <dl>)
_ENTRY = re.compile(r"^(?P<term>[^\n:]{1,80}?)[ \t]*\n[ \t]*:[ \t]+(?P<definition>\S[^\n]{8,300})$")
DEFINITION_WORDS = 3  # a definition says at least this much


def definition(fact: Fact) -> tuple[str, str] | None:
    """(term, definition) when the fact's sentence is a definition list's entry that its span names, else None."""
    m = _ENTRY.match(fact.sentence.strip())
    if m is None:
        return None
    term, text = plain(m.group("term")).strip(), plain(m.group("definition")).strip()
    words = [w for w in term.split() if w not in DOC_KEYWORDS]  # "exception copy.Error": the entry is copy.Error
    if not words or not words[0].startswith(fact.span) or len(text.split()) < DEFINITION_WORDS:
        return None  # the span is a parameter of the entry ("memo" in "copy.deepcopy(x[, memo])"), not its name
    return term, text
