"""``OUT/report.html``: one self-contained page that shows what a run produced and what it threw away.

Before anyone spends GPU hours on a dataset they should *look* at it. This module reads one
run from the state database (never the JSONL alone: the store also knows what was dropped and
why), gathers the figures into a :class:`ReportData`, and renders them with a Jinja template
(autoescaped: documents and model output are hostile input) and inline SVG charts. The page
fetches nothing: a Content-Security-Policy forbids every network load.

The figures are SQL aggregates (``GROUP BY`` counts and sums, histograms binned in SQL or while
the rows stream by), and the only row lists are capped (the first ``MAX_TABLE_ROWS`` pairs,
``MAX_DOC_ROWS`` documents, ``MAX_ZERO_CHUNK_ROWS`` zero-pair chunks), so the report's memory
stays flat in the size of the run (build + write peak RSS: 195 MiB at 20,000 pairs, 202 MiB at
460,000; per-pair lists took 1.3 GiB there). Which pairs are in
``train.jsonl``/``eval.jsonl`` is found by streaming those files into a TEMP table of the store's
connection and joining; per-chunk counts go to another TEMP table. Both are dropped at the end.

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
import sqlite3
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import jinja2

from qagen.core import ids
from qagen.core.errors import StageError
from qagen.output.export import atomic_writer
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

# A run's pairs with their verdicts; a pair without a verdict row counts as exported.
_PAIRS = ("FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
          "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=r.pair_id ")
_EXPORTED = "coalesce(v.verdict,'exported')='exported'"
_SPLITS = "temp.qagen_report_splits"  # pair_id -> train|eval, from the JSONL files
_CHUNKS = "temp.qagen_report_chunks"  # (chunk_id, doc_id) -> pairs, non-identity pairs, exported pairs
_RUN_DOCS = "FROM run_docs rd JOIN documents d ON d.doc_id=rd.doc_id WHERE rd.run_id=?"
_ZERO = ("FROM chunks c JOIN run_docs rd ON rd.doc_id=c.doc_id AND rd.run_id=? WHERE NOT EXISTS "
         f"(SELECT 1 FROM {_CHUNKS} a WHERE a.chunk_id=c.chunk_id AND a.exported>0)")
_REFINED = "FROM refined rf JOIN run_pairs r ON r.pair_id=rf.final_pair_id AND r.run_id=? "


class ReportError(StageError):
    """No run to report on (empty store, unknown run id)."""


# --- gathering -------------------------------------------------------------


def latest_run(store: Store) -> int:
    """The newest finished ingest run."""
    row = store.db.execute(
        "SELECT run_id FROM runs WHERE command='ingest' AND finished_at IS NOT NULL ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        raise ReportError(f"{store.path} holds no finished ingest run: run `qagen ingest` first")
    return int(row[0])


def _pair_ids(fh: IO[str]) -> Iterator[str]:
    for line in fh:
        try:
            yield str(json.loads(line)["pair_id"])
        except (ValueError, KeyError, TypeError):
            continue


@contextmanager
def _scratch(store: Store, run_id: int, out_dir: Path) -> Iterator[None]:
    """The TEMP tables the queries join: JSONL membership (streamed, never held) and per-chunk counts."""
    db = store.db
    drop = (f"DROP TABLE IF EXISTS {_SPLITS}", f"DROP TABLE IF EXISTS {_CHUNKS}")
    for sql in drop:
        db.execute(sql)
    with store.transaction():  # one atomic write for the inserts, inside the store's group transaction if open
        db.execute(f"CREATE TABLE {_SPLITS}(pair_id TEXT PRIMARY KEY, split TEXT NOT NULL) WITHOUT ROWID")
        for split, name in JSONL_SPLITS:
            if (out_dir / name).is_file():
                with (out_dir / name).open(encoding="utf-8") as fh:  # a later file wins, as a dict would
                    db.executemany(f"INSERT OR REPLACE INTO {_SPLITS} VALUES(?,?)", ((p, split) for p in _pair_ids(fh)))
        db.execute(f"CREATE TABLE {_CHUNKS}(chunk_id TEXT, doc_id TEXT, pairs INTEGER, generated INTEGER, "
                   "exported INTEGER, PRIMARY KEY(chunk_id, doc_id)) WITHOUT ROWID")
        db.execute(f"INSERT INTO {_CHUNKS} SELECT p.chunk_id, p.doc_id, count(*), sum(p.perspective!='identity'), "
                   f"sum({_EXPORTED}) {_PAIRS} WHERE r.run_id=? GROUP BY p.chunk_id, p.doc_id", (run_id,))
    try:
        yield
    finally:
        for sql in drop:
            db.execute(sql)


def _pairs_table(db: sqlite3.Connection, run_id: int) -> list[PairRow]:
    sql = (
        "SELECT p.pair_id, p.perspective, p.question, p.answer, p.doc_id, rd.path, p.chunk_id, c.idx, c.section, p.model, "
        "p.extra, v.verdict, v.detail, v.judge_score, v.grounded, v.grounding, v.quote, v.duplicate_of, s.split "
        "FROM (SELECT r.run_id, r.pair_id, r.sort_key FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
        "      WHERE r.run_id=? ORDER BY r.sort_key LIMIT ?) r JOIN pairs p ON p.pair_id=r.pair_id "
        "LEFT JOIN run_docs rd ON rd.run_id=r.run_id AND rd.doc_id=p.doc_id "
        "LEFT JOIN chunks c ON c.chunk_id=p.chunk_id "
        "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=r.pair_id "
        f"LEFT JOIN {_SPLITS} s ON s.pair_id=r.pair_id ORDER BY r.sort_key"
    )
    cur = db.execute(sql, (run_id, MAX_TABLE_ROWS))
    names = [c[0] for c in cur.description]
    rows = []
    for values in cur:
        r = dict(zip(names, values, strict=True))
        extra = {str(k): str(v) for k, v in json.loads(r["extra"])}
        revisions = extra.get("revisions", "")
        rows.append(
            PairRow(
                pair_id=r["pair_id"], perspective=r["perspective"], question=r["question"], answer=r["answer"],
                doc_id=r["doc_id"], doc_path=r["path"] or "", chunk_id=r["chunk_id"], chunk_idx=r["idx"],
                section=r["section"] or "", model=r["model"], verdict=r["verdict"] or "exported",
                detail=r["detail"] or "", judge_score=r["judge_score"],
                grounded=None if r["grounded"] is None else bool(r["grounded"]), grounding=r["grounding"],
                quote=r["quote"] or "", duplicate_of=r["duplicate_of"],
                revisions=int(revisions) if revisions.isdigit() else None, split=r["split"] or "",
            )
        )
    return rows


def _documents(db: sqlite3.Connection, run_id: int, order: str, limit: int) -> list[DocRow]:
    rows = db.execute(
        f"WITH da AS (SELECT doc_id, sum(pairs) g, sum(exported) e FROM {_CHUNKS} GROUP BY doc_id) "
        "SELECT d.doc_id, rd.path, d.title, d.n_chars, (SELECT count(*) FROM chunks c WHERE c.doc_id=d.doc_id), "
        "coalesce(da.g, 0) AS generated, coalesce(da.e, 0) "
        f"FROM run_docs rd JOIN documents d ON d.doc_id=rd.doc_id LEFT JOIN da ON da.doc_id=d.doc_id "
        f"WHERE rd.run_id=? ORDER BY {order} LIMIT ?",
        (run_id, limit),
    )
    return [DocRow(*r) for r in rows]


def _zero_chunks(db: sqlite3.Connection, run_id: int) -> list[ChunkRow]:
    rows = db.execute(
        "SELECT c.chunk_id, rd.path, c.idx, c.section, c.n_tokens, "
        f"(SELECT coalesce(sum(a.generated), 0) FROM {_CHUNKS} a WHERE a.chunk_id=c.chunk_id) "
        f"{_ZERO} ORDER BY rd.path, c.idx LIMIT ?",
        (run_id, MAX_ZERO_CHUNK_ROWS),
    ).fetchall()
    out = []
    for i, (chunk_id, path, idx, section, n_tokens, generated) in enumerate(rows):
        text = ""  # only the first few texts go on the page
        if i < MAX_ZERO_CHUNK_TEXTS:
            text = db.execute("SELECT text FROM chunks WHERE chunk_id=?", (chunk_id,)).fetchone()[0]
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
    db: sqlite3.Connection, run_id: int, q: tuple[int, int], a: tuple[int, int]
) -> tuple[Histogram, Histogram]:
    """Question and answer lengths of the exported pairs, HIST_BINS equal bins from min to max, binned in SQL."""
    exprs: list[str] = []
    params: list[int] = []
    edges: list[list[float]] = []
    for column, (lo, hi) in (("p.question", q), ("p.answer", a)):
        if hi > lo:  # integer arithmetic: bin i holds lo + (hi-lo)*i/n <= x < lo + (hi-lo)*(i+1)/n
            exprs.append(f"min(?, (length({column}) - ?) * ? / ?)")
            params += [HIST_BINS - 1, lo, HIST_BINS, hi - lo]
            edges.append([lo + (hi - lo) * i / HIST_BINS for i in range(HIST_BINS + 1)])
        else:  # one length only: one bin around it
            exprs.append("0")
            edges.append([lo - 0.5, lo + 0.5])
    qc, ac = [0] * (len(edges[0]) - 1), [0] * (len(edges[1]) - 1)
    for qb, ab, n in db.execute(
        f"SELECT {exprs[0]}, {exprs[1]}, count(*) {_PAIRS} WHERE r.run_id=? AND {_EXPORTED} GROUP BY 1, 2",
        (*params, run_id),
    ):
        qc[qb] += n
        ac[ab] += n
    return Histogram(edges[0], qc), Histogram(edges[1], ac)


def _pair_figures(db: sqlite3.Connection, run_id: int, data: ReportData, calls: dict[str, int]) -> None:
    """Verdicts, perspectives, grounding, models and lengths: one GROUP BY over the run's pairs."""
    rows = db.execute(
        "SELECT p.perspective, coalesce(v.verdict,'exported') AS verdict, count(*), count(DISTINCT p.chunk_id), "
        "coalesce(sum(v.grounded=0), 0), count(v.grounded), json_group_array(DISTINCT p.model), "
        "min(length(p.question)), max(length(p.question)), min(length(p.answer)), max(length(p.answer)) "
        f"{_PAIRS} WHERE r.run_id=? GROUP BY 1, 2 ORDER BY min(r.sort_key)",
        (run_id,),
    ).fetchall()
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
        models.update(m for m in json.loads(group_models) if m)
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
        data.question_lengths, data.answer_lengths = _length_histograms(db, run_id, q_range, a_range)


