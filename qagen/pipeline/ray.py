"""``qagen ingest --executor ray``: the same pipeline over a Ray cluster, with Ray Data.

Driver (this process)
    lists the files (the reader's walk, no reading), starts the embedded model
    if no endpoint is given, and hands Ray Data one row per file.
Ray Data
    ``map``: read and normalise each file on any worker (PDF/DOCX conversion
    included), which gives its content ID; ``groupby(shard)``, where
    ``shard = doc_id mod shards``, so a document always lands in the same
    shard whatever the cluster; ``map_groups(ShardWorker)``: each worker
    chunks its shard's documents and runs the perspective suite (refinement
    and judge included) against the endpoint(s), cache-first, writing to its
    own state shard (``OUT/.qagen-shards/run-N/shard-K/qagen.sqlite``).
Driver again
    merges every shard into the main store, then identity pairs, curation
    (dedup needs the whole corpus), export and the report run exactly as in a
    local run. Request keys, pair IDs and sort keys depend on content only, so
    the dataset is the one a local run writes from the same corpus and cache.

A worker reads cached replies from the main store (read-only) and from its
shard, so a re-run pays only for what is new. Shards left by a run that
died are merged at the start of the next one: paid replies are never lost.
Workers need the documents folder and OUT at the same paths (one machine, or
a shared filesystem) and qagen installed (or a ``runtime_env``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qagen.core.errors import BackendError, InputError
from qagen.core.progress import IngestProgress, NullProgress
from qagen.core.types import Document, SkippedFile
from qagen.corpus.reader import read_file
from qagen.corpus.walk import iter_entries
from qagen.pipeline.executor import RunTotals, ShardResult
from qagen.pipeline.fingerprint import walk_options

if TYPE_CHECKING:
    from qagen.config import Settings
    from qagen.pipeline.assemble import Stages
    from qagen.store import Store

log = logging.getLogger(__name__)

SHARDS_DIR = ".qagen-shards"
NO_SHARD = -1  # rows for files the reader skipped: they only report why


class RayMissing(BackendError, ImportError):
    """Ray Data is not installed (the ``qagen[ray]`` extra)."""


def require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayMissing(
            "--executor ray needs Ray Data, which is not installed: pip install 'qagen[ray]'"
        ) from None
    return ray


def shard_of(doc_id: str, shards: int) -> int:
    """The shard of a document: from its content ID alone (the same on every cluster)."""
    return int(doc_id[:16], 16) % shards


def _read_row(row: dict[str, Any], shards: int, max_bytes: int) -> dict[str, Any]:
    item = read_file(Path(row["path"]), row["rel"], max_bytes)
    if isinstance(item, SkippedFile):
        return {"shard": NO_SHARD, "rel": item.path, "doc": json.dumps({"reason": item.reason})}
    # every field of the Document, by dataclasses.asdict: a hand-written list lost ``title_from`` once, so a
    # document that states no title never got the model-written one on Ray
    return {"shard": shard_of(item.doc_id, shards), "rel": item.path,
            "doc": json.dumps(dataclasses.asdict(item), ensure_ascii=False)}


class ShardWorker:
    """Ray Data ``map_groups`` callable: one call per shard, run on a Ray worker."""

    def __init__(self, settings_json: str, api_key: str | None, prompts_dir: str | None, out_dir: str,
                 run_id: int, shard_root: str) -> None:
        from qagen.config import Settings

        self.settings = Settings.model_validate_json(settings_json)
        if api_key:
            self.settings = self.settings.model_copy(update={"api_key": api_key})
        self.prompts_dir = Path(prompts_dir) if prompts_dir else None
        self.out_dir = Path(out_dir)
        self.run_id = run_id
        self.shard_root = Path(shard_root)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        started = time.perf_counter()
        rows = sorted(zip(batch["rel"], batch["doc"], batch["shard"], strict=True), key=lambda r: str(r[0]))
        shard = int(rows[0][2])
        if shard == NO_SHARD:
            result = ShardResult(shard, skipped=[(str(rel), json.loads(doc)["reason"]) for rel, doc, _ in rows])
        else:
            documents = [_document(json.loads(doc)) for _, doc, _ in rows]
            try:
                result = self._run(shard, documents)
            except Exception as exc:  # noqa: BLE001 - reported to the driver with the shard it hit
                log.exception("shard %d failed", shard)
                result = ShardResult(shard, error=f"{type(exc).__name__}: {exc}")
        result.seconds = round(time.perf_counter() - started, 3)
        return {"result": [result.to_bytes()]}

    def _run(self, shard: int, documents: list[Document]) -> ShardResult:
        """The executor contract's shard function, on this worker's own state shard."""
        from qagen.corpus.chunker import Chunker
        from qagen.llm.factory import make_llm
        from qagen.pipeline.assemble import build_stages, chunker_settings, max_pending
        from qagen.pipeline.executor import Shard
        from qagen.prompting.prompts import load_prompts
        from qagen.store import DB_NAME, ShardStore

        settings = self.settings
        prompts = load_prompts(self.prompts_dir, settings.refine_style, settings.prompt_switches,
                               settings.perspective_suite)
        with ShardStore(self.shard_root / f"shard-{shard:05d}", self.out_dir / DB_NAME) as store:
            llm, model = make_llm(settings)
            progress = NullProgress()
            stages = build_stages(store, llm, model, prompts, settings, self.run_id, progress)
            work = Shard(stages, store, Chunker(chunker_settings(settings)), self.run_id, max_pending(settings),
                         progress, shard)
            return asyncio.run(work.run(documents))


def _document(d: dict[str, Any]) -> Document:
    return Document(**{**d, "meta": tuple(tuple(m) for m in d["meta"])})


def recover_shards(store: Store, out_dir: Path) -> int:
    """Merge shards a killed distributed run left behind (their replies are paid for); returns replies merged."""
    root = out_dir / SHARDS_DIR
    merged = 0
    if not root.is_dir():
        return 0
    from qagen.store import DB_NAME

    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for db in sorted(run_dir.glob(f"shard-*/{DB_NAME}")):
            merged += store.merge_shard(db)
        shutil.rmtree(run_dir)
    if merged:
        log.warning("merged %d cached replies from an interrupted distributed run", merged)
    return merged


def run_ray(
    docs_dir: Path,
    settings: Settings,
    prompts_dir: Path | None,
    store: Store,
    run_id: int,
    stages: Stages,
    totals: RunTotals,
    progress: IngestProgress,
) -> None:
    """The Ray executor: generation for ``ingest``; leaves the main store as the local executor would."""
    from qagen.llm.embedded import MODEL_NAME, EmbeddedLLM
    from qagen.pipeline.assemble import chunker_settings

    if settings.backend == "vllm":
        raise InputError("--executor ray calls HTTP endpoints: serve the model with `vllm serve` and pass --base-url")
    ray = require_ray()
    out_dir = store.path.parent
    recover_shards(store, out_dir)
    store.flush()  # workers read the main store's cache

    # Workers must chunk, refine and pick the suite exactly as a local run would: pin what depends on the backend.
    chunking = chunker_settings(settings)
    update: dict[str, Any] = {"executor": "local", "chunk_size": chunking.chunk_size,
                              "chunk_overlap": chunking.chunk_overlap, "max_rounds": settings.rounds,
                              "refine": settings.refine_mode, "judge": settings.judging,
                              "suite": settings.perspective_suite, "exam": settings.exam_on,
                              "facts_k": settings.ledger_k}
    llm = stages.caller.llm
    if isinstance(llm, EmbeddedLLM):  # one embedded server on the driver, shared by every worker
        update.update(base_url=llm.server.start(), model=MODEL_NAME, extra_base_urls=[])
    worker_settings = settings.model_copy(update=update)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None

    try:
        if not ray.is_initialized():
            ray.init(address=settings.ray_address, ignore_reinit_error=True, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        workers = settings.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        shards = settings.shards or 4 * workers
        shard_root = out_dir / SHARDS_DIR / f"run-{run_id}"
        shard_root.mkdir(parents=True, exist_ok=True)
        entries: list[dict[str, str]] = []
        for entry in iter_entries(docs_dir, **walk_options(settings, out_dir, docs_dir)):
            if isinstance(entry, SkippedFile):
                totals.skipped.append((entry.path, entry.reason))
                progress.doc_skipped(entry.path, entry.reason)
            else:
                entries.append({"rel": entry[0], "path": str(entry[1].resolve())})
        log.info("ray: %d files over %d shards on %d workers", len(entries), shards, workers)
        results: list[ShardResult] = []
        if entries:
            from ray.data.context import DataContext, ShuffleStrategy

            # The sort-based shuffle: the default hash shuffle's aggregator actors made a 60-document run
            # 2x slower on a 2-core box (110 s vs 52 s, benchmarks/RESULTS.md, "The Ray Data executor").
            DataContext.get_current().shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
            # A few blocks per worker, not one per file: every block is a task and a shuffle input.
            ds = ray.data.from_items(entries, override_num_blocks=min(len(entries), 4 * workers))
            ds = ds.map(_read_row, fn_kwargs={"shards": shards, "max_bytes": 50_000_000})
            ds = ds.groupby("shard").map_groups(
                ShardWorker,
                concurrency=workers,
                # Workers mostly wait on the endpoint: half a CPU each leaves room for the readers.
                num_cpus=0.5,
                batch_format="numpy",
                fn_constructor_kwargs={
                    "settings_json": worker_settings.model_dump_json(exclude={"api_key"}),
                    "api_key": api_key,
                    "prompts_dir": str(prompts_dir) if prompts_dir else None,
                    "out_dir": str(out_dir),
                    "run_id": run_id,
                    "shard_root": str(shard_root),
                },
            )
            try:
                for row in ds.iter_rows():
                    result = ShardResult.from_bytes(row["result"])
                    results.append(result)
                    for path, n_chunks in result.docs:
                        progress.doc_read(path, n_chunks)
                    for path, reason in result.skipped:
                        progress.doc_skipped(path, reason)
            except Exception as exc:  # a lost worker or node: the shards on disk are merged on the next start
                raise BackendError(
                    f"the Ray execution failed ({type(exc).__name__}: {str(exc)[:300]}). Replies already received "
                    "are kept in the state shards; run the same command again to continue."
                ) from None
        _merge_shards(store, shard_root)
        for result in results:
            totals.add(result)
    finally:
        if isinstance(llm, EmbeddedLLM):
            llm.server.stop()
    failed = [r for r in results if r.error]
    if failed:
        raise BackendError(f"{len(failed)} shard(s) failed on Ray; first: shard {failed[0].shard}: {failed[0].error}. "
                          "Finished work is merged; run the same command again to continue.")
    tripped = next((r for r in results if r.fail_fast), None)
    if tripped is not None and tripped.fail_fast is not None:  # each worker watches its own first items
        raise tripped.fail_fast


def _merge_shards(store: Store, shard_root: Path) -> None:
    """Every worker's state shard into the main store."""
    from qagen.store import DB_NAME

    for db in sorted(shard_root.glob(f"shard-*/{DB_NAME}")):
        store.merge_shard(db)
    shutil.rmtree(shard_root, ignore_errors=True)
