"""Whole-document perspectives: a map-reduce over the section summaries.

A document-scope prompt with ``reads: whole`` (``about``, ``summaries``) must see the whole document, not its
first chunk: a long report's summary is not a summary of its opening page. So:

- **map**: each chunk's section summary (prompts/section_summary.md). It is the same request as the
  ``section_summary`` perspective's, so the caller answers it from the store or from the call in flight: the map
  costs nothing extra;
- **reduce**: the document-level prompts run once on a passage made of the document's opening lines (where its
  title, byline and dateline are) and every section's summary, in order. When that passage is longer than a chunk
  (the context the model is sized for), the summaries are summarised again in groups, and so on, until it fits.

It stays incremental: every request is cached by content, so changing one section re-asks its own summary and the
reduce (its passage changed), nothing else. A document of one chunk keeps the single call on that chunk.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from qagen.core.types import Chunk, Document
from qagen.prompting.requests import build_request

if TYPE_CHECKING:
    from qagen.generate.caller import Caller
    from qagen.prompting.prompts import Prompt, PromptSet

MAP_PROMPT = "section_summary"
OPENING_CHARS = 400  # of the first chunk, kept verbatim in the reduce passage
MAX_LEVELS = 4  # summaries of summaries at most this deep (a 4-level tree covers ~chunk_chars^4 / summary^3)


class Reducer:
    """Builds the whole-document passage of one document from its chunks' section summaries."""

    def __init__(self, caller: Caller, prompts: PromptSet, budget_chars: int):
        self.caller, self.prompts = caller, prompts
        self.map_prompt: Prompt = prompts.by_id(MAP_PROMPT)
        self.budget_chars = max(budget_chars, 1000)
        # the map's requests in flight at once per document: a 10,000-chunk document must not build 10,000
        # requests at a time (the perspective stage bounds its own queue the same way)
        self.gate = asyncio.Semaphore(8)

    async def summary(self, doc: Document, chunk: Chunk) -> str | None:
        """One chunk's section summary: the section_summary perspective's own request (cached, or shared in flight)."""
        async with self.gate:
            request = build_request(self.prompts, self.map_prompt, doc, chunk,
                                    self.caller.model_for(self.map_prompt.role))
            result = await self.caller.ask_structured(self.map_prompt, request, chunk)
        if result is None:
            return None
        return " ".join(str(v) for v in result[0].model_dump().values()).strip() or None

    async def passage(self, doc: Document, chunks: list[Chunk]) -> Chunk:
        """The reduce passage as a chunk (the first chunk's ID, so pairs are stored and grounded under it)."""
        first = chunks[0]
        # every map request reports itself done (sent, cached, or shared with the chunk's own section_summary)
        self.caller.progress.requests_added(len(chunks))
        summaries = await asyncio.gather(*(self.summary(doc, c) for c in chunks))
        parts = [f"[{c.section or f'part {c.index + 1}'}] {s}" for c, s in zip(chunks, summaries, strict=True) if s]
        level = 0
        while sum(len(p) + 2 for p in parts) > self.budget_chars and len(parts) > 1 and level < MAX_LEVELS:
            parts = await self._fold(doc, first, parts, level)
            level += 1
        opening = first.text[:OPENING_CHARS].rsplit(" ", 1)[0] if len(first.text) > OPENING_CHARS else first.text
        text = f"Opening:\n{opening}\n\nSection summaries:\n" + "\n\n".join(parts)
        return replace(first, text=text, section="", n_tokens=len(text) // 4)

    async def _fold(self, doc: Document, first: Chunk, parts: list[str], level: int) -> list[str]:
        """One level up: the summaries in groups that fit, each group summarised (cached like every request)."""
        groups: list[list[str]] = [[]]
        for p in parts:
            if groups[-1] and sum(len(x) + 2 for x in groups[-1]) + len(p) > self.budget_chars:
                groups.append([])
            groups[-1].append(p)
        if len(groups) == 1:  # one summary alone is over the budget: cut it rather than loop
            return [p[: self.budget_chars // max(len(parts), 1)] for p in parts]
        self.caller.progress.requests_added(len(groups))
        chunks = [replace(first, text="\n\n".join(g), section=f"summaries {level + 1}.{i + 1}", index=i)
                  for i, g in enumerate(groups)]
        folded = await asyncio.gather(*(self.summary(doc, c) for c in chunks))
        return [f"[{c.section}] {s}" for c, s in zip(chunks, folded, strict=True) if s]