def _judge(db: sqlite3.Connection, run_id: int, data: ReportData) -> None:
    data.has_verdicts = db.execute("SELECT EXISTS(SELECT 1 FROM verdicts WHERE run_id=?)", (run_id,)).fetchone()[0] == 1
    edges = [i / HIST_BINS for i in range(HIST_BINS + 1)]
    scores = db.execute(f"SELECT v.judge_score {_PAIRS} WHERE r.run_id=? AND v.judge_score IS NOT NULL", (run_id,))
    counts, data.judge_scored = _binned((float(s) for (s,) in scores), edges)
    data.judge_hist = Histogram(edges, counts)
    data.judge_methods = dict(db.execute(
        "SELECT judge_method, count(*) FROM verdicts WHERE run_id=? GROUP BY judge_method ORDER BY min(pair_id)", (run_id,)))
    data.judge_threshold = _judge_threshold(data.settings)


def _duplicates(db: sqlite3.Connection, run_id: int) -> list[DuplicateRow]:
    rows = db.execute(
        "SELECT p.pair_id, p.perspective, p.question, coalesce(q.question, v.duplicate_of, '') "
        f"{_PAIRS}LEFT JOIN run_pairs r2 ON r2.run_id=r.run_id AND r2.pair_id=v.duplicate_of "
        "LEFT JOIN pairs q ON q.pair_id=r2.pair_id "
        "WHERE r.run_id=? AND v.verdict='duplicate' ORDER BY r.sort_key LIMIT ?",
        (run_id, MAX_DUPLICATES),
    )
    return [DuplicateRow(*r) for r in rows]


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


