"""``OUT/contextual.jsonl``: open-book examples built by code from the exported pairs and their chunks.

bagel's (airoboros') "contextual" format: the model gets one to three input blocks and an instruction, answers
from the blocks and cites the block it used::

    BEGININPUT
    BEGINCONTEXT
    doc: 3f2a9c01be
    title: First Annual Message
    source: speeches/washington.md
    ENDCONTEXT
    <chunk text>
    ENDINPUT
    BEGININSTRUCTION
    <question>
    ENDINSTRUCTION

and the answer is the pair's answer, a blank line, ``Source:`` and the cited block's context lines.

Built from ``OUT/train.jsonl`` only (the held-out pairs stay unseen, and so do chunks that only eval pairs
came from) and the chunk texts in the state store; no model is called. Of the eligible pairs, ranked by a
hash of their pair id (no seed: a re-run writes the same bytes),

* the first ``withheld_share`` leave the answer's chunk out: one or two blocks from other documents, and the
  answer says the context does not contain it;
* the next ``distractor_share`` add one or two distractor blocks from other documents beside the answer's;
* the rest get the answer's chunk alone.

Distractors are chunks of other documents that train pairs came from, picked by hashes of the pair id.
Code-built pairs (identity) and ``metadata`` pairs (answered from the document's front matter, which a
chunk does not hold) are left out. Rows are ``messages`` for ``type: chat_template``, with the pair's
provenance and ``contextual`` (answer | distractors | withheld) and ``context_chunk_ids``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qagen.core import ids
from qagen.core.errors import InputError
from qagen.output.atomic import atomic_writer, current
from qagen.output.formats import dataset_entry, provenance, read_rows, turns
from qagen.store import Store

NAME = "contextual.jsonl"
STANZA_NAME = "contextual.axolotl.yml"
DISTRACTOR_SHARE = 0.3
WITHHELD_SHARE = 0.1
SKIP_PERSPECTIVES = frozenset({"identity", "metadata"})
SYSTEM = ("Answer the instruction from the input blocks (BEGININPUT ... ENDINPUT) and cite the block you used. "
          "If the blocks do not contain the answer, say so.")
NOT_IN_CONTEXT = "The context provided does not contain the answer to this question."
ANSWER, DISTRACTORS, WITHHELD = "answer", "distractors", "withheld"
_TITLE = re.compile(r'^You are an assistant fine-tuned on document [0-9a-f]+ \("(.*)"\) in document group ')
_PICKS = 64  # hashed tries for a distractor before a linear scan


class ContextualError(InputError):
    """Bad shares, or nothing to build open-book examples from."""


@dataclass(frozen=True)
class Block:
    """One input block: a chunk and the context lines that name its document."""

    chunk_id: str
    doc_id: str
    title: str
    source: str
    date: str = ""

    def context_lines(self) -> str:
        lines = [f"doc: {ids.short(self.doc_id)}", f"title: {self.title}", f"source: {self.source}"]
        if self.date:
            lines.append(f"date: {self.date}")
        return "\n".join(" ".join(line.split()) for line in lines)  # one line each, whatever the title holds


@dataclass
class ContextualResult:
    path: Path
    examples: int = 0
    modes: dict[str, int] = field(default_factory=lambda: {ANSWER: 0, DISTRACTORS: 0, WITHHELD: 0})
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> pairs left out
    stanza: str = ""
    stanza_path: Path | None = None

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _unit(*parts: str) -> int:
    return int(ids.hash_str("contextual", *parts)[:12], 16)


def check_shares(distractor_share: float, withheld_share: float) -> None:
    for name, value in (("--distractor-share", distractor_share), ("--withheld-share", withheld_share)):
        if not 0.0 <= value <= 1.0:
            raise ContextualError(f"{name} must be between 0 and 1 (got {value})")
    if distractor_share + withheld_share > 1.0:
        raise ContextualError(f"--distractor-share + --withheld-share is {distractor_share + withheld_share:g}; "
                              "at most 1")


def render_block(block: Block, text: str) -> str:
    return f"BEGININPUT\nBEGINCONTEXT\n{block.context_lines()}\nENDCONTEXT\n{text.strip()}\nENDINPUT"


def render_prompt(blocks: list[tuple[Block, str]], question: str) -> str:
    inputs = "\n".join(render_block(b, text) for b, text in blocks)
    return f"{inputs}\nBEGININSTRUCTION\n{question.strip()}\nENDINSTRUCTION"


def render_answer(answer: str, cited: Block | None) -> str:
    if cited is None:
        return NOT_IN_CONTEXT
    return f"{answer.strip()}\n\nSource:\n{cited.context_lines()}"


def _title(row: dict[str, object], titles: dict[str, str]) -> str:
    doc_id = str(row.get("doc_id", ""))
    if doc_id in titles:
        return titles[doc_id]
    messages = row.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    m = _TITLE.match(str(first.get("content", ""))) if isinstance(first, dict) else None
    return m.group(1) if m else ""


def _eligible(row: dict[str, object]) -> str:
    """Why a pair can't be an open-book example ('' when it can)."""
    if row.get("contextual"):
        return "already an open-book example (--contextual-share)"
    if not row.get("chunk_id") or not row.get("doc_id"):
        return "no chunk_id"
    if row.get("perspective") in SKIP_PERSPECTIVES or row.get("model") == "code":
        return f"perspective {row.get('perspective')} (not answered from the chunk text)"
    return ""


