"""``ingest``: read -> chunk -> generate -> identity -> export, as one library call.

The CLI is a thin wrapper around :func:`ingest`. Documents stream through
(never the whole corpus in memory); chunk x perspective calls run
concurrently, bounded so memory stays flat.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import ids
from .chunker import Chunker, ChunkerSettings
from .config import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_TOKENS,
    EMBEDDED_CHUNK_OVERLAP,
    EMBEDDED_CHUNK_TOKENS,
    Settings,
)
from .embedded import MODEL_NAME, EmbeddedLLM, ServerConfig, find_model
from .export import contaminated_pairs, export_dpo, export_run
from .generate import Generator, NullProgress, Progress
from .identity import identity_pairs
from .llm import LLM, OpenAIHTTP
from .models import Document, SkippedFile
from .prompts import PromptSet, load_prompts
from .reader import iter_documents
from .refine import Refiner, RefineSettings
from .store import Store

log = logging.getLogger(__name__)


class IngestError(RuntimeError):
    """The ingest command cannot run (bad input, unreachable endpoint...)."""


class IngestProgress(Progress):
    def doc_read(self, path: str, n_chunks: int) -> None: ...

    def doc_skipped(self, path: str, reason: str) -> None: ...


class _NullIngestProgress(NullProgress):
    def doc_read(self, path: str, n_chunks: int) -> None:
        pass

    def doc_skipped(self, path: str, reason: str) -> None:
        pass


@dataclass
class Summary:
    status: str = "ok"  # ok | partial | failed
    docs_dir: str = ""
    out_dir: str = ""
    backend: str = ""
    model: str = ""
    group_id: str = ""
    documents_read: int = 0
    documents_skipped: list[dict[str, str]] = field(default_factory=list)
    chunks: int = 0
    chunk_unit: str = ""
    requests_sent: int = 0
    requests_cached: int = 0
    requests_failed: int = 0
    http_retries: int = 0
    corrective_retries: int = 0
    invalid_replies: int = 0
    length_cutoffs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls_per_perspective: dict[str, int] = field(default_factory=dict)
    pairs_per_perspective: dict[str, int] = field(default_factory=dict)
    pairs_total: int = 0
    train_pairs: int = 0
    eval_pairs: int = 0
    split_by: str = ""
    train_path: str = ""
    eval_path: str = ""
    state_db: str = ""
    refined: bool = False
    drafted: int = 0  # draft pairs sent through the critic loop
    revisions_histogram: dict[str, int] = field(default_factory=dict)  # revisions per pair -> pairs
    stop_reasons: dict[str, int] = field(default_factory=dict)
    dpo_pairs: int = 0
    dpo_path: str = ""
    contaminated_removed: int = 0
    contaminated_examples: list[str] = field(default_factory=list)
    failure_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_endpoint(base_url: str, api_key: str, timeout: float = 10.0) -> None:
    """Fail fast with a clear message when the endpoint cannot be reached at all."""
    request = urllib.request.Request(f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - user-configured endpoint
            return
    except urllib.error.HTTPError:
        return  # it answered: some servers have no /models, and auth is checked per request
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise IngestError(f"cannot reach the LLM endpoint {base_url}: {reason}") from None


def chunker_settings(settings: Settings) -> ChunkerSettings:
    size = settings.chunk_size or (EMBEDDED_CHUNK_TOKENS if settings.uses_embedded else DEFAULT_CHUNK_TOKENS)
    default_overlap = EMBEDDED_CHUNK_OVERLAP if settings.uses_embedded else DEFAULT_CHUNK_OVERLAP
    overlap = settings.chunk_overlap if settings.chunk_overlap is not None else min(default_overlap, size // 4)
    return ChunkerSettings(chunk_size=size, chunk_overlap=overlap, tokenizer=settings.tokenizer)


def make_llm(settings: Settings) -> tuple[LLM, str]:
    """The generator backend and the model name that goes into request keys."""
    if settings.uses_embedded:
        llm = EmbeddedLLM(
            ServerConfig(
                model_path=str(find_model()),
                threads=settings.embedded_threads,
                n_parallel=settings.embedded_parallel,
                ctx_per_slot=settings.embedded_ctx_per_slot,
            ),
            concurrency=max(settings.concurrency, settings.embedded_parallel),
            timeout=settings.request_timeout,
            max_retries=settings.max_retries,
        )
        return llm, MODEL_NAME  # the server starts on the first cache miss
    assert settings.base_url
    if not settings.model:
        raise IngestError("--model is required with --base-url (the model name the server serves)")
    check_endpoint(settings.base_url, settings.api_key_value())
    llm = OpenAIHTTP(
        settings.base_url,
        api_key=settings.api_key_value(),
        concurrency=settings.concurrency,
        timeout=settings.request_timeout,
        max_retries=settings.max_retries,
        system_role=settings.system_role,
    )
    return llm, settings.model


async def _generate(
    docs_dir: Path,
    chunker: Chunker,
    generator: Generator,
    store: Store,
    run_id: int,
    summary: Summary,
    max_pending: int,
    progress: IngestProgress,
) -> None:
    gate = asyncio.Semaphore(max_pending)  # bounds queued work: memory stays flat

    async def one(task_coro: object) -> None:
        try:
            await task_coro  # type: ignore[misc]
        finally:
            gate.release()

    documents = iter_documents(docs_dir)
    async with asyncio.TaskGroup() as tg:
        while True:
            item = await asyncio.to_thread(next, documents, None)  # reading may block (PDF conversion)
            if item is None:
                break
            if isinstance(item, SkippedFile):
                summary.documents_skipped.append({"path": item.path, "reason": item.reason})
                progress.doc_skipped(item.path, item.reason)
                continue
            doc: Document = item
            chunks = await asyncio.to_thread(chunker.chunk, doc)
            store.add_document(run_id, doc, chunks)
            summary.documents_read += 1
            summary.chunks += len(chunks)
            progress.doc_read(doc.path, len(chunks))
            for chunk in chunks:
                planned = generator.plan(chunk)
                progress.requests_added(len(planned))
                for prompt in planned:
                    await gate.acquire()
                    tg.create_task(one(generator.run_prompt(prompt, doc, chunk)))


def _add_identity(store: Store, prompts: PromptSet, run_id: int, group_id: str) -> int:
    try:
        prompt = prompts.by_id("identity")
    except KeyError:
        return 0
    if not prompt.enabled:
        return 0
    about = {rp.pair.doc_id: rp.pair.answer for rp in store.run_pairs(run_id, perspective="about")}
    added = 0
    for doc_id in store.run_doc_ids(run_id):
        row = store.db.execute(
            "SELECT c.chunk_id, d.title, r.path FROM chunks c JOIN documents d ON d.doc_id=c.doc_id "
            "JOIN run_docs r ON r.doc_id=d.doc_id AND r.run_id=? WHERE c.doc_id=? ORDER BY c.idx LIMIT 1",
            (run_id, doc_id),
        ).fetchone()
        if row is None:
            continue
        pairs = identity_pairs(
            prompt, doc_id=doc_id, chunk_id=row[0], title=row[1], about=about.get(doc_id, ""), group_id=group_id
        )
        keys = [f"{row[2]}\x00{0:06d}\x00{prompt.id}\x00{i:04d}" for i in range(len(pairs))]
        store.add_pairs(run_id, list(zip(pairs, keys, strict=True)))
        added += len(pairs)
    return added


def ingest(
    docs_dir: Path,
    out_dir: Path,
    settings: Settings,
    *,
    prompts_dir: Path | None = None,
    progress: IngestProgress | None = None,
) -> Summary:
    started = time.perf_counter()
    progress = progress or _NullIngestProgress()  # type: ignore[assignment]
    assert progress is not None
    if not docs_dir.exists():
        raise IngestError(f"documents folder not found: {docs_dir}")
    if not docs_dir.is_dir():
        raise IngestError(f"not a folder: {docs_dir}")
    prompts = load_prompts(prompts_dir)
    if settings.decontaminate:
        from .quality import load_questions

        load_questions([Path(f) for f in settings.decontaminate])  # ValueError with the path if unusable
    chunker = Chunker(chunker_settings(settings))
    summary = Summary(docs_dir=str(docs_dir), out_dir=str(out_dir), chunk_unit=chunker.unit)

    with Store(out_dir) as store:
        summary.state_db = str(store.path)
        llm, model = make_llm(settings)  # an unreachable endpoint fails here, before a run is recorded
        safe_settings = settings.model_dump(exclude={"api_key"})
        run_id = store.start_run("ingest", {**safe_settings, "docs_dir": str(docs_dir)})
        summary.backend, summary.model = llm.name, model
        generator = Generator(store, llm, prompts, model, run_id, progress)
        if settings.refine:
            generator.refiner = Refiner(generator, prompts, RefineSettings(settings.max_rounds, settings.min_rounds))
        max_pending = max(4 * settings.concurrency, 16)
        try:
            asyncio.run(_run_and_close(docs_dir, chunker, generator, store, run_id, summary, max_pending, progress, llm))
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM: everything finished is already in the store;
            # write it out, then report the interruption.
            _finish(store, prompts, settings, generator, llm, run_id, out_dir, summary, started, "interrupted")
            raise Interrupted(summary) from None
        except BaseException:
            store.finish_run(run_id, "failed", summary.to_dict())
            raise
        _finish(store, prompts, settings, generator, llm, run_id, out_dir, summary, started, None)
    return summary


class Interrupted(KeyboardInterrupt):
    """The run was interrupted; ``summary`` describes what was finished and written."""

    def __init__(self, summary: Summary):
        super().__init__("interrupted")
        self.summary = summary


def _finish(
    store: Store,
    prompts: PromptSet,
    settings: Settings,
    generator: Generator,
    llm: LLM,
    run_id: int,
    out_dir: Path,
    summary: Summary,
    started: float,
    status: str | None,
) -> None:
    """Identity pairs, export and the run record, from what the store holds for this run."""
    doc_ids = store.run_doc_ids(run_id)
    group_id = ids.group_id(doc_ids) if doc_ids else ""
    summary.group_id = group_id
    stats = generator.stats
    pairs = Counter(stats.pairs)
    if doc_ids:
        pairs["identity"] += _add_identity(store, prompts, run_id, group_id)
    contaminated = contaminated_pairs(store, run_id, [Path(f) for f in settings.decontaminate]) if settings.decontaminate else {}
    summary.contaminated_removed = len(contaminated)
    summary.contaminated_examples = [f"{store_question(store, pid)!r} ~ {hit!r}" for pid, hit in list(contaminated.items())[:3]]
    result = export_run(
        store, run_id, out_dir, group_id, eval_fraction=settings.eval_fraction, split_by=settings.split_by,
        exclude=frozenset(contaminated),
    )
    summary.requests_sent, summary.requests_cached, summary.requests_failed = stats.sent, stats.cached, stats.failed
    summary.http_retries = int(getattr(llm, "retries", 0))
    summary.corrective_retries, summary.invalid_replies = stats.corrective_retries, stats.invalid
    summary.length_cutoffs = stats.length_cutoffs
    summary.prompt_tokens, summary.completion_tokens = stats.prompt_tokens, stats.completion_tokens
    summary.calls_per_perspective = dict(sorted(stats.calls.items()))
    summary.pairs_per_perspective = dict(sorted(pairs.items()))
    summary.pairs_total = result.train_pairs + result.eval_pairs
    summary.train_pairs, summary.eval_pairs, summary.split_by = result.train_pairs, result.eval_pairs, result.split_by
    summary.train_path, summary.eval_path = str(result.train_path), str(result.eval_path)
    summary.failure_examples = stats.failure_examples
    refiner = generator.refiner
    if refiner is not None:
        dpo_path, dpo_pairs = export_dpo(store, run_id, out_dir, group_id)
        summary.refined, summary.drafted = True, refiner.stats.drafted
        summary.revisions_histogram = {str(k): v for k, v in sorted(refiner.stats.revisions.items())}
        summary.stop_reasons = dict(sorted(refiner.stats.stops.items()))
        summary.dpo_pairs, summary.dpo_path = dpo_pairs, str(dpo_path)
    if status is not None:
        summary.status = status
    elif summary.documents_read == 0:
        summary.status = "failed"
        summary.failure_examples.append("no readable documents")
    elif stats.failed or summary.pairs_total == 0:
        summary.status = "partial" if summary.pairs_total else "failed"
    summary.seconds = round(time.perf_counter() - started, 2)
    store.finish_run(run_id, summary.status, summary.to_dict())


async def _run_and_close(
    docs_dir: Path,
    chunker: Chunker,
    generator: Generator,
    store: Store,
    run_id: int,
    summary: Summary,
    max_pending: int,
    progress: IngestProgress,
    llm: LLM,
) -> None:
    try:
        await _generate(docs_dir, chunker, generator, store, run_id, summary, max_pending, progress)
    except BaseExceptionGroup as group:
        # A task failed with an unexpected error (LLM errors are handled per
        # request): surface the first one itself, not the task-group wrapper.
        raise _first_leaf(group) from None
    finally:
        await llm.aclose()


def store_question(store: Store, pair_id: str) -> str:
    row = store.db.execute("SELECT question FROM pairs WHERE pair_id=?", (pair_id,)).fetchone()
    return row[0] if row else ""


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
