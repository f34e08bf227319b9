"""The end of an ingest: identity pairs, curation, export, the writers, the run record, as one unit of outputs.

The driver calls :func:`finish_and_write` once the executor is done (or interrupted). Every file it writes is staged
and renamed together (qagen/output/atomic.py): a failed run leaves the previous outputs as they were.

``WRITERS`` lists the outputs besides train.jsonl and eval.jsonl, each with the setting that turns it on; a file a
run does not write is removed, so an earlier run's copy never sits beside a new dataset. `qagen stages` prints
this list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qagen.config import Settings
from qagen.core import ids
from qagen.curate.verdicts import curate
from qagen.generate.identity import identity_pairs
from qagen.llm.base import LLM
from qagen.output.atomic import output_unit, remove_output
from qagen.output.contextual import ContextualError, mix_into_train
from qagen.output.cpt import TEXT_ROWS, write_cpt, write_text_rows
from qagen.output.exam import write_exam
from qagen.output.export import export_dpo, export_run
from qagen.pipeline.assemble import Stages, chunker_settings, curate_settings
from qagen.pipeline.executor import RunTotals
from qagen.pipeline.fingerprint import OUTPUT_FILES, outputs
from qagen.pipeline.summary import Summary, add_coverage, add_curation, add_totals
from qagen.prompting.prompts import PromptSet
from qagen.store import Store
from qagen.store.db import WRITE_ERRORS, store_fault

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """One ingest run as its end sees it."""

    store: Store
    prompts: PromptSet
    settings: Settings
    stages: Stages
    totals: RunTotals
    llm: LLM
    run_id: int
    out_dir: Path
    summary: Summary
    started: float
    group_id: str = ""
    train_pairs: int = 0
    reviewed: bool = False  # `qagen review` decisions applied at export


@dataclass(frozen=True)
class Writer:
    """An output besides train/eval.jsonl: written when ``wanted``, else an earlier run's file is removed."""

    file: str  # its name in OUT; "" for rows added to train.jsonl
    what: str  # for `qagen stages`
    wanted: Callable[[Settings, bool], bool]  # (settings, reviewed) -> whether this run writes it
    write: Callable[[RunState], None]


def _contextual(run: RunState) -> None:
    """--contextual-share: open-book rows for a share of the training pairs, appended to train.jsonl. Nothing to
    build them from (only code-built pairs, say) is a note in the summary, not a failed run."""
    if not run.train_pairs:
        return
    try:
        mixed = mix_into_train(run.store, run.out_dir, run.settings.contextual_share, run_id=run.run_id)
    except ContextualError as exc:
        run.summary.failure_examples.append(f"--contextual-share: {exc}")
        return
    run.summary.contextual_rows, run.summary.contextual_modes = mixed.examples, dict(mixed.modes)


def _exam(run: RunState) -> None:
    exam_path, run.summary.exam_questions = write_exam(run.store, run.run_id, run.out_dir)
    run.summary.exam_path = str(exam_path)


def _cpt(run: RunState) -> None:  # continued pretraining: the chunks and their rewrites (`--recipe cpt+sft`)
    cpt = write_cpt(run.store, run.run_id, run.out_dir, chunk_key=chunker_settings(run.settings).key())
    run.summary.cpt_path, run.summary.cpt_texts = str(cpt.path), cpt.texts


def _text_rows(run: RunState) -> None:  # the documents' own text, mixed into the same training run
    text = write_text_rows(run.store, run.run_id, run.out_dir, chunk_key=chunker_settings(run.settings).key())
    run.summary.text_path, run.summary.text_rows = str(text.path), text.chunks


