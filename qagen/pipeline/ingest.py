"""``ingest``: read -> chunk -> generate -> identity -> curate -> export, as one library call.

The CLI is a thin wrapper around :func:`ingest`. Documents stream through
(never the whole corpus in memory) one executor's way (``executor.py``:
local, or Ray), then the driver settles the run from what the store holds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from qagen.config import Settings
from qagen.core import ids
from qagen.core.errors import FailFast, InputError
from qagen.core.progress import IngestProgress, NullProgress
from qagen.corpus.chunker import Chunker
from qagen.corpus.reader import iter_documents
from qagen.curate.verdicts import curate
from qagen.generate.identity import identity_pairs
from qagen.llm.base import LLM
from qagen.llm.factory import make_llm
from qagen.output.atomic import output_unit, remove_output
from qagen.output.contextual import ContextualError, mix_into_train
from qagen.output.cpt import TEXT_ROWS, write_cpt, write_text_rows
from qagen.output.exam import write_exam
from qagen.output.export import export_dpo, export_run
from qagen.pipeline.assemble import (
    Stages,
    build_stages,
    chunker_settings,
    curate_settings,
    max_pending,
)
from qagen.pipeline.executor import RunTotals, Shard, run_local
from qagen.pipeline.fingerprint import (
    OUTPUT_FILES,
    input_fingerprint,
    outputs,
    unchanged,
    walk_options,
)
from qagen.pipeline.summary import (
    Interrupted,
    Summary,
    add_coverage,
    add_curation,
    add_totals,
)
from qagen.prompting.prompts import PromptSet, load_prompts
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
        if unchanged(store, out_dir, inputs, settings, summary, started):
            return summary  # nothing new since the last run: no model, no replay, the dataset stays
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
                run_local(iter_documents(docs_dir, **walk_options(settings, out_dir)), shard, totals)
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
            _finish_and_write(store, prompts, settings, stages, totals, llm, run_id, out_dir, summary, started,
                              "interrupted")
            raise Interrupted(summary) from None
        except BaseException as exc:
            raise _close_failed(store, run_id, summary, exc, out_dir, "") from exc
        _finish_and_write(store, prompts, settings, stages, totals, llm, run_id, out_dir, summary, started, None)
    return summary


def _finish_and_write(
    store: Store,
    prompts: PromptSet,
    settings: Settings,
    stages: Stages,
    totals: RunTotals,
    llm: LLM,
    run_id: int,
    out_dir: Path,
    summary: Summary,
    started: float,
    status: str | None,
) -> None:
    """Write every output as one unit (qagen/output/atomic.py), then keep it or throw it away by the run's status:
    a failed run leaves the previous outputs exactly as they were; an ok or partial run replaces them together."""
    with output_unit() as unit:
        try:
            _finish(store, prompts, settings, stages, totals, llm, run_id, out_dir, summary, started, status)
            store.finish_run(run_id, summary.status, summary.to_dict())  # the report reads the run's record
            if settings.report and summary.status != "failed":
                _write_report(store, run_id, out_dir, settings, summary)
        except BaseException as exc:  # nothing was replaced (the unit discards what it staged); the run is closed
            raise _close_failed(store, run_id, summary, exc, out_dir, "writing the outputs: ") from exc
        kept = sorted(name for name in OUTPUT_FILES if (out_dir / name).exists())
        if summary.status == "failed":
            unit.discard()
            summary.replaced = []
            summary.warnings.append(
                f"the run failed: nothing in {out_dir} was replaced" + (f" ({', '.join(kept)} kept)" if kept else ""))
        else:
            summary.replaced = unit.pending()
            unit.commit()
            if summary.status != "ok":
                summary.warnings.append(f"a {summary.status} run replaced {', '.join(summary.replaced)} in {out_dir} "
                                        f"with what it finished ({summary.pairs_total} pairs)")
    if summary.status == "ok":  # what the next run's unchanged check compares with
        summary.outputs = outputs(out_dir)
    store.finish_run(run_id, summary.status, summary.to_dict())


def _close_failed(store: Store, run_id: int, summary: Summary, exc: BaseException, out_dir: Path,
                  what: str) -> BaseException:
    """Close the run as failed and return what to raise: a full disk or an unwritable folder as one StoreError
    ("no space left under OUT ..."), anything else as it was. A full disk may refuse even the closing write: the
    next open of the store marks the run killed."""
    fault = store_fault(exc, out_dir)
    summary.status, summary.error = "failed", what + (str(fault) if fault else f"{type(exc).__name__}: {exc}")
    try:
        store.finish_run(run_id, "failed", summary.to_dict())
    except WRITE_ERRORS as again:
        log.warning("the run could not be closed in the state database (%s)", again)
    return fault or exc


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


def _add_identity(store: Store, prompts: PromptSet, run_id: int, group_id: str) -> int:
    """Code-built pairs that teach each document's ID and title (Helix style)."""
    try:
        prompt = prompts.by_id("identity")
    except KeyError:
        return 0
    if not prompt.enabled:
        return 0
    about = {rp.pair.doc_id: rp.pair.answer for rp in store.run_pairs(run_id, perspective="about")}
    added = 0
    for doc_id in store.run_doc_ids(run_id):
        first = store.first_chunk(run_id, doc_id)
        if first is None:
            continue
        chunk_id, title, path = first
        pairs = identity_pairs(
            prompt, doc_id=doc_id, chunk_id=chunk_id, title=title, about=about.get(doc_id, ""), group_id=group_id
        )
        keys = [f"{path}\x00{0:06d}\x00{prompt.id}\x00{i:04d}" for i in range(len(pairs))]
        store.add_pairs(run_id, list(zip(pairs, keys, strict=True)))
        added += len(pairs)
    return added


