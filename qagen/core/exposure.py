"""Which pairs teach which fact of the ledger: the link the summary's coverage figures and report.html's coverage
map both count (``qagen/generate/ledger.py`` builds the facts).

A pair of the ledger's own questions (or a cloze row) names its fact (``fact_id`` in its extra). Any other pair
teaches a fact when its answer holds the fact's span, as words, and it comes from the fact's chunk: "What did the
council decide on 4 May?" -> "The council voted on 4 May to close the bridge" teaches the fact "4 May".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from qagen.core.text import norm_words
from qagen.core.types import Fact, QAPair


def pairs_by_fact(facts: Sequence[Fact], pairs: Iterable[QAPair]) -> dict[str, list[QAPair]]:
    """fact_id -> the pairs that teach it (a pair of another perspective may teach several facts)."""
    by_chunk: dict[str, list[tuple[Fact, str]]] = {}
    for f in facts:
        by_chunk.setdefault(f.chunk_id, []).append((f, f" {norm_words(f.span)} "))
    found: dict[str, list[QAPair]] = {f.fact_id: [] for f in facts}
    for p in pairs:
        own = dict(p.extra).get("fact_id")
        if own:
            if own in found:
                found[own].append(p)
            continue
        answer = f" {norm_words(p.answer)} "
        for f, span in by_chunk.get(p.chunk_id, ()):
            if span.strip() and span in answer:
                found[f.fact_id].append(p)
    return found


def is_cloze(pair: QAPair) -> bool:
    """A code-built fill-in-the-blank row: it shows the fact, but is not a question about it."""
    return dict(pair.extra).get("kind") == "cloze"