def _dpo(run: RunState) -> None:
    """Preference pairs: the repair loop's (draft rejected, repair chosen) and the human's from `qagen review`."""
    summary, refiner = run.summary, run.stages.refiner
    dpo_path, summary.dpo_pairs = export_dpo(run.store, run.run_id, run.out_dir, run.group_id)
    summary.dpo_path = str(dpo_path)
    if refiner is None:
        return
    r, roles = run.totals.refine, run.totals.stats.role_tokens
    summary.refined, summary.drafted = True, r.drafted
    summary.revisions_histogram = {str(k): v for k, v in sorted(r.revisions.items())}
    summary.stop_reasons = dict(sorted(r.stops.items()))
    summary.refine = {
        "mode": run.settings.refine_mode, "flagged": dict(sorted(r.flagged.items())), "tried": r.tried,
        "accepted": r.accepted, "rejected": dict(sorted(r.rejected.items())),
        "rounds": {str(k): v for k, v in sorted(r.rounds.items())}, "critic_reviews": r.critic_reviews,
        "critic_flags": r.critic_flags, "critic_flag_rate": r.critic_flag_rate, "critic_off": r.critic_off,
        "loop_tokens": roles["critic"] + roles["regenerator"],
    }


WRITERS: tuple[Writer, ...] = (
    Writer("", "open-book rows in train.jsonl (export.contextual_share)",
           lambda s, reviewed: s.contextual_share > 0, _contextual),
    Writer("exam.jsonl", "the held-out exam, never trained on (generation.exam)", lambda s, reviewed: s.exam_on, _exam),
    Writer("cpt.jsonl", "chunks and rewrites for continued pretraining (generation.cpt)", lambda s, reviewed: s.cpt,
           _cpt),
    Writer(TEXT_ROWS, "the documents' text as completion rows (export.text_rows)", lambda s, reviewed: s.text_rows,
           _text_rows),
    Writer("dpo.jsonl", "preference pairs from the repair loop and from qagen review (generation.refine)",
           lambda s, reviewed: s.refining or reviewed, _dpo),
)


def finish_and_write(run: RunState, status: str | None) -> None:
    """Write every output as one unit (qagen/output/atomic.py), then keep it or throw it away by the run's status:
    a failed run leaves the previous outputs exactly as they were; an ok or partial run replaces them together."""
    store, summary, out_dir = run.store, run.summary, run.out_dir
    with output_unit() as unit:
        try:
            _finish(run, status)
            store.finish_run(run.run_id, summary.status, summary.to_dict())  # the report reads the run's record
            if run.settings.report and summary.status != "failed":
                _write_report(run)
        except BaseException as exc:  # nothing was replaced (the unit discards what it staged); the run is closed
            raise close_failed(store, run.run_id, summary, exc, out_dir, "writing the outputs: ") from exc
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
    store.finish_run(run.run_id, summary.status, summary.to_dict())