class Distractors:
    """Chunks of the train pairs' documents, to pick distractors from other documents by hash."""

    def __init__(self, blocks: dict[str, Block]):
        self.blocks = blocks
        self.order = sorted(blocks)  # chunk ids: the picks depend on the set, not on the file's row order
        self.docs = len({b.doc_id for b in blocks.values()})

    def pick(self, pair_id: str, doc_id: str, count: int) -> list[Block]:
        if self.docs < 2 or count <= 0:
            return []
        chosen: list[Block] = []
        n = len(self.order)
        for i in range(_PICKS):
            cand = self.blocks[self.order[_unit("distractor", pair_id, str(i)) % n]]
            if cand.doc_id != doc_id and cand not in chosen:
                chosen.append(cand)
                if len(chosen) == count:
                    return chosen
        start = _unit("distractor-scan", pair_id) % n  # few chunks of other documents: walk the list
        for k in range(n):
            cand = self.blocks[self.order[(start + k) % n]]
            if cand.doc_id != doc_id and cand not in chosen:
                chosen.append(cand)
                if len(chosen) == count:
                    break
        return chosen


def plan_modes(pair_ids: list[str], distractor_share: float, withheld_share: float) -> dict[str, str]:
    """pair_id -> mode for the pairs that get distractors or lose their chunk; exact shares, by hash rank."""
    ranked = sorted(pair_ids, key=lambda p: (ids.hash_str("contextual-mode", p), p))
    n_withheld = round(withheld_share * len(ranked))
    n_distract = round(distractor_share * len(ranked))
    modes = {p: WITHHELD for p in ranked[:n_withheld]}
    modes.update({p: DISTRACTORS for p in ranked[n_withheld:n_withheld + n_distract]})
    return modes


def export_contextual(
    store: Store,
    out_dir: Path,
    *,
    distractor_share: float = DISTRACTOR_SHARE,
    withheld_share: float = WITHHELD_SHARE,
) -> ContextualResult:
    """Write OUT/contextual.jsonl from OUT/train.jsonl and the store's chunks; the same inputs give the same bytes."""
    check_shares(distractor_share, withheld_share)
    source = _train_file(out_dir)
    result = ContextualResult(out_dir / NAME)
    with atomic_writer(result.path) as fh:
        for line in _examples(store, source, result, distractor_share, withheld_share):
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    result.stanza = ("# qagen export --contextual: open-book examples, rendered by the model's chat template\n"
                     f"datasets:\n{dataset_entry('messages', result.path)}\n")
    result.stanza_path = out_dir / STANZA_NAME
    with atomic_writer(result.stanza_path) as fh:
        fh.write(result.stanza)
    return result


def mix_into_train(
    store: Store,
    out_dir: Path,
    share: float,
    *,
    distractor_share: float = DISTRACTOR_SHARE,
    withheld_share: float = WITHHELD_SHARE,
    run_id: int | None = None,
) -> ContextualResult:
    """``qagen ingest --contextual-share S``: add an open-book example for a share S of train.jsonl's eligible
    pairs to train.jsonl itself, after its closed-book rows (which all stay), so ``qagen train`` learns both.

    The pairs are the first S of them ranked by a hash of their pair id (a re-run picks the same ones); among
    them the distractor and withheld shares apply as in contextual.jsonl. Rows already open-book (a re-mix) are
    not used again. ``run_id``: the run whose documents give the titles (default: the last finished ingest; the
    ingest that is writing train.jsonl passes its own). Returns what was added (``path`` is train.jsonl).
    """
    if not 0.0 < share <= 1.0:
        raise ContextualError(f"--contextual-share must be above 0 and at most 1 (got {share})")
    check_shares(distractor_share, withheld_share)
    source = _train_file(out_dir)  # read from here (this run's staged file while an ingest writes its outputs)
    result = ContextualResult(out_dir / "train.jsonl")
    eligible = [str(row.get("pair_id", "")) for _, row in read_rows(source) if not _eligible(row)]
    ranked = sorted(eligible, key=lambda p: (ids.hash_str("contextual-share", p), p))
    chosen = set(ranked[: round(share * len(ranked))])
    if not chosen:
        return result
    with atomic_writer(result.path) as fh:
        for _, row in read_rows(source):
            if not row.get("contextual"):  # a re-mix replaces the open-book rows, it does not stack them
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        for line in _examples(store, source, result, distractor_share, withheld_share, only=chosen, run_id=run_id):
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    return result


