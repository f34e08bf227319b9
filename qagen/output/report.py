"""``OUT/report.html``: one self-contained page that shows what a run produced and what it threw away.

Before anyone spends GPU hours on a dataset they should *look* at it. This module reads one
run from the state database (never the JSONL alone: the store also knows what was dropped and
why), gathers the figures into a :class:`ReportData`, and renders them with a Jinja template
(autoescaped: documents and model output are hostile input) and inline SVG charts. The page
fetches nothing: a Content-Security-Policy forbids every network load.

The figures are SQL aggregates (``GROUP BY`` counts and sums, histograms binned in SQL or while
the rows stream by), asked of the store's named queries (:mod:`qagen.store.report`; no SQL
here), and the only row lists are capped (the first ``MAX_TABLE_ROWS`` pairs,
``MAX_DOC_ROWS`` documents, ``MAX_ZERO_CHUNK_ROWS`` zero-pair chunks), so the report's memory
stays flat in the size of the run (build + write peak RSS: 195 MiB at 20,000 pairs, 202 MiB at
460,000; per-pair lists took 1.3 GiB there). Which pairs are in
``train.jsonl``/``eval.jsonl`` is found by streaming those files into a TEMP table of the store's
connection and joining (:meth:`Store.report_tables`); per-chunk counts go to another TEMP table.
Both are dropped at the end.

Definitions used on the page:

- *generated*: a pair this run produced (``run_pairs``); *exported*: its verdict is
  ``exported`` (a run without verdict rows, i.e. before the judge ran, exports every pair).
- *yield* of a perspective: exported pairs per LLM call of that perspective (calls counted
  whether they were sent or served from the cache); code-built perspectives have no calls.
- a *zero-pair chunk*: a chunk of a run document that has no exported pair.
"""

from __future__ import annotations

import difflib
import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import jinja2
import markupsafe

from qagen.core import ids
from qagen.core.errors import StageError
from qagen.core.records import VERDICT_SOURCES
from qagen.output.atomic import atomic_writer, current
from qagen.output.coverage_map import coverage_map
from qagen.output.report_data import (
    ChunkRow,
    DocRow,
    DuplicateRow,
    FailureRow,
    Histogram,
    PairRow,
    PerspectiveRow,
    RefineExample,
    ReportData,
)
from qagen.store import Store

REPORT_NAME = "report.html"
MAX_TABLE_ROWS = 10_000  # the pairs table; beyond this the page gets too heavy to browse
MAX_DOC_ROWS = 2_000  # the documents table (ordered by path)
MAX_ZERO_CHUNK_ROWS = 2_000  # the zero-pair chunks table
MAX_ZERO_CHUNK_TEXTS = 300  # zero-pair chunks whose text is embedded in the page
MAX_DUPLICATES = 15  # dropped near-duplicates listed with the question they repeat
MAX_DOC_BARS = 25  # pairs-per-document bars (the documents with most pairs)
MAX_EXAMPLES = 3  # draft -> critique -> final examples
HIST_BINS = 20  # judge scores (over [0, 1]) and question/answer lengths (over min..max)
# Settings keys that may hold the judge's acceptance threshold (the judge names it; first match wins).
JUDGE_THRESHOLD_KEYS = ("judge_threshold", "min_judge_score", "judge_min_score")
VERDICTS = ("exported", "judge_rejected", "ungrounded", "duplicate", "contaminated")
JSONL_SPLITS = (("train", "train.jsonl"), ("eval", "eval.jsonl"))


class ReportError(StageError):
    """No run to report on (empty store, unknown run id)."""


# --- gathering -------------------------------------------------------------


def latest_run(store: Store) -> int:
    """The newest finished ingest run."""
    run_id = store.latest_finished_run("ingest")
    if run_id is None:
        raise ReportError(f"{store.path} holds no finished ingest run: run `qagen ingest` first")
    return run_id


def _pair_ids(fh: IO[str]) -> Iterator[str]:
    for line in fh:
        try:
            yield str(json.loads(line)["pair_id"])
        except (ValueError, KeyError, TypeError):
            continue