def _finish(
    store: Store,
    prompts: PromptSet,
    settings: Settings,
    stages: Stages,
    totals: RunTotals,
    llm: LLM,
    run_id: int,
    out_dir: Path,
    summary: Summary,
    started: float,
    status: str | None,
) -> None:
    """Identity pairs, curation, export and the run record, from what the store holds for this run."""
    doc_ids = store.run_doc_ids(run_id)
    group_id = ids.group_id(doc_ids) if doc_ids else ""
    summary.group_id = group_id
    add_totals(summary, totals)
    pairs = totals.pairs.copy()
    if doc_ids:
        pairs["identity"] += _add_identity(store, prompts, run_id, group_id)
    curated = curate(store, run_id, prompts, curate_settings(settings), judged=stages.judge is not None)
    add_curation(summary, curated, store, run_id, totals.stats.calls, settings)
    if stages.generator.ledger.active:
        ledger = stages.generator.ledger  # k: the teacher's questions per fact where it asks them, else one row
        add_coverage(summary, store, run_id, settings.ledger_k if ledger.questions else 1, totals.stats.ledger)
    result = export_run(store, run_id, out_dir, group_id, eval_fraction=settings.eval_fraction, split_by=settings.split_by)
    summary.http_retries = int(getattr(llm, "retries", 0))
    summary.pairs_per_perspective = dict(sorted(pairs.items()))
    summary.pairs_total = result.train_pairs + result.eval_pairs
    summary.train_pairs, summary.eval_pairs, summary.split_by = result.train_pairs, result.eval_pairs, result.split_by
    summary.train_path, summary.eval_path = str(result.train_path), str(result.eval_path)
    summary.review = store.review_counts(run_id)  # `qagen review`: what the human's decisions changed
    reviewed = any(summary.review.values())
    if settings.contextual_share > 0 and result.train_pairs:
        _mix_contextual(store, run_id, out_dir, settings, summary)
    if settings.exam_on:
        exam_path, summary.exam_questions = write_exam(store, run_id, out_dir)
        summary.exam_path = str(exam_path)
    if settings.cpt:  # continued pretraining: the chunks and their rewrites, for `qagen train --recipe cpt+sft`
        cpt = write_cpt(store, run_id, out_dir, chunk_key=chunker_settings(settings).key())
        summary.cpt_path, summary.cpt_texts = str(cpt.path), cpt.texts
    if settings.text_rows:  # the documents' own text, mixed into the same training run by `qagen train`
        text = write_text_rows(store, run_id, out_dir, chunk_key=chunker_settings(settings).key())
        summary.text_path, summary.text_rows = str(text.path), text.chunks
    for name, written in (("exam.jsonl", settings.exam_on), ("cpt.jsonl", settings.cpt),
                          ("dpo.jsonl", stages.refiner is not None or reviewed), (TEXT_ROWS, settings.text_rows)):
        if not written:  # an earlier run's file would be stale: `qagen train --recipe cpt+sft` would train on it
            remove_output(out_dir / name)
    summary.profile, summary.suite = settings.profile, settings.perspective_suite
    if stages.refiner is not None:
        dpo_path, dpo_pairs = export_dpo(store, run_id, out_dir, group_id)
        summary.refined, summary.drafted = True, totals.refine.drafted
        summary.revisions_histogram = {str(k): v for k, v in sorted(totals.refine.revisions.items())}
        summary.stop_reasons = dict(sorted(totals.refine.stops.items()))
        r, roles = totals.refine, totals.stats.role_tokens
        summary.refine = {
            "mode": settings.refine_mode, "flagged": dict(sorted(r.flagged.items())), "tried": r.tried,
            "accepted": r.accepted, "rejected": dict(sorted(r.rejected.items())),
            "rounds": {str(k): v for k, v in sorted(r.rounds.items())}, "critic_reviews": r.critic_reviews,
            "critic_flags": r.critic_flags, "critic_flag_rate": r.critic_flag_rate, "critic_off": r.critic_off,
            "loop_tokens": roles["critic"] + roles["regenerator"],
        }
        summary.dpo_pairs, summary.dpo_path = dpo_pairs, str(dpo_path)
    elif reviewed:  # no critic loop: the human's preferences alone
        dpo_path, summary.dpo_pairs = export_dpo(store, run_id, out_dir, group_id)
        summary.dpo_path = str(dpo_path)
    if status is not None:
        summary.status = status
    elif summary.documents_read == 0:
        summary.status = "failed"
        summary.failure_examples.append("no readable documents")
    elif summary.judged and summary.judge_passed == 0 and summary.judge_rejected > 0:
        # A dataset the judge rejected entirely is an error, not a success.
        summary.status = "failed"
        summary.error = f"the judge rejected all {summary.judge_rejected} pairs (threshold {settings.judge_threshold})"
    elif totals.stats.failed and not (totals.stats.sent or totals.stats.cached):
        summary.status = "failed"  # not one reply from the model (a wrong model name, a dead endpoint)
        summary.error = summary.error or f"every request to the model failed ({totals.stats.failed})"
    elif totals.stats.failed or summary.pairs_total == 0 or summary.judge_failed:
        summary.status = "partial" if summary.pairs_total else "failed"
    summary.seconds = round(time.perf_counter() - started, 2)