def _train_file(out_dir: Path) -> Path:
    source = current(out_dir / "train.jsonl")  # the file this run has written, while its outputs are staged
    if not source.is_file():
        raise ContextualError(f"no dataset in {out_dir} ({source} is missing): run `qagen ingest DOCS --out {out_dir}` "
                              "first")
    return source


def _examples(
    store: Store,
    source: Path,
    result: ContextualResult,
    distractor_share: float,
    withheld_share: float,
    *,
    only: set[str] | None = None,
    run_id: int | None = None,
) -> Iterator[dict[str, object]]:
    """The open-book rows for train.jsonl's eligible pairs (``only``: of these pair ids), in the file's order.

    Reads ``source`` twice (it is not held in memory); the caller writes the rows elsewhere, or to a temporary
    file that replaces ``source`` when it is done (atomic_writer), so both passes read the old file."""
    if run_id is None:
        run_id = store.latest_finished_run("ingest")
    titles = {doc_id: title for doc_id, _path, title in store.run_documents(run_id)} if run_id is not None else {}
    texts: dict[str, str] = {}  # pass 2's chunk texts, a bounded cache

    def text_of(chunk_id: str) -> str:
        if chunk_id not in texts:
            if len(texts) >= 4096:
                texts.clear()
            texts[chunk_id] = store.chunk_text(chunk_id) or ""
        return texts[chunk_id]

    # Pass 1: which pairs can be examples, and the chunks distractors come from (the chunks of every eligible
    # pair, chosen or not: a share does not shrink the distractor pool).
    pool: dict[str, Block] = {}  # chunk_id -> its block (ids and names only: texts are read when written)
    missing: set[str] = set()
    dates: dict[str, str] = {}  # doc_id -> its stated date ("" if none)
    eligible: list[str] = []
    for where, row in read_rows(source):
        turns(row, where)
        if why := _eligible(row):
            result.skip(why)
            continue
        chunk_id = str(row["chunk_id"])
        if chunk_id in missing or (chunk_id not in pool and store.chunk_text(chunk_id) is None):
            missing.add(chunk_id)
            result.skip("chunk not in the state store")
            continue
        date = row.get("date")
        if not isinstance(date, str) or not date:  # the file's own metadata (front matter, PDF properties)
            doc_id = str(row["doc_id"])
            if doc_id not in dates:
                dates[doc_id] = dict(store.document_meta(doc_id)).get("date", "")
            date = dates[doc_id]
        pool.setdefault(chunk_id, Block(chunk_id, str(row["doc_id"]), _title(row, titles), str(row.get("source", "")),
                                        date if isinstance(date, str) else ""))
        pair_id = str(row.get("pair_id", ""))
        if only is None or pair_id in only:
            eligible.append(pair_id)
    if not eligible:
        raise ContextualError(f"none of the pairs in {source} can be an open-book example "
                              f"({', '.join(f'{n} {why}' for why, n in result.skipped.items()) or 'no pairs'})")
    modes = plan_modes(eligible, distractor_share, withheld_share)
    distractors = Distractors(pool)
    wanted = set(eligible)

    # Pass 2: one example per eligible pair, in train.jsonl's order.
    for where, row in read_rows(source):
        if _eligible(row) or str(row["chunk_id"]) not in pool or str(row.get("pair_id", "")) not in wanted:
            continue
        t = turns(row, where)
        pair_id = str(row.get("pair_id", ""))
        own = pool[str(row["chunk_id"])]
        mode = modes.get(pair_id, ANSWER)
        others = distractors.pick(pair_id, own.doc_id, 1 + _unit("count", pair_id) % 2) if mode != ANSWER else []
        if not others:
            mode = ANSWER  # a single-document corpus has nothing to distract with
        if mode == WITHHELD:
            blocks, cited = others, None
        else:
            blocks, cited = list(others), own
            blocks.insert(_unit("position", pair_id) % (len(others) + 1), own)
        result.examples += 1
        result.modes[mode] += 1
        yield {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": render_prompt([(b, text_of(b.chunk_id)) for b in blocks], t.question)},
                {"role": "assistant", "content": render_answer(t.answer, cited)},
            ],
            **provenance(row),
            "contextual": mode,
            "context_chunk_ids": [b.chunk_id for b in blocks],
        }