def _refinement(db: sqlite3.Connection, run_id: int, data: ReportData) -> None:
    rounds_h: dict[int, int] = {}
    revisions_h: dict[int, int] = {}
    stops: dict[str, int] = {}
    for rounds, revisions, stop, n in db.execute(
        "SELECT (SELECT max(round) FROM refinements x WHERE x.final_pair_id=rf.final_pair_id), rf.revisions, "
        f"rf.stop_reason, count(*) {_REFINED} GROUP BY 1, 2, 3",
        (run_id,),
    ):
        data.refined_pairs += n
        rounds_h[int(rounds or 0)] = rounds_h.get(int(rounds or 0), 0) + n
        revisions_h[int(revisions)] = revisions_h.get(int(revisions), 0) + n
        stops[str(stop)] = stops.get(str(stop), 0) + n
    data.rounds_histogram = dict(sorted(rounds_h.items()))
    data.revisions_histogram = dict(sorted(revisions_h.items()))
    data.stop_reasons = dict(sorted(stops.items()))
    finals = db.execute(
        f"SELECT rf.final_pair_id, p.perspective, p.question, p.answer {_REFINED} "
        "JOIN pairs p ON p.pair_id=rf.final_pair_id WHERE rf.revisions != 0 "
        "AND EXISTS (SELECT 1 FROM refinements x WHERE x.final_pair_id=rf.final_pair_id) "
        "ORDER BY rf.revisions DESC, rf.final_pair_id LIMIT ?",
        (run_id, MAX_EXAMPLES),
    ).fetchall()
    for final_id, perspective, final_q, final_a in finals:
        rounds = db.execute(
            "SELECT round, question, answer, critique, problems FROM refinements WHERE final_pair_id=? ORDER BY round",
            (final_id,),
        ).fetchall()
        draft_q, draft_a = rounds[0][1], rounds[0][2]
        data.examples.append(
            RefineExample(
                pair_id=final_id, perspective=perspective, draft_question=draft_q, draft_answer=draft_a,
                critiques=[(int(r[0]), str(r[3]), [str(x) for x in json.loads(r[4])]) for r in rounds],
                final_question=final_q, final_answer=final_a,
                question_diff=word_diff(draft_q, final_q), answer_diff=word_diff(draft_a, final_a),
            )
        )