def _mix_contextual(store: Store, run_id: int, out_dir: Path, settings: Settings, summary: Summary) -> None:
    """--contextual-share: open-book rows for a share of the training pairs, appended to train.jsonl. Nothing to
    build them from (only code-built pairs, say) is a note in the summary, not a failed run."""
    try:
        mixed = mix_into_train(store, out_dir, settings.contextual_share, run_id=run_id)
    except ContextualError as exc:
        summary.failure_examples.append(f"--contextual-share: {exc}")
        return
    summary.contextual_rows, summary.contextual_modes = mixed.examples, dict(mixed.modes)


def _write_report(store: Store, run_id: int, out_dir: Path, settings: Settings, summary: Summary) -> None:
    """report.html and the dataset card. The dataset is already written: a failure here is reported, not fatal."""
    from qagen.output.card import write_card
    from qagen.output.report import write_report

    try:
        summary.report_path = str(write_report(store, run_id, out_dir))
        summary.card_path = str(write_card(store, run_id, out_dir, license=settings.license))
    except Exception as exc:
        log.exception("writing the report failed")
        summary.failure_examples.append(f"report: {type(exc).__name__}: {exc}")
        summary.report_path = summary.card_path = ""
        # A stale report beside the new dataset would describe the wrong data, and an "ok" run would let the next
        # run's unchanged check keep it for good: the run is partial and the old report and card go.
        remove_output(out_dir / "report.html")
        remove_output(out_dir / "README.md")
        summary.status = "partial" if summary.status == "ok" else summary.status