def _split_ids(out_dir: Path) -> Iterator[tuple[str, str]]:
    """(pair_id, split) of OUT's JSONL files, streamed (a later file wins, as a dict would)."""
    for split, name in JSONL_SPLITS:
        path = current(out_dir / name)  # the file this run has written, while its outputs are staged
        if path.is_file():
            with path.open(encoding="utf-8") as fh:
                yield from ((p, split) for p in _pair_ids(fh))


def _pairs_table(store: Store, run_id: int) -> list[PairRow]:
    rows = []
    for (pair_id, perspective, question, answer, doc_id, path, chunk_id, idx, section, model, extra_json,
         verdict, detail, judge_score, grounded, grounding, quote, duplicate_of, split) in store.report_pairs(
            run_id, MAX_TABLE_ROWS):
        extra = {str(k): str(v) for k, v in json.loads(extra_json)}
        revisions = extra.get("revisions", "")
        rows.append(
            PairRow(
                pair_id=pair_id, perspective=perspective, question=question, answer=answer,
                doc_id=doc_id, doc_path=path or "", chunk_id=chunk_id, chunk_idx=idx,
                section=section or "", model=model, verdict=verdict or "exported",
                detail=detail or "", judge_score=judge_score,
                grounded=None if grounded is None else bool(grounded), grounding=grounding,
                quote=quote or "", duplicate_of=duplicate_of,
                revisions=int(revisions) if revisions.isdigit() else None, split=split or "",
            )
        )
    return rows


def _documents(store: Store, run_id: int, limit: int, *, most_pairs_first: bool = False) -> list[DocRow]:
    return [DocRow(*r) for r in store.report_documents(run_id, limit, most_pairs_first=most_pairs_first)]


def _zero_chunks(store: Store, run_id: int) -> list[ChunkRow]:
    out = []
    for i, (chunk_id, path, idx, section, n_tokens, generated) in enumerate(
            store.report_zero_chunks(run_id, MAX_ZERO_CHUNK_ROWS)):
        text = ""  # only the first few texts go on the page
        if i < MAX_ZERO_CHUNK_TEXTS:
            text = store.chunk_text(chunk_id) or ""
        out.append(ChunkRow(chunk_id, path, idx, section, n_tokens, text, int(generated)))
    return out


def _binned(values: Iterable[float], edges: list[float]) -> tuple[list[int], int]:
    """Counts per bin, streamed, and how many values came: bins [a, b), the last one closed; values
    outside the edges are not binned (as numpy leaves them out)."""
    counts, seen = [0] * (len(edges) - 1), 0
    for x in values:
        seen += 1
        if edges[0] <= x <= edges[-1]:
            counts[min(bisect_right(edges, x) - 1, len(counts) - 1)] += 1
    return counts, seen


def _length_histograms(
    store: Store, run_id: int, q: tuple[int, int], a: tuple[int, int]
) -> tuple[Histogram, Histogram]:
    """Question and answer lengths of the exported pairs, HIST_BINS equal bins from min to max, binned in SQL."""
    edges: list[list[float]] = []
    for lo, hi in (q, a):
        if hi > lo:  # integer arithmetic: bin i holds lo + (hi-lo)*i/n <= x < lo + (hi-lo)*(i+1)/n
            edges.append([lo + (hi - lo) * i / HIST_BINS for i in range(HIST_BINS + 1)])
        else:  # one length only: one bin around it
            edges.append([lo - 0.5, lo + 0.5])
    qc, ac = [0] * (len(edges[0]) - 1), [0] * (len(edges[1]) - 1)
    for qb, ab, n in store.report_length_bins(run_id, q, a, HIST_BINS):
        qc[qb] += n
        ac[ab] += n
    return Histogram(edges[0], qc), Histogram(edges[1], ac)