def close_failed(store: Store, run_id: int, summary: Summary, exc: BaseException, out_dir: Path,
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


def _add_identity(run: RunState) -> int:
    """Code-built pairs that teach each document's ID and title (Helix style)."""
    store = run.store
    try:
        prompt = run.prompts.by_id("identity")
    except KeyError:
        return 0
    if not prompt.enabled:
        return 0
    about = {rp.pair.doc_id: rp.pair.answer for rp in store.run_pairs(run.run_id, perspective="about")}
    added = 0
    for doc_id in store.run_doc_ids(run.run_id):
        first = store.first_chunk(run.run_id, doc_id)
        if first is None:
            continue
        chunk_id, title, path = first
        pairs = identity_pairs(prompt, doc_id=doc_id, chunk_id=chunk_id, title=title, about=about.get(doc_id, ""),
                               group_id=run.group_id)
        keys = [f"{path}\x00{0:06d}\x00{prompt.id}\x00{i:04d}" for i in range(len(pairs))]
        store.add_pairs(run.run_id, list(zip(pairs, keys, strict=True)))
        added += len(pairs)
    return added


def _finish(run: RunState, status: str | None) -> None:
    """Identity pairs, curation, export, the writers and the run's status, from what the store holds for this run."""
    store, settings, stages, totals, summary = run.store, run.settings, run.stages, run.totals, run.summary
    doc_ids = store.run_doc_ids(run.run_id)
    run.group_id = summary.group_id = ids.group_id(doc_ids) if doc_ids else ""
    add_totals(summary, totals)
    pairs = totals.pairs.copy()
    if doc_ids:
        pairs["identity"] += _add_identity(run)
    curated = curate(store, run.run_id, run.prompts, curate_settings(settings), judged=stages.judge is not None)
    add_curation(summary, curated, store, run.run_id, totals.stats.calls, settings)
    if stages.generator.ledger.active:
        ledger = stages.generator.ledger  # k: the teacher's questions per fact where it asks them, else one row
        add_coverage(summary, store, run.run_id, settings.ledger_k if ledger.questions else 1, totals.stats.ledger)
    result = export_run(store, run.run_id, run.out_dir, run.group_id, eval_fraction=settings.eval_fraction,
                        split_by=settings.split_by)
    summary.http_retries = int(getattr(run.llm, "retries", 0))
    summary.pairs_per_perspective = dict(sorted(pairs.items()))
    summary.pairs_total = result.train_pairs + result.eval_pairs
    summary.train_pairs, summary.eval_pairs, summary.split_by = result.train_pairs, result.eval_pairs, result.split_by
    summary.train_path, summary.eval_path = str(result.train_path), str(result.eval_path)
    summary.review = store.review_counts(run.run_id)  # `qagen review`: what the human's decisions changed
    run.train_pairs, run.reviewed = result.train_pairs, any(summary.review.values())
    for writer in WRITERS:
        if writer.wanted(settings, run.reviewed):
            writer.write(run)
        elif writer.file:  # an earlier run's file would be stale: `qagen train --recipe cpt+sft` would train on it
            remove_output(run.out_dir / writer.file)
    summary.profile, summary.suite = settings.profile_name, settings.perspective_suite
    summary.status = _status(run, status)
    summary.seconds = round(time.perf_counter() - run.started, 2)


def _status(run: RunState, status: str | None) -> str:
    """ok, partial or failed, from what the run did (``status``: interrupted, when it was)."""
    summary, stats = run.summary, run.totals.stats
    if status is not None:
        return status
    if summary.documents_read == 0:
        summary.failure_examples.append("no readable documents")
        return "failed"
    if summary.judged and summary.judge_passed == 0 and summary.judge_rejected > 0:
        # A dataset the judge rejected entirely is an error, not a success.
        summary.error = (f"the judge rejected all {summary.judge_rejected} pairs (threshold "
                         f"{run.settings.judge_threshold})")
        return "failed"
    if stats.failed and not (stats.sent or stats.cached):  # not one reply (a wrong model name, a dead endpoint)
        summary.error = summary.error or f"every request to the model failed ({stats.failed})"
        return "failed"
    if stats.failed or summary.pairs_total == 0 or summary.judge_failed:
        return "partial" if summary.pairs_total else "failed"
    return summary.status


def _write_report(run: RunState) -> None:
    """report.html and the dataset card. The dataset is already written: a failure here is reported, not fatal."""
    from qagen.output.card import write_card
    from qagen.output.report import write_report

    summary, out_dir = run.summary, run.out_dir
    try:
        summary.report_path = str(write_report(run.store, run.run_id, out_dir))
        summary.card_path = str(write_card(run.store, run.run_id, out_dir, license=run.settings.license))
    except Exception as exc:
        log.exception("writing the report failed")
        summary.failure_examples.append(f"report: {type(exc).__name__}: {exc}")
        summary.report_path = summary.card_path = ""
        # A stale report beside the new dataset would describe the wrong data, and an "ok" run would let the next
        # run's unchanged check keep it for good: the run is partial and the old report and card go.
        remove_output(out_dir / "report.html")
        remove_output(out_dir / "README.md")
        summary.status = "partial" if summary.status == "ok" else summary.status
