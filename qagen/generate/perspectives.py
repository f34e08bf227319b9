"""The perspective stage: run the suite of perspective prompts over each chunk.

Each perspective asks for a JSON schema; the validated reply becomes
(question, answer[, quote]) pairs. Drafts then go through the per-pair steps
the settings turn on (qagen/generate/steps.py: best-of-n, the repair loop,
the judge). The model never writes IDs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from pydantic import BaseModel

from qagen.core import ids
from qagen.core.types import Chunk, Document, QAPair
from qagen.corpus.reader import heading_like
from qagen.generate.answer_first import QUESTION_OUTPUT, LedgerStage
from qagen.generate.caller import Caller
from qagen.generate.steps import PairStep, Screen, pair_steps, run_steps
from qagen.generate.whole import Reducer
from qagen.prompting.prompts import Prompt, PromptSet
from qagen.prompting.requests import build_request, prompt_variables

if TYPE_CHECKING:
    from qagen.generate.judge import Judge
    from qagen.generate.refine import Refiner

log = logging.getLogger(__name__)

_EMPTY_ANSWERS = {"", "unknown", "n/a", "na", "none", "not stated", "not given", "not specified", "null"}


def outputs_to_qa(prompt: Prompt, obj: BaseModel, variables: dict[str, object]) -> list[tuple[str, str, str]]:
    """Turn a validated reply into (question, answer, quote) triples. The model never writes IDs."""
    data = obj.model_dump()
    found: list[tuple[str, str, str]] = []
    if prompt.output == "qa_pairs":
        found = [(p["question"], p["answer"], p.get("quote", "")) for p in data["pairs"]]
    elif prompt.output == "answers":
        for name, _ in prompt.questions:
            answer = str(data[name]).strip()
            if answer.strip(" .").lower() not in _EMPTY_ANSWERS:
                found.append((prompt.render_question(name, **variables), answer, ""))
    elif prompt.output == "entities":
        for ent in data["entities"]:
            question = prompt.render_question("entity", name=ent["name"], **variables)
            found.append((question, ent["description"], ""))
        for rel in data["relations"]:
            if rel["subject"].strip().lower() == rel["object"].strip().lower():
                continue  # "X is related to X" teaches nothing
            question = prompt.render_question("relation", subject=rel["subject"], object=rel["object"], **variables)
            found.append((question, f"{rel['subject']} {rel['relation']} {rel['object']}.", ""))
    elif prompt.output == "unanswerable":  # the answer is built by code, always the same decline
        from qagen.prompting.declines import decline_answer

        found = [(item["question"], decline_answer(item["what"]), "") for item in data["items"]]
    seen: set[str] = set()
    unique = []
    for q, a, quote in found:
        q, a = q.strip(), a.strip()
        if q and a and q.lower() not in seen:
            seen.add(q.lower())
            unique.append((q, a, quote.strip()))
    return unique


def clean_title(title: str, text: str) -> str:
    """A model's title if it is one: short, not a sentence, not the document's opening words copied."""
    title = heading_like(title.strip().strip('"').strip())
    if not title or title.lower().strip(" .") in _EMPTY_ANSWERS:
        return ""
    opening = " ".join(text.split()[: len(title.split()) + 2]).lower()
    if len(title.split()) >= 6 and opening.startswith(title.lower().rstrip(".…")):
        return ""
    return title


def sort_key(doc: Document, chunk: Chunk, perspective: str, index: int) -> str:
    return f"{doc.path}\x00{chunk.index:06d}\x00{perspective}\x00{index:04d}"


class Generator:
    """The perspective suite on one chunk at a time; refiner and judge are optional stages after it."""

    def __init__(
        self,
        caller: Caller,
        prompts: PromptSet,
        *,
        refiner: Refiner | None = None,
        judge: Judge | None = None,
        exam: bool = False,
        screen: Screen | None = None,
        reduce_chars: int | None = None,
        facts_k: int = 3,
        seed: int = 0,
    ):
        self.caller = caller
        self.prompts = prompts
        self.refiner = refiner
        self.judge = judge
        self.screen = screen  # pairs it catches skip the judge: curation gives them the filter's verdict
        # what drafts go through before they are stored: best-of, repair, judge (qagen/generate/steps.py)
        self.steps: list[PairStep] = pair_steps(caller, refiner=refiner, judge=judge, screen=screen)
        # ``reads: whole`` prompts on documents of several chunks: a map-reduce over the section summaries
        self.reducer = Reducer(caller, prompts, reduce_chars) if reduce_chars else None
        # The held-out exam (prompts with role "exam"): asked per chunk, never refined, judged or trained on.
        self.exam = [p for p in prompts.all if p.role == "exam" and p.enabled] if exam else []
        # A short title for documents that state none (prompts/title.md); without it the file name stays.
        self.titler = next((p for p in prompts.all if p.role == "titler" and p.enabled), None)
        # The fact ledger and its answer-first questions (qagen/generate/ledger.py), where the suite turns them on
        self.ledger = LedgerStage(caller, prompts, k=facts_k, seed=seed, refiner=refiner)
        self.facts_k = facts_k
        self.seed = seed  # a generation draw: sampled requests get seeds offset by it (--seed)

    async def title(self, doc: Document, chunks: list[Chunk]) -> tuple[Document, list[Chunk]]:
        """A model-written title for a document whose title is only its file name (one cached call)."""
        if doc.title_from != "filename" or self.titler is None or not chunks:
            return doc, chunks
        c, prompt = self.caller, self.titler
        c.stats.calls[prompt.id] += 1
        c.progress.requests_added(1)
        request = build_request(self.prompts, prompt, doc, chunks[0], c.model_for(prompt.role))
        result = await c.ask_structured(prompt, request, chunks[0])
        if result is None:
            return doc, chunks
        title = clean_title(str(result[0].model_dump().get("title", "")), doc.text)
        if not title:
            return doc, chunks
        return replace(doc, title=title, title_from="model"), [replace(ch, title=title) for ch in chunks]

    def plan(self, chunk: Chunk, n_chunks: int = 1) -> list[Prompt]:
        """The LLM perspectives to run on this chunk, then the exam. Document-scope ones run on the first chunk,
        except those that read the whole document when it has several chunks (:meth:`whole_document`)."""
        whole = {p.id for p in self.whole_document(n_chunks)}
        return [
            p
            for p in (*self.prompts.perspectives, *self.exam)
            if p.role in ("generator", "exam") and p.output != QUESTION_OUTPUT
            and (p.scope == "chunk" or (chunk.index == 0 and p.id not in whole))
        ]

    def whole_document(self, n_chunks: int) -> list[Prompt]:
        """The document-scope prompts that run once on the map-reduce passage of a document of ``n_chunks``."""
        if n_chunks <= 1 or self.reducer is None:
            return []
        return [p for p in self.prompts.perspectives
                if p.role == "generator" and p.scope == "document" and p.reads == "whole"]

    async def run_whole(self, doc: Document, chunks: list[Chunk], prompts: list[Prompt]) -> None:
        """The reduce: the whole-document prompts on the section summaries (qagen/generate/whole.py)."""
        assert self.reducer is not None
        passage = await self.reducer.passage(doc, chunks)
        await asyncio.gather(*(self.run_prompt(p, doc, passage) for p in prompts))

    async def run_chunk(self, prompts: list[Prompt], doc: Document, chunk: Chunk) -> None:
        """The chunk's perspectives and, where the suite has it, its fact ledger (with the ledger's questions and
        cloze rows), side by side; then everything is stored."""
        async with asyncio.TaskGroup() as tg:  # a task group: one failing (a fail-fast trip) cancels the others
            drafted = [[tg.create_task(self.run_prompt(p, doc, chunk, keep=False, sample=s)) for s in range(p.samples)]
                       for p in prompts]
            ledger = tg.create_task(self.ledger.run(doc, chunk)) if self.ledger.active else None
        rows = [(p, [pair for task in tasks for pair in task.result()])
                for p, tasks in zip(prompts, drafted, strict=True)]
        if ledger is not None:
            rows += ledger.result()
            for prompt, pairs in ledger.result():
                self.caller.stats.pairs[prompt.id] += len(pairs)
                self.caller.progress.pairs_added(len(pairs))
        self.caller.store.add_pairs(self.caller.run_id, [
            (pair, sort_key(doc, chunk, prompt.id, i)) for prompt, pairs in rows for i, pair in enumerate(pairs)])

    async def run_prompt(self, prompt: Prompt, doc: Document, chunk: Chunk, *, keep: bool = True,
                         quote: str = "", sample: int = 0, **variables_: object) -> list[QAPair]:
        """One perspective call on one chunk; drafts go through the refiner when one is set.

        ``keep``: store the pairs now (else the caller stores them, :meth:`run_chunk`). ``quote``: the supporting
        quote of every pair, set by code (the facts top-up asks no quote of its own); ``sample``: the prompt's
        extra sample number (``samples:``), sent with that seed at the prompt's sample temperature; ``variables_``
        go to the prompt's template.
        """
        c = self.caller
        c.stats.calls[prompt.id] += 1
        model = c.model_for(prompt.role)
        asked = replace(prompt, temperature=prompt.sample_temperature) if sample else prompt
        seed = (sample + 1000 * self.seed) or None
        request = build_request(self.prompts, asked, doc, chunk, model, quote=False if quote else None,
                                seed=seed, **variables_)
        result = await c.ask_structured(asked, request, chunk, quote=False if quote else None)
        if result is None:
            return []
        obj, request = result
        variables = prompt_variables(doc, chunk)
        qa = [(q, a, quote or found) for q, a, found in outputs_to_qa(prompt, obj, variables)]
        pairs = [
            QAPair(
                # the chunk ID too: an edited document reuses its unchanged chunks' requests under new chunk IDs
                pair_id=ids.hash_str("pair", request.key, chunk.chunk_id, str(i), q, a),
                chunk_id=chunk.chunk_id,
                doc_id=doc.doc_id,
                perspective=prompt.id,
                question=q,
                answer=a,
                request_key=request.key,
                # the name we asked for: servers may report a local file path instead
                model=model,
                extra=(("quote", quote),) if quote else (),
            )
            for i, (q, a, quote) in enumerate(qa)
        ]
        pairs = await run_steps(self.steps, c, pairs, prompt, doc, chunk)
        if keep:
            c.store.add_pairs(c.run_id, [(p, sort_key(doc, chunk, prompt.id, i)) for i, p in enumerate(pairs)])
        c.stats.pairs[prompt.id] += len(pairs)
        c.progress.pairs_added(len(pairs))
        return pairs