def _pair_figures(store: Store, run_id: int, data: ReportData, calls: dict[str, int]) -> None:
    """Verdicts, perspectives, grounding, models and lengths: one GROUP BY over the run's pairs."""
    rows = store.report_pair_groups(run_id)
    verdicts: dict[str, int] = {v: 0 for v in VERDICTS}
    generated: dict[str, int] = {}
    exported: dict[str, int] = {}
    chunks: dict[str, int] = {}
    models: set[str] = set()
    grounded = {"yes": 0, "no": 0, "unchecked": 0}
    q_range: tuple[int, int] | None = None
    a_range: tuple[int, int] | None = None
    for name, verdict, n, n_chunks, not_grounded, checked, group_models, q_min, q_max, a_min, a_max in rows:
        verdicts[verdict] = verdicts.get(verdict, 0) + n
        generated[name] = generated.get(name, 0) + n
        grounded["yes"] += checked - not_grounded
        grounded["no"] += not_grounded
        grounded["unchecked"] += n - checked
        models.update(m for m in group_models if m)
        if verdict == "exported":
            exported[name], chunks[name] = n, n_chunks
            q_range = (q_min, q_max) if q_range is None else (min(q_range[0], q_min), max(q_range[1], q_max))
            a_range = (a_min, a_max) if a_range is None else (min(a_range[0], a_min), max(a_range[1], a_max))
    data.generated = sum(generated.values())
    data.verdict_counts = verdicts
    data.grounded = grounded
    data.models = sorted(models | ({str(data.summary["model"])} if data.summary.get("model") else set()))
    data.perspectives = [
        PerspectiveRow(n, calls.get(n), generated.get(n, 0), exported.get(n, 0), chunks.get(n, 0))
        for n in sorted(set(generated) | set(calls))
    ]
    if q_range is not None and a_range is not None:
        data.question_lengths, data.answer_lengths = _length_histograms(store, run_id, q_range, a_range)


def _judge(store: Store, run_id: int, data: ReportData) -> None:
    data.has_verdicts = store.report_has_verdicts(run_id)
    edges = [i / HIST_BINS for i in range(HIST_BINS + 1)]
    counts, data.judge_scored = _binned(store.report_judge_scores(run_id), edges)
    data.judge_hist = Histogram(edges, counts)
    data.judge_methods = store.report_judge_methods(run_id)
    data.judge_threshold = _judge_threshold(data.settings)


