"""The executor contract: a shard function both executors call, and the driver's one merge.

A *shard* is a stream of documents and the stages that work on them: each
document is chunked, stored, and every chunk x perspective call runs
concurrently, bounded so memory stays flat. ``Shard.run`` returns a
``ShardResult`` (what was read, the counters, a fail-fast trip). The local
executor runs one shard over the whole corpus in this process; the Ray
executor (``qagen.pipeline.ray``) runs one per content-ID shard on its
workers and sends the results back as JSON. Either way the driver adds each
result to one ``RunTotals`` and the rest of the run (identity, curation,
export) reads those.
"""

from __future__ import annotations

import asyncio
import pickle
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial

from qagen.core.errors import FailFast
from qagen.core.progress import IngestProgress
from qagen.core.types import Document, SkippedFile
from qagen.corpus.chunker import Chunker
from qagen.generate.caller import GenStats
from qagen.generate.refine import RefineStats
from qagen.pipeline.assemble import Stages
from qagen.store import Store


@dataclass
class ShardResult:
    """What one shard did: documents read (path, chunks), files skipped, counters, a fail-fast trip."""

    shard: int = 0
    docs: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stats: GenStats = field(default_factory=GenStats)
    refine: RefineStats = field(default_factory=RefineStats)
    best_of_replaced: int = 0
    fail_fast: FailFast | None = None
    seconds: float = 0.0
    error: str = ""

    def to_bytes(self) -> bytes:
        """For a Ray Data row: the whole dataclass, pickled (FailFast pickles with its fields), so no field
        can be left out of a hand-written list."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> ShardResult:
        result = pickle.loads(data)  # written by our own shard workers in this run
        assert isinstance(result, cls)
        return result


@dataclass
class RunTotals:
    """Every shard's result added up: what the summary reports."""

    documents_read: int = 0
    chunks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stats: GenStats = field(default_factory=GenStats)
    refine: RefineStats = field(default_factory=RefineStats)
    best_of_replaced: int = 0
    pairs: Counter[str] = field(default_factory=Counter)  # per perspective, identity pairs included

    def add(self, result: ShardResult) -> None:
        self.documents_read += len(result.docs)
        self.chunks += sum(n for _, n in result.docs)
        self.skipped += result.skipped
        self.stats.add(result.stats)
        self.refine.add(result.refine)
        self.best_of_replaced += result.best_of_replaced
        self.pairs.update(result.stats.pairs)


class _Recording:
    """Wraps the driver's progress: also records each document read or skipped in the shard result."""

    def __init__(self, inner: IngestProgress, result: ShardResult):
        self.inner, self.result = inner, result

    def doc_read(self, path: str, n_chunks: int) -> None:
        self.result.docs.append((path, n_chunks))
        self.inner.doc_read(path, n_chunks)

    def doc_skipped(self, path: str, reason: str) -> None:
        self.result.skipped.append((path, reason))
        self.inner.doc_skipped(path, reason)


class Shard:
    """One shard's work. ``result`` fills in as it goes, so an interrupted shard still says what it did."""

    def __init__(self, stages: Stages, store: Store, chunker: Chunker, run_id: int, max_pending: int,
                 progress: IngestProgress, shard: int = 0):
        self.stages, self.store, self.chunker, self.run_id = stages, store, chunker, run_id
        self.max_pending = max_pending
        self.result = ShardResult(shard, stats=stages.caller.stats,
                                  refine=stages.refiner.stats if stages.refiner else RefineStats())
        self.progress = _Recording(progress, self.result)

    async def run(self, documents: Iterable[Document | SkippedFile]) -> ShardResult:
        """Every document through the stages; a fail-fast trip is returned, other errors raised."""
        try:
            await self._generate(iter(documents))
        except FailFast as trip:
            self.result.fail_fast = trip
        except BaseExceptionGroup as group:
            # A task failed with an unexpected error (LLM errors are handled per
            # request): surface the first one itself, not the task-group wrapper.
            leaf = _first_leaf(group)
            if not isinstance(leaf, FailFast):
                raise leaf from None
            self.result.fail_fast = leaf
        finally:
            for llm in self.stages.caller.backends():
                await llm.aclose()
            if self.stages.judge is not None:
                self.result.best_of_replaced = self.stages.judge.stats.best_of_replaced
        return self.result

    async def _generate(self, documents: Iterator[Document | SkippedFile]) -> None:
        gate = asyncio.Semaphore(self.max_pending)  # bounds queued work: memory stays flat
        generator, progress = self.stages.generator, self.progress

        async def one(make: Callable[[], Awaitable[object]], permits: int = 1) -> None:
            try:  # the coroutine is made here: a task the group cancels before it starts leaves none un-awaited
                await make()
            finally:
                for _ in range(permits):
                    gate.release()

        async with asyncio.TaskGroup() as tg:
            while True:
                item = await asyncio.to_thread(next, documents, None)  # reading may block (PDF conversion)
                if item is None:
                    break
                if isinstance(item, SkippedFile):
                    progress.doc_skipped(item.path, item.reason)
                    continue
                doc: Document = item
                chunks = await asyncio.to_thread(self.chunker.chunk, doc)
                doc, chunks = await generator.title(doc, chunks)  # only documents that state no title
                self.store.add_document(self.run_id, doc, chunks)
                progress.doc_read(doc.path, len(chunks))
                for chunk in chunks:
                    planned = generator.plan(chunk, len(chunks))
                    calls = sum(p.samples for p in planned)  # a prompt with ``samples: R`` is R calls
                    self.stages.caller.progress.requests_added(calls)  # the ledger adds its own as it plans them
                    # one task per chunk, holding a permit per call (the ledger's requests count as one)
                    permits = min(max(calls + generator.ledger.active, 1), self.max_pending)
                    for _ in range(permits):
                        await gate.acquire()
                    tg.create_task(one(partial(generator.run_chunk, planned, doc, chunk), permits))
                    if self.stages.rewriter is not None:  # the cpt corpus's rewrites of this chunk (--cpt)
                        await gate.acquire()
                        tg.create_task(one(partial(self.stages.rewriter.run, doc, chunk)))
                whole = generator.whole_document(len(chunks))
                if whole:  # the reduce over the section summaries above (shared with their own requests)
                    self.stages.caller.progress.requests_added(len(whole))
                    await gate.acquire()
                    tg.create_task(one(partial(generator.run_whole, doc, chunks, whole)))


def run_local(documents: Iterable[Document | SkippedFile], shard: Shard, totals: RunTotals) -> None:
    """The local executor: the whole corpus as one shard, in this process."""
    try:
        result = asyncio.run(shard.run(documents))
    finally:
        totals.add(shard.result)  # an interrupted run still reports what it finished
    if result.fail_fast is not None:
        raise result.fail_fast


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
