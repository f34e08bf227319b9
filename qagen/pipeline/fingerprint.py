"""The unchanged check: one hash of everything a run's dataset depends on.

A run whose inputs (corpus bytes, settings, prompts, qagen's version) match
the last clean run's, with its output files intact, is a no-op: no model, no
replay, the dataset stays as it is.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import xxhash

from qagen.config import CONFIG_FILE, Settings
from qagen.core.types import SkippedFile
from qagen.corpus.walk import iter_entries
from qagen.pipeline.summary import Summary
from qagen.prompting.prompts import PromptSet
from qagen.store import Store

# Settings that change how fast a run goes, never what it produces.
_SPEED_ONLY = {
    "api_key", "base_url", "extra_base_urls", "concurrency", "transport", "request_timeout", "max_retries",
    "per_endpoint_concurrency", "adaptive", "max_concurrency", "executor", "ray_address", "workers", "shards",
    "embedded_threads", "embedded_parallel", "embedded_ctx_per_slot", "fail_fast_after", "fail_on_skip",
    "critic_base_url", "regenerator_base_url", "judge_base_url",
}
OUTPUT_FILES = ("train.jsonl", "eval.jsonl", "exam.jsonl", "dpo.jsonl", "cpt.jsonl", "report.html", "README.md")


def input_fingerprint(docs_dir: Path, settings: Settings, prompts: PromptSet, out_dir: Path | None = None,
                      reviews: str = "") -> str:
    """One hash of everything a run's dataset depends on: every file's bytes and path, settings, prompts, qagen,
    and a human's review decisions (``reviews``: :meth:`Store.reviews_digest`, "" when there are none). ``out_dir``
    is left out of the walk where it lies inside the documents.

    Raw bytes are hashed (xxh3, GB/s), not parsed: deciding that nothing
    changed costs one read of the corpus, never a PDF conversion.
    """
    from qagen.core.version import VERSION as __version__

    h = xxhash.xxh3_128()
    what = settings.model_dump(mode="json", exclude=_SPEED_ONLY)
    what.update(rounds=settings.rounds, embedded=settings.uses_embedded, qagen=__version__,
                prompts=sorted((p.id, p.hash) for p in (prompts.system, prompts.context, *prompts.all)))
    for name in ("decontaminate",):  # files the run reads besides the corpus
        what[name] = [(f, _file_hash(Path(f))) for f in settings.decontaminate]
    if reviews:  # a new decision in `qagen review` is a change: the dataset is written again with it
        what["reviews"] = reviews
    h.update(json.dumps(what, sort_keys=True, default=str).encode())
    for entry in iter_entries(docs_dir, **walk_options(settings, out_dir, docs_dir)):
        if isinstance(entry, SkippedFile):
            h.update(f"\x00skip\x00{entry.path}\x00{entry.reason}".encode("utf-8", "backslashreplace"))
        else:
            h.update(f"\x00file\x00{entry[0]}\x00{_file_hash(entry[1])}".encode("utf-8", "backslashreplace"))
    return h.hexdigest()


def walk_options(settings: Settings, out_dir: Path | None, docs_dir: Path | None = None) -> dict:
    """How every walk of a run reads the documents folder: its symlink rule, and OUT left out when it lies inside."""
    exclude = [p for p in (out_dir, docs_dir / CONFIG_FILE if docs_dir is not None else None) if p is not None]
    return {"follow_symlinks": settings.follow_symlinks, "exclude": tuple(exclude)}


def _file_hash(path: Path) -> str:
    h = xxhash.xxh3_128()
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    return h.hexdigest()


def outputs(out_dir: Path) -> dict[str, str]:
    return {name: _file_hash(out_dir / name) for name in OUTPUT_FILES if (out_dir / name).exists()}


def unchanged(store: Store, out_dir: Path, inputs: str, settings: Settings, summary: Summary,
              started: float) -> Summary | None:
    """The last run's summary (and a run recorded) when the last finished run had these very inputs and its files
    are intact; None when this run has work to do."""
    last = store.last_clean_run("ingest")
    if not last or last.get("input_fingerprint") != inputs:
        return None
    written = last.get("outputs") or {}
    if not written or outputs(out_dir) != written or (settings.report and "report.html" not in written):
        return None  # a file was deleted or edited: write them again (from the cache)
    kept = Summary.from_dict(last)
    moved = {name: str(out_dir / file) for name, file in (  # the folder may have moved (a CI cache restored elsewhere)
        ("train_path", "train.jsonl"), ("eval_path", "eval.jsonl"), ("exam_path", "exam.jsonl"),
        ("dpo_path", "dpo.jsonl"), ("cpt_path", "cpt.jsonl"), ("report_path", "report.html"),
        ("card_path", "README.md")) if getattr(kept, name)}
    summary = replace(
        kept, **moved, docs_dir=summary.docs_dir, out_dir=summary.out_dir, state_db=summary.state_db,
        requests_cached=kept.requests_sent + kept.requests_cached, requests_sent=0, requests_failed=0,
        http_retries=0, prompt_tokens=0, completion_tokens=0, unchanged=True,
        seconds=round(time.perf_counter() - started, 2))
    repeated = store.latest_finished_run("ingest")
    run_id = store.start_run("ingest", {**settings.model_dump(exclude={"api_key"}), "docs_dir": str(summary.docs_dir)})
    if repeated is not None:  # `qagen eval` / `report` / `export` read the latest ingest run: it holds the corpus
        store.carry_run(repeated, run_id)
    store.finish_run(run_id, "ok", summary.to_dict())
    return summary