def _duplicates(store: Store, run_id: int) -> list[DuplicateRow]:
    return [DuplicateRow(*r) for r in store.report_duplicates(run_id, MAX_DUPLICATES)]


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """Word-level difference as (eq|del|ins, text) runs, so a reader sees what a revision changed."""
    a, b = re.findall(r"\S+|\s+", before), re.findall(r"\S+|\s+", after)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("eq", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(("del", "".join(a[i1:i2])))
        if j2 > j1:
            out.append(("ins", "".join(b[j1:j2])))
    return out


def _refinement(store: Store, run_id: int, data: ReportData) -> None:
    rounds_h: dict[int, int] = {}
    revisions_h: dict[int, int] = {}
    stops: dict[str, int] = {}
    for rounds, revisions, stop, n in store.report_refinement_groups(run_id):
        data.refined_pairs += n
        rounds_h[int(rounds or 0)] = rounds_h.get(int(rounds or 0), 0) + n
        revisions_h[int(revisions)] = revisions_h.get(int(revisions), 0) + n
        stops[str(stop)] = stops.get(str(stop), 0) + n
    data.rounds_histogram = dict(sorted(rounds_h.items()))
    data.revisions_histogram = dict(sorted(revisions_h.items()))
    data.stop_reasons = dict(sorted(stops.items()))
    for final_id, perspective, final_q, final_a in store.report_revised_pairs(run_id, MAX_EXAMPLES):
        rounds = store.refinement_rounds(final_id)
        draft_q, draft_a = rounds[0][1], rounds[0][2]
        data.examples.append(
            RefineExample(
                pair_id=final_id, perspective=perspective, draft_question=draft_q, draft_answer=draft_a,
                critiques=[(r[0], r[3], r[4]) for r in rounds],
                final_question=final_q, final_answer=final_a,
                question_diff=word_diff(draft_q, final_q), answer_diff=word_diff(draft_a, final_a),
            )
        )


def _failures(store: Store, run_id: int) -> tuple[list[FailureRow], int]:
    rows = [FailureRow(*r) for r in store.failures_by_stage(run_id)]
    return rows, sum(r.count for r in rows)


def _judge_threshold(settings: dict[str, object]) -> float | None:
    for key in JUDGE_THRESHOLD_KEYS:
        value = settings.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def build_report(store: Store, run_id: int, out_dir: Path) -> ReportData:
    """Gather every figure the page shows for one run, from the state database (SQL aggregates, capped row lists)."""
    run = store.run_record(run_id)
    if run is None:
        raise ReportError(f"run {run_id} is not in {store.path}")
    summary = run.summary
    data = ReportData(run_id, run.command, run.status, run.started_at, run.finished_at or "", run.settings, summary)
    data.skipped = list(summary.get("documents_skipped") or [])  # type: ignore[call-overload]
    _pair_figures(store, run_id, data, dict(summary.get("calls_per_perspective") or {}))  # type: ignore[call-overload]
    _judge(store, run_id, data)
    with store.report_tables(run_id, _split_ids(out_dir)):
        data.table_rows = _pairs_table(store, run_id)
        data.split_counts = {s: 0 for s, _ in JSONL_SPLITS} | store.report_split_counts(run_id)
        data.documents_total = store.report_document_count(run_id)
        data.chunks_total = store.report_chunk_count(run_id)
        data.documents = _documents(store, run_id, MAX_DOC_ROWS)
        data.top_documents = _documents(store, run_id, MAX_DOC_BARS, most_pairs_first=True)
        data.zero_chunks_total = store.report_zero_chunk_count(run_id)
        data.zero_chunks = _zero_chunks(store, run_id)
    data.duplicates = _duplicates(store, run_id)
    _refinement(store, run_id, data)
    data.failures, data.failures_total = _failures(store, run_id)
    data.exam_questions = int(summary.get("exam_questions") or 0)  # type: ignore[call-overload]
    facts = summary.get("facts") or {}
    if facts:  # the fact ledger ran: its coverage map
        data.coverage = coverage_map(store, run_id, int(facts.get("k", 1)))  # type: ignore[union-attr,call-overload]
    data.knowledge_table = _eval_table(out_dir / "eval_report.json", "knowledge_table")
    data.open_book_table = _eval_table(out_dir / "eval_report.json", "open_book_table")
    return data


def _eval_table(path: Path, key: str) -> str:
    """A table of the last eval (the closed-book knowledge table, the open-book one), if there is one (a damaged
    file is left out)."""
    try:
        return str(json.loads(path.read_text()).get(key) or "")
    except (OSError, ValueError, AttributeError):
        return ""


# --- rendering -------------------------------------------------------------


# Control characters and bidirectional overrides (a file named "report\u202etxt.exe") would reorder or hide what
# the page shows: every value the template prints gets them as visible escapes instead.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(value: object) -> object:
    if not isinstance(value, str) or not _INVISIBLE.search(value):
        return value
    shown = _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    return markupsafe.Markup(shown) if isinstance(value, markupsafe.Markup) else shown


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("qagen.output", "templates"),
        autoescape=True,  # documents and model output are hostile input
        finalize=_visible,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = ids.short
    env.filters["num"] = lambda v, d=2: "n/a" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    return env


def render_report(data: ReportData) -> str:
    from qagen.output.report_charts import charts_for

    env = _environment()
    return env.get_template("report.html.j2").render(
        d=data,
        charts=charts_for(data),
        sources=VERDICT_SOURCES,
        table_rows=data.table_rows,
        zero_texts=data.zero_chunks[:MAX_ZERO_CHUNK_TEXTS],
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def write_report(store: Store, run_id: int, out_dir: Path) -> Path:
    """Write ``OUT/report.html`` for one run (atomically). Works on an open store, e.g. inside ``ingest``."""
    html = render_report(build_report(store, run_id, out_dir))
    path = out_dir / REPORT_NAME
    with atomic_writer(path) as fh:
        fh.write(html)
    return path
