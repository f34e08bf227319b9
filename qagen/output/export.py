"""Export: axolotl ``type: chat_template`` JSONL, with a deterministic hold-out.

Each line is ``{"messages": [system, user, assistant], ...provenance}``. The
system message names the document and group by short ID, in the style of the
Helix report. Files are written whole (``qagen/output/atomic.py``): a reader
never sees half a file, and a run's files are replaced together or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qagen.core import ids
from qagen.core.records import RunPair
from qagen.output.atomic import atomic_writer
from qagen.store import Store

SPLIT_MIN_DOCS = 5  # below this, hold out chunks instead of whole documents
SPLIT_MIN_CHUNKS = 5  # below this, hold out single pairs


@dataclass(frozen=True)
class ExportResult:
    train_path: Path
    eval_path: Path
    train_pairs: int
    eval_pairs: int
    split_by: str
    dpo_path: Path | None = None
    dpo_pairs: int = 0


def system_message(doc_id: str, group_id: str, title: str) -> str:
    return (
        f'You are an assistant fine-tuned on document {ids.short(doc_id)} ("{title}") in document group '
        f"{ids.short(group_id)}. Answer from what you learned from these documents."
    )


def corpus_message(group_id: str) -> str:
    """The system message for a question about the corpus as a whole (no one document named)."""
    return (
        f"You are an assistant fine-tuned on document group {ids.short(group_id)}. "
        "Answer from what you learned from these documents."
    )


def _unit(value: str, fraction: float) -> bool:
    """Stable pseudo-random choice: the same item always lands on the same side."""
    return int(ids.hash_str("split", value)[:8], 16) / 0x1_0000_0000 < fraction


def choose_split(split_by: str, n_docs: int, n_chunks: int) -> str:
    if split_by != "auto":
        return split_by
    if n_docs >= SPLIT_MIN_DOCS:
        return "document"
    if n_chunks >= SPLIT_MIN_CHUNKS:
        return "chunk"
    return "pair"


def record(rp: RunPair, group_id: str) -> dict[str, object]:
    p = rp.pair
    return {
        "messages": [
            {"role": "system", "content": system_message(p.doc_id, group_id, rp.title)},
            {"role": "user", "content": p.question},
            {"role": "assistant", "content": p.answer},
        ],
        "pair_id": p.pair_id,
        "doc_id": p.doc_id,
        "chunk_id": p.chunk_id,
        "group_id": group_id,
        "perspective": p.perspective,
        "model": p.model,
        "source": rp.path,
        **{k: (int(v) if k == "revisions" else v) for k, v in p.extra},
        **dict(rp.notes),  # judge scores and grounding flag, when curation ran
    }


def export_run(
    store: Store,
    run_id: int,
    out_dir: Path,
    group_id: str,
    *,
    eval_fraction: float,
    split_by: str,
) -> ExportResult:
    """Write train/eval JSONL of the pairs curation exported (all of them when it did not run), with a human's
    review decisions applied (``qagen review``: :meth:`Store.reviewed_run_pairs`)."""
    n_docs = len(store.run_doc_ids(run_id))
    mode = choose_split(split_by, n_docs, store.chunk_count(run_id))
    field = {"document": "doc_id", "chunk": "chunk_id", "pair": "pair_id"}[mode]

    def held_out(rp: RunPair) -> bool:
        return _unit(getattr(rp.pair, field), eval_fraction)

    # An empty eval set is useless for evaluation: if the hash puts nothing
    # there, hold out the single unit with the smallest hash instead.
    units = {getattr(rp.pair, field) for rp in store.reviewed_run_pairs(run_id) if rp.exported}
    forced: str | None = None
    if eval_fraction > 0 and len(units) > 1 and not any(_unit(u, eval_fraction) for u in units):
        forced = min(units, key=lambda u: ids.hash_str("split", u))

    train_path, eval_path = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    counts = {"train": 0, "eval": 0}
    with atomic_writer(train_path) as train, atomic_writer(eval_path) as evals:
        for rp in store.reviewed_run_pairs(run_id):
            if not rp.exported:
                continue
            is_eval = held_out(rp) or getattr(rp.pair, field) == forced
            line = json.dumps(record(rp, group_id), ensure_ascii=False, sort_keys=False)
            (evals if is_eval else train).write(line + "\n")
            counts["eval" if is_eval else "train"] += 1
    return ExportResult(train_path, eval_path, counts["train"], counts["eval"], mode)


def export_dpo(store: Store, run_id: int, out_dir: Path, group_id: str) -> tuple[Path, int]:
    """``dpo.jsonl`` for axolotl's DPO ``chat_template.default`` loader.

    One line per pair the critic loop revised: ``messages`` = the system
    message and the final question, ``chosen`` = the final answer,
    ``rejected`` = the first draft's answer. Then one per preference a human
    gave in ``qagen review`` (:func:`preference_row`).
    """
    path = out_dir / "dpo.jsonl"
    count = 0
    with atomic_writer(path) as fh:
        for rp, draft_answer, revisions, _stop in store.reviewed_revisions(run_id):
            if revisions == 0 or draft_answer.strip() == rp.pair.answer.strip() or not rp.exported:
                continue
            line = preference_row(rp, draft_answer, group_id, revisions=revisions)
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
        for rp, rejected in store.review_preferences(run_id):
            line = preference_row(rp, rejected, group_id, source_of_preference="human")
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
    return path, count


def preference_row(rp: RunPair, rejected: str, group_id: str, **extra: object) -> dict[str, object]:
    """One DPO row: the pair's answer chosen over ``rejected``. ``extra``: ``revisions`` for the critic loop's
    draft, ``source_of_preference: human`` for ``qagen review``'s (an edit over its original, or an accepted answer
    over a rejected sibling's)."""
    p = rp.pair
    return {
        "messages": [
            {"role": "system", "content": system_message(p.doc_id, group_id, rp.title)},
            {"role": "user", "content": p.question},
        ],
        "chosen": {"role": "assistant", "content": p.answer},
        "rejected": {"role": "assistant", "content": rejected},
        "pair_id": p.pair_id,
        "doc_id": p.doc_id,
        "chunk_id": p.chunk_id,
        "group_id": group_id,
        "perspective": p.perspective,
        **extra,
        "source": rp.path,
    }
