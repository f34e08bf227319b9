"""``ingest``: read -> chunk -> generate -> identity -> curate -> export, as one library call.

The CLI is a thin wrapper around :func:`ingest`. Documents stream through
(never the whole corpus in memory) one executor's way (``executor.py``:
local, or Ray), then the driver settles the run from what the store holds
(``finish.py``: curation, export, the writers, the run record).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from qagen.config import Settings
from qagen.core.errors import FailFast, InputError
from qagen.core.progress import IngestProgress, NullProgress
from qagen.corpus.chunker import Chunker
from qagen.corpus.reader import iter_documents
from qagen.llm.factory import make_llm
from qagen.pipeline.assemble import Stages, build_stages, chunker_settings, max_pending
from qagen.pipeline.executor import RunTotals, Shard, run_local
from qagen.pipeline.fingerprint import input_fingerprint, unchanged, walk_options
from qagen.pipeline.finish import RunState, close_failed, finish_and_write
from qagen.pipeline.summary import Interrupted, Summary, add_totals
from qagen.prompting.prompts import load_prompts
from qagen.store import Store
from qagen.store.db import WRITE_ERRORS, store_fault

log = logging.getLogger(__name__)


def ingest(
    docs_dir: Path,
    out_dir: Path,
    settings: Settings,
    *,
    prompts_dir: Path | None = None,
    progress: IngestProgress | None = None,
) -> Summary:
    """Build the dataset for DOCS_DIR into OUT_DIR; returns the run's summary (``status`` ok, partial or failed).

    Raises ``InputError``/``BackendError``/``StoreError`` before any work when the
    input, the endpoint or the state cannot be used, ``FailFast`` when a stage's
    failure rate trips its alarm, and ``Interrupted`` on Ctrl-C/SIGTERM (with
    everything finished written out).
    """
    try:
        return _ingest(docs_dir, out_dir, settings, prompts_dir=prompts_dir, progress=progress)
    except WRITE_ERRORS as exc:  # a full disk or an unwritable OUT anywhere: one line, not a traceback
        fault = store_fault(exc, out_dir)
        if fault is None:
            raise
        raise fault from None


def _ingest(
    docs_dir: Path,
    out_dir: Path,
    settings: Settings,
    *,
    prompts_dir: Path | None = None,
    progress: IngestProgress | None = None,
) -> Summary:
    started = time.perf_counter()
    progress = progress or NullProgress()
    if not docs_dir.exists():
        raise InputError(f"documents folder not found: {docs_dir}")
    if not docs_dir.is_dir():
        raise InputError(f"not a folder: {docs_dir}")
    warnings = check_out_dir(docs_dir, out_dir)
    prompts = load_prompts(prompts_dir, settings.refine_style, settings.prompt_switches, settings.perspective_suite)
    if settings.best_of > 1 and not settings.judging:
        raise InputError("--best-of needs the judge (it keeps the best-judged answer): add --judge")
    if settings.decontaminate:
        from qagen.corpus.questions import question_texts

        question_texts(Path(f) for f in settings.decontaminate)  # InputError with the path and line if unusable
    chunker = Chunker(chunker_settings(settings))
    summary = Summary(docs_dir=str(docs_dir), out_dir=str(out_dir), chunk_unit=chunker.unit, warnings=warnings)

    with Store(out_dir) as store:
        summary.state_db = str(store.path)
        for stale in out_dir.glob(".*.tmp"):  # outputs a killed run had staged (we hold OUT's lock: none is live)
            stale.unlink(missing_ok=True)
        inputs = input_fingerprint(docs_dir, settings, prompts, out_dir, store.reviews_digest())
        if (kept := unchanged(store, out_dir, inputs, settings, summary, started)) is not None:
            return kept  # nothing new since the last run: no model, no replay, the dataset stays
        summary.input_fingerprint = inputs
        llm, model = make_llm(settings)  # an unreachable endpoint fails here, before a run is recorded
        safe_settings = settings.model_dump(exclude={"api_key"})
        run_id = store.start_run("ingest", {**safe_settings, "docs_dir": str(docs_dir)})
        summary.backend, summary.model = llm.name, model
        totals = RunTotals()
        stages: Stages | None = None
        try:
            # Inside the try: a stage that cannot be built (a role endpoint without a model...) ends the run
            # "failed", never leaves it "running".
            stages = build_stages(store, llm, model, prompts, settings, run_id, progress)
            if settings.executor == "ray":
                from qagen.pipeline.ray import run_ray

                run_ray(docs_dir, settings, prompts_dir, store, run_id, stages, totals, progress)
            else:
                shard = Shard(stages, store, chunker, run_id, max_pending(settings), progress)
                run_local(iter_documents(docs_dir, **walk_options(settings, out_dir, docs_dir)), shard, totals)
        except FailFast as alarm:
            add_totals(summary, totals)
            summary.status, summary.error = "failed", str(alarm)
            summary.seconds = round(time.perf_counter() - started, 2)
            store.finish_run(run_id, "failed", summary.to_dict())
            raise
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM: everything finished is already in the store;
            # write it out, then report the interruption.
            if stages is None:  # stopped while the stages were being built: nothing was generated
                summary.status = "interrupted"
                store.finish_run(run_id, "interrupted", summary.to_dict())
                raise Interrupted(summary) from None
            finish_and_write(RunState(store, prompts, settings, stages, totals, llm, run_id, out_dir, summary,
                                      started), "interrupted")
            raise Interrupted(summary) from None
        except BaseException as exc:
            raise close_failed(store, run_id, summary, exc, out_dir, "") from exc
        finish_and_write(RunState(store, prompts, settings, stages, totals, llm, run_id, out_dir, summary, started),
                         None)
    return summary


def check_out_dir(docs_dir: Path, out_dir: Path) -> list[str]:
    """OUT must be a folder (or not exist yet) and must not be DOCS; inside DOCS it is left out of the walk (a
    warning), or the dataset card and report.html would become training documents on the next run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out is a file, not a folder: {out_dir}")
    docs, out = docs_dir.resolve(), out_dir.resolve()
    if out == docs:
        raise InputError(f"--out is the documents folder ({docs_dir}): qagen's outputs would be read as documents; "
                         "choose another folder")
    if docs in out.parents:
        return [f"the output folder {out_dir} lies inside the documents folder: it is not read as documents"]
    return []


