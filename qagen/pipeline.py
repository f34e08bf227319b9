"""``ingest``: read -> chunk -> generate -> identity -> export, as one library call.

The CLI is a thin wrapper around :func:`ingest`. Documents stream through
(never the whole corpus in memory); chunk x perspective calls run
concurrently, bounded so memory stays flat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import xxhash

from . import ids
from .chunker import Chunker, ChunkerSettings
from .config import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_TOKENS,
    EMBEDDED_CHUNK_OVERLAP,
    EMBEDDED_CHUNK_TOKENS,
    Settings,
)
from .curate import CurateResult, CurateSettings, curate
from .embedded import MODEL_NAME, EmbeddedLLM, ServerConfig, find_model
from .export import export_dpo, export_run
from .generate import Alarm, FailFast, Generator, NullProgress, Progress
from .identity import identity_pairs
from .judge import Judge
from .llm import LLM, OpenAIHTTP
from .models import Document, SkippedFile
from .prompts import PromptSet, load_prompts
from .reader import iter_documents, iter_entries
from .refine import Refiner, RefineSettings
from .roles import make_role_llms
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
    # Per stage: what the judge, grounding, dedup and decontamination did (curate.py)
    judged: bool = False
    judge_method: str = ""  # logprobs | parsed | mixed: "parsed" means the endpoint gave no logprobs
    judge_threshold: float = 0.0
    best_of: int = 1
    best_of_replaced: int = 0  # drafts whose answer lost to a sampled one
    judge_passed: int = 0
    judge_rejected: int = 0
    judge_failed: int = 0
    grounding_checked: int = 0
    grounded: int = 0
    ungrounded: int = 0
    ungrounded_policy: str = ""
    duplicates_removed: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)  # verdict -> pairs
    verdict_examples: dict[str, str] = field(default_factory=dict)
    pairs_generated: int = 0  # before curation (after refinement)
    exported_per_perspective: dict[str, int] = field(default_factory=dict)
    yield_per_perspective: dict[str, float] = field(default_factory=dict)  # exported pairs per call
    chunks_without_pairs: int = 0
    chunks_without_pairs_examples: list[str] = field(default_factory=list)
    contaminated_removed: int = 0
    contaminated_examples: list[str] = field(default_factory=list)
    error: str = ""
    unchanged: bool = False  # nothing changed since the last run: its dataset was kept as it is
    input_fingerprint: str = ""  # hash of the corpus bytes, settings and prompts (the unchanged check)
    outputs: dict[str, str] = field(default_factory=dict)  # output file -> hash, as this run left them
    report_path: str = ""
    card_path: str = ""
    failure_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_endpoint(base_url: str, api_key: str, timeout: float = 10.0) -> None:
    """Fail fast with a clear message when the endpoint cannot be reached at all."""
    request = urllib.request.Request(f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
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
    """The generator backend and the model name that goes into request keys.

    One endpoint: ``OpenAIHTTP``. Several (or ``adaptive``): ``Balanced`` over
    them. ``backend="vllm"``: an in-process vLLM engine. Otherwise the embedded model.
    """
    if settings.backend == "vllm":
        from .vllm_backend import VLLMBackend, VLLMMissing

        if not settings.model:
            raise IngestError("--model is required with --backend vllm (a local path or model name vLLM can load)")
        try:
            return VLLMBackend.from_settings(settings), settings.model
        except VLLMMissing as exc:
            raise IngestError(str(exc)) from None
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
    endpoints = settings.endpoints
    if not settings.model:
        raise IngestError("--model is required with --base-url (the model name the server serves)")
    if len(endpoints) == 1 and not settings.adaptive:
        check_endpoint(endpoints[0], settings.api_key_value())
        llm = OpenAIHTTP(
            endpoints[0],
            api_key=settings.api_key_value(),
            concurrency=settings.concurrency,
            timeout=settings.request_timeout,
            max_retries=settings.max_retries,
            system_role=settings.system_role,
            transport_kind=settings.transport,
        )
        return llm, settings.model
    return _balanced(settings, endpoints), settings.model


def _balanced(settings: Settings, endpoints: list[str]) -> LLM:
    """Several endpoints: those unreachable now start marked down (the health probe may bring them back)."""
    from .balance import Balanced

    down: list[str] = []
    for url in endpoints:
        try:
            check_endpoint(url, settings.api_key_value())
        except IngestError as exc:
            log.warning("%s", exc)
            down.append(url)
    if len(down) == len(endpoints):
        raise IngestError(f"cannot reach any of the LLM endpoints: {', '.join(endpoints)}")
    llm = Balanced(
        endpoints,
        api_key=settings.api_key_value(),
        per_endpoint=settings.per_endpoint_concurrency or settings.concurrency,
        max_per_endpoint=settings.max_concurrency,
        adaptive=settings.adaptive,
        transport_kind=settings.transport,
        timeout=settings.request_timeout,
        max_retries=settings.max_retries,
        system_role=settings.system_role,
    )
    for endpoint in llm.endpoints:
        endpoint.healthy = endpoint.name not in down
    return llm


async def _generate(
    documents: Iterator[Document | SkippedFile],
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


def build_generator(
    store: Store, llm: LLM, model: str, prompts: PromptSet, settings: Settings, run_id: int, progress: Progress
) -> Generator:
    """The generator with the stages the settings turn on (roles, fail-fast alarms, refiner, judge)."""
    generator = Generator(store, llm, prompts, model, run_id, progress)
    generator.roles = make_role_llms(settings, llm)
    if settings.fail_fast_after:
        generator.alarms = {
            "parse": Alarm("parse", settings.max_parse_failure_rate, settings.fail_fast_after),
            "judge": Alarm("judge", settings.max_reject_rate, settings.fail_fast_after),
        }
    if settings.refine:
        generator.refiner = Refiner(generator, prompts, RefineSettings(settings.rounds, settings.min_rounds))
    if settings.judge:
        generator.judge = Judge(generator, prompts, settings.judge_threshold, settings.best_of)
    return generator


def max_pending(settings: Settings) -> int:
    """Queued perspective calls at most (bounds memory; several times what is in flight)."""
    return max(4 * settings.concurrency, 16)


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
    prompts = load_prompts(prompts_dir, settings.refine_style)
    if settings.best_of > 1 and not settings.judge:
        raise IngestError("--best-of needs the judge (it keeps the best-judged answer); drop --no-judge")
    if settings.decontaminate:
        from .quality import load_questions

        load_questions([Path(f) for f in settings.decontaminate])  # ValueError with the path if unusable
    chunker = Chunker(chunker_settings(settings))
    summary = Summary(docs_dir=str(docs_dir), out_dir=str(out_dir), chunk_unit=chunker.unit)

    with Store(out_dir) as store:
        summary.state_db = str(store.path)
        inputs = input_fingerprint(docs_dir, settings, prompts)
        if _unchanged(store, out_dir, inputs, settings, summary, started):
            return summary  # nothing new since the last run: no model, no replay, the dataset stays
        summary.input_fingerprint = inputs
        llm, model = make_llm(settings)  # an unreachable endpoint fails here, before a run is recorded
        safe_settings = settings.model_dump(exclude={"api_key"})
        run_id = store.start_run("ingest", {**safe_settings, "docs_dir": str(docs_dir)})
        summary.backend, summary.model = llm.name, model
        generator = build_generator(store, llm, model, prompts, settings, run_id, progress)
        try:
            if settings.executor == "ray":
                from .distributed import run_distributed

                run_distributed(docs_dir, settings, prompts_dir, store, run_id, generator, summary, progress)
            else:
                asyncio.run(_run_and_close(iter_documents(docs_dir), chunker, generator, store, run_id, summary,
                                           max_pending(settings), progress, generator.backends()))
        except FailFast as alarm:
            summary.status, summary.error = "failed", str(alarm)
            summary.seconds = round(time.perf_counter() - started, 2)
            store.finish_run(run_id, "failed", summary.to_dict())
            raise
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM: everything finished is already in the store;
            # write it out, then report the interruption.
            _finish(store, prompts, settings, generator, llm, run_id, out_dir, summary, started, "interrupted")
            raise Interrupted(summary) from None
        except BaseException:
            store.finish_run(run_id, "failed", summary.to_dict())
            raise
        _finish(store, prompts, settings, generator, llm, run_id, out_dir, summary, started, None)
        if settings.report:
            _write_report(store, run_id, out_dir, settings, summary)
        if summary.status == "ok":  # what the next run's unchanged check compares with
            summary.outputs = _outputs(out_dir)
            store.finish_run(run_id, summary.status, summary.to_dict())
    return summary


# Settings that change how fast a run goes, never what it produces.
_SPEED_ONLY = {
    "api_key", "base_url", "extra_base_urls", "concurrency", "transport", "request_timeout", "max_retries",
    "per_endpoint_concurrency", "adaptive", "max_concurrency", "executor", "ray_address", "workers", "shards",
    "embedded_threads", "embedded_parallel", "embedded_ctx_per_slot", "fail_fast_after",
    "critic_base_url", "regenerator_base_url", "judge_base_url",
}
OUTPUT_FILES = ("train.jsonl", "eval.jsonl", "dpo.jsonl", "report.html", "README.md")


def input_fingerprint(docs_dir: Path, settings: Settings, prompts: PromptSet) -> str:
    """One hash of everything a run's dataset depends on: every file's bytes and path, settings, prompts, qagen.

    Raw bytes are hashed (xxh3, GB/s), not parsed: deciding that nothing
    changed costs one read of the corpus, never a PDF conversion.
    """
    from . import __version__

    h = xxhash.xxh3_128()
    what = settings.model_dump(mode="json", exclude=_SPEED_ONLY)
    what.update(rounds=settings.rounds, embedded=settings.uses_embedded, qagen=__version__,
                prompts=sorted((p.id, p.hash) for p in (prompts.system, prompts.context, *prompts.all)))
    for name in ("decontaminate",):  # files the run reads besides the corpus
        what[name] = [(f, _file_hash(Path(f))) for f in settings.decontaminate]
    h.update(json.dumps(what, sort_keys=True, default=str).encode())
    for entry in iter_entries(docs_dir):
        if isinstance(entry, SkippedFile):
            h.update(f"\x00skip\x00{entry.path}\x00{entry.reason}".encode("utf-8", "backslashreplace"))
        else:
            h.update(f"\x00file\x00{entry[0]}\x00{_file_hash(entry[1])}".encode("utf-8", "backslashreplace"))
    return h.hexdigest()


def _file_hash(path: Path) -> str:
    h = xxhash.xxh3_128()
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    return h.hexdigest()


def _outputs(out_dir: Path) -> dict[str, str]:
    return {name: _file_hash(out_dir / name) for name in OUTPUT_FILES if (out_dir / name).exists()}


def _unchanged(store: Store, out_dir: Path, inputs: str, settings: Settings, summary: Summary, started: float) -> bool:
    """True (and a run recorded) when the last finished run had these very inputs and its files are intact."""
    last = store.last_clean_run("ingest")
    if not last or last.get("input_fingerprint") != inputs:
        return False
    written = last.get("outputs") or {}
    if not written or _outputs(out_dir) != written or (settings.report and "report.html" not in written):
        return False  # a file was deleted or edited: write them again (from the cache)
    here = {"docs_dir": summary.docs_dir, "out_dir": summary.out_dir, "state_db": summary.state_db}
    for name, value in last.items():
        if hasattr(summary, name):
            setattr(summary, name, value)
    for name, value in here.items():
        setattr(summary, name, value)
    for name, file in (("train_path", "train.jsonl"), ("eval_path", "eval.jsonl"), ("dpo_path", "dpo.jsonl"),
                       ("report_path", "report.html"), ("card_path", "README.md")):
        if getattr(summary, name):  # the folder may have moved since (a CI cache restored elsewhere)
            setattr(summary, name, str(out_dir / file))
    summary.requests_cached = int(last.get("requests_sent", 0)) + int(last.get("requests_cached", 0))
    summary.requests_sent = summary.requests_failed = summary.http_retries = 0
    summary.prompt_tokens = summary.completion_tokens = 0
    summary.unchanged = True
    summary.seconds = round(time.perf_counter() - started, 2)
    run_id = store.start_run("ingest", {**settings.model_dump(exclude={"api_key"}), "docs_dir": str(summary.docs_dir)})
    store.finish_run(run_id, "ok", summary.to_dict())
    return True


def _write_report(store: Store, run_id: int, out_dir: Path, settings: Settings, summary: Summary) -> None:
    """report.html and the dataset card. The dataset is already written: a failure here is reported, not fatal."""
    from .card import write_card
    from .report import write_report

    try:
        summary.report_path = str(write_report(store, run_id, out_dir))
        summary.card_path = str(write_card(store, run_id, out_dir, license=settings.license))
    except Exception as exc:  # noqa: BLE001 - any report bug must not cost the user their dataset
        log.exception("writing the report failed")
        summary.failure_examples.append(f"report: {type(exc).__name__}: {exc}")


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
    curated = curate(store, run_id, prompts, curate_settings(settings), judged=generator.judge is not None)
    _curation_summary(summary, curated, store, run_id, stats.calls, settings)
    result = export_run(store, run_id, out_dir, group_id, eval_fraction=settings.eval_fraction, split_by=settings.split_by)
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
    if generator.judge is not None:
        summary.best_of_replaced = generator.judge.stats.best_of_replaced
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
    elif summary.judged and summary.judge_passed == 0 and summary.judge_rejected > 0:
        # A dataset the judge rejected entirely is an error, not a success.
        summary.status = "failed"
        summary.error = f"the judge rejected all {summary.judge_rejected} pairs (threshold {settings.judge_threshold})"
    elif stats.failed or summary.pairs_total == 0 or summary.judge_failed:
        summary.status = "partial" if summary.pairs_total else "failed"
    summary.seconds = round(time.perf_counter() - started, 2)
    store.finish_run(run_id, summary.status, summary.to_dict())


async def _run_and_close(
    documents: Iterator[Document | SkippedFile],
    chunker: Chunker,
    generator: Generator,
    store: Store,
    run_id: int,
    summary: Summary,
    max_pending: int,
    progress: IngestProgress,
    llms: list[LLM],
) -> None:
    try:
        await _generate(documents, chunker, generator, store, run_id, summary, max_pending, progress)
    except BaseExceptionGroup as group:
        # A task failed with an unexpected error (LLM errors are handled per
        # request): surface the first one itself, not the task-group wrapper.
        raise _first_leaf(group) from None
    finally:
        for llm in {id(x): x for x in llms}.values():
            await llm.aclose()


def curate_settings(settings: Settings) -> CurateSettings:
    return CurateSettings(
        judge_threshold=settings.judge_threshold,
        grounding_threshold=settings.grounding_threshold,
        ungrounded=settings.ungrounded,
        dedup=settings.dedup,
        dedup_threshold=settings.dedup_threshold,
        decontaminate=tuple(Path(f) for f in settings.decontaminate),
    )


def _curation_summary(
    summary: Summary, curated: CurateResult, store: Store, run_id: int, calls: Counter[str], settings: Settings
) -> None:
    counts = curated.counts
    summary.verdicts = dict(sorted(counts.items()))
    summary.verdict_examples = dict(sorted(curated.examples.items()))
    summary.pairs_generated = sum(counts.values())
    summary.judge_rejected, summary.judge_failed = counts["judge_rejected"], counts["judge_failed"]
    summary.judged = bool(curated.judge_methods) or bool(counts["judge_failed"])
    summary.judge_method = "/".join(sorted(curated.judge_methods))
    summary.judge_threshold = settings.judge_threshold
    summary.best_of = settings.best_of
    summary.judge_passed = curated.judge_passed
    summary.grounding_checked, summary.grounded, summary.ungrounded = (
        curated.grounding_checked, curated.grounded, curated.ungrounded)
    summary.ungrounded_policy = settings.ungrounded
    summary.duplicates_removed = counts["duplicate"]
    summary.contaminated_removed = counts["contaminated"]
    if "contaminated" in curated.examples:
        summary.contaminated_examples = [curated.examples["contaminated"]]
    exported = store.exported_per_perspective(run_id)
    summary.exported_per_perspective = dict(sorted(exported.items()))
    summary.yield_per_perspective = {
        name: round(exported.get(name, 0) / n, 2) for name, n in sorted(calls.items()) if n
    }
    summary.chunks_without_pairs, empty = store.chunks_without_pairs(run_id)
    summary.chunks_without_pairs_examples = [f"{path} part {idx + 1} ({section or 'no section'})"
                                             for path, idx, section in empty]


def store_question(store: Store, pair_id: str) -> str:
    row = store.db.execute("SELECT question FROM pairs WHERE pair_id=?", (pair_id,)).fetchone()
    return row[0] if row else ""


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