def _failures(db: sqlite3.Connection, run_id: int) -> tuple[list[FailureRow], int]:
    rows = []
    for stage, n, first in sorted(db.execute(
        "SELECT stage, count(*), min(id) FROM failures WHERE run_id=? GROUP BY stage", (run_id,)
    ).fetchall()):
        example = db.execute("SELECT prompt_id, chunk_id, error FROM failures WHERE id=?", (first,)).fetchone()
        rows.append(FailureRow(stage, n, *example))
    return rows, sum(r.count for r in rows)


def _judge_threshold(settings: dict[str, object]) -> float | None:
    for key in JUDGE_THRESHOLD_KEYS:
        value = settings.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def build_report(store: Store, run_id: int, out_dir: Path) -> ReportData:
    """Gather every figure the page shows for one run, from the state database (SQL aggregates, capped row lists)."""
    db = store.db
    row = db.execute(
        "SELECT run_id, command, status, started_at, finished_at, settings, summary FROM runs WHERE run_id=?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise ReportError(f"run {run_id} is not in {store.path}")
    summary = json.loads(row[6]) if row[6] else {}
    data = ReportData(run_id, row[1], row[2], row[3], row[4] or "", json.loads(row[5] or "{}"), summary)
    data.skipped = list(summary.get("documents_skipped") or [])  # type: ignore[call-overload]
    _pair_figures(db, run_id, data, dict(summary.get("calls_per_perspective") or {}))  # type: ignore[call-overload]
    _judge(db, run_id, data)
    with _scratch(store, run_id, out_dir):
        data.table_rows = _pairs_table(db, run_id)
        data.split_counts = {s: 0 for s, _ in JSONL_SPLITS} | dict(db.execute(
            f"SELECT s.split, count(*) {_PAIRS} JOIN {_SPLITS} s ON s.pair_id=r.pair_id "
            f"WHERE r.run_id=? AND {_EXPORTED} GROUP BY s.split", (run_id,)))
        data.documents_total = db.execute(f"SELECT count(*) {_RUN_DOCS}", (run_id,)).fetchone()[0]
        data.chunks_total = db.execute(
            f"SELECT count(*) FROM chunks c WHERE c.doc_id IN (SELECT d.doc_id {_RUN_DOCS})", (run_id,)).fetchone()[0]
        data.documents = _documents(db, run_id, "rd.path", MAX_DOC_ROWS)
        data.top_documents = _documents(db, run_id, "generated DESC, rd.path", MAX_DOC_BARS)
        data.zero_chunks_total = db.execute(f"SELECT count(*) {_ZERO}", (run_id,)).fetchone()[0]
        data.zero_chunks = _zero_chunks(db, run_id)
    data.duplicates = _duplicates(db, run_id)
    _refinement(db, run_id, data)
    data.failures, data.failures_total = _failures(db, run_id)
    return data


# --- rendering -------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("qagen.output", "templates"),
        autoescape=True,  # documents and model output are hostile input
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
