"""``OUT/report.html``: one self-contained page that shows what a run produced and what it threw away.

Before anyone spends GPU hours on a dataset they should *look* at it. This module reads one
run from the state database (never the JSONL alone: the store also knows what was dropped and
why), gathers the figures into a :class:`ReportData`, and renders them with a Jinja template
(autoescaped: documents and model output are hostile input) and inline SVG charts. The page
fetches nothing: a Content-Security-Policy forbids every network load.

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
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from . import ids
from .export import atomic_writer
from .store import Store

REPORT_NAME = "report.html"
MAX_TABLE_ROWS = 10_000  # the pairs table; beyond this the page gets too heavy to browse
MAX_ZERO_CHUNK_TEXTS = 300  # zero-pair chunks whose text is embedded in the page
MAX_EXAMPLES = 3  # draft -> critique -> final examples
# Settings keys that may hold the judge's acceptance threshold (the judge names it; first match wins).
JUDGE_THRESHOLD_KEYS = ("judge_threshold", "min_judge_score", "judge_min_score")
VERDICTS = ("exported", "judge_rejected", "ungrounded", "duplicate", "contaminated")


class ReportError(RuntimeError):
    """No run to report on (empty store, unknown run id)."""


@dataclass(frozen=True)
class DocRow:
    doc_id: str
    path: str
    title: str
    n_chars: int
    chunks: int
    generated: int
    exported: int


@dataclass(frozen=True)
class ChunkRow:
    chunk_id: str
    doc_path: str
    idx: int
    section: str
    n_tokens: int
    text: str
    generated: int  # pairs generated from it (all were thrown away when > 0)


@dataclass(frozen=True)
class PerspectiveRow:
    name: str
    calls: int | None  # None: built by code, or unknown (no run summary)
    generated: int
    exported: int
    chunks: int  # distinct chunks with at least one exported pair

    @property
    def pairs_per_call(self) -> float | None:
        return self.exported / self.calls if self.calls else None


@dataclass(frozen=True)
class PairRow:
    pair_id: str
    perspective: str
    question: str
    answer: str
    doc_id: str
    doc_path: str
    chunk_id: str
    chunk_idx: int | None
    section: str
    model: str
    verdict: str
    detail: str
    judge_score: float | None
    grounded: bool | None
    grounding: float | None
    quote: str
    duplicate_of: str | None
    revisions: int | None
    split: str  # train | eval | "" (not in the JSONL files)


@dataclass(frozen=True)
class FailureRow:
    stage: str
    count: int
    prompt_id: str
    chunk_id: str
    error: str


@dataclass(frozen=True)
class RefineExample:
    pair_id: str
    perspective: str
    draft_question: str
    draft_answer: str
    critiques: list[tuple[int, str, list[str]]]  # (round, critique, problems)
    final_question: str
    final_answer: str
    question_diff: list[tuple[str, str]]  # (eq|del|ins, text)
    answer_diff: list[tuple[str, str]]


@dataclass
class ReportData:
    run_id: int
    command: str
    status: str
    started_at: str
    finished_at: str
    settings: dict[str, object]
    summary: dict[str, object]
    models: list[str] = field(default_factory=list)
    documents: list[DocRow] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    chunks_total: int = 0
    zero_chunks: list[ChunkRow] = field(default_factory=list)
    perspectives: list[PerspectiveRow] = field(default_factory=list)
    pairs: list[PairRow] = field(default_factory=list)
    has_verdicts: bool = False
    verdict_counts: dict[str, int] = field(default_factory=dict)
    judge_scores: list[float] = field(default_factory=list)
    judge_methods: dict[str, int] = field(default_factory=dict)
    judge_threshold: float | None = None
    grounded: dict[str, int] = field(default_factory=dict)  # yes | no | unchecked
    duplicates: list[tuple[PairRow, str]] = field(default_factory=list)  # (dropped pair, question it repeats)
    refined_pairs: int = 0
    rounds_histogram: dict[int, int] = field(default_factory=dict)  # critic rounds per pair -> pairs
    revisions_histogram: dict[int, int] = field(default_factory=dict)
    stop_reasons: dict[str, int] = field(default_factory=dict)
    examples: list[RefineExample] = field(default_factory=list)
    failures: list[FailureRow] = field(default_factory=list)
    failures_total: int = 0

    @property
    def exported(self) -> list[PairRow]:
        return [p for p in self.pairs if p.verdict == "exported"]

    @property
    def thrown_away(self) -> int:
        return len(self.pairs) - len(self.exported)


# --- gathering -------------------------------------------------------------


def latest_run(store: Store) -> int:
    """The newest finished ingest run."""
    row = store.db.execute(
        "SELECT run_id FROM runs WHERE command='ingest' AND finished_at IS NOT NULL ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        raise ReportError(f"{store.path} holds no finished ingest run: run `qagen ingest` first")
    return int(row[0])


def _split_map(out_dir: Path) -> dict[str, str]:
    """pair_id -> train|eval, from the JSONL files this run wrote (absent files: empty)."""
    found: dict[str, str] = {}
    for split, name in (("train", "train.jsonl"), ("eval", "eval.jsonl")):
        path = out_dir / name
        if not path.is_file():
            continue
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    found[str(json.loads(line)["pair_id"])] = split
                except (ValueError, KeyError, TypeError):
                    continue
    return found


def _pairs(store: Store, run_id: int, splits: dict[str, str]) -> list[PairRow]:
    sql = (
        "SELECT p.pair_id, p.perspective, p.question, p.answer, p.doc_id, rd.path, p.chunk_id, c.idx, c.section, p.model, "
        "p.extra, v.verdict, v.detail, v.judge_score, v.grounded, v.grounding, v.quote, v.duplicate_of "
        "FROM run_pairs r JOIN pairs p ON p.pair_id=r.pair_id "
        "LEFT JOIN run_docs rd ON rd.run_id=r.run_id AND rd.doc_id=p.doc_id "
        "LEFT JOIN chunks c ON c.chunk_id=p.chunk_id "
        "LEFT JOIN verdicts v ON v.run_id=r.run_id AND v.pair_id=r.pair_id "
        "WHERE r.run_id=? ORDER BY r.sort_key"
    )
    cur = store.db.execute(sql, (run_id,))
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
                revisions=int(revisions) if revisions.isdigit() else None, split=splits.get(r["pair_id"], ""),
            )
        )
    return rows


def _documents(store: Store, run_id: int, pairs: list[PairRow]) -> tuple[list[DocRow], int]:
    generated = Counter(p.doc_id for p in pairs)
    exported = Counter(p.doc_id for p in pairs if p.verdict == "exported")
    docs = [
        DocRow(r[0], r[1], r[2], r[3], r[4], generated[r[0]], exported[r[0]])
        for r in store.db.execute(
            "SELECT d.doc_id, rd.path, d.title, d.n_chars, (SELECT count(*) FROM chunks c WHERE c.doc_id=d.doc_id) "
            "FROM run_docs rd JOIN documents d ON d.doc_id=rd.doc_id WHERE rd.run_id=? ORDER BY rd.path",
            (run_id,),
        )
    ]
    return docs, sum(d.chunks for d in docs)


def _zero_chunks(store: Store, run_id: int, pairs: list[PairRow]) -> list[ChunkRow]:
    generated = Counter(p.chunk_id for p in pairs if p.perspective != "identity")
    exported = {p.chunk_id for p in pairs if p.verdict == "exported"}
    rows = store.db.execute(
        "SELECT c.chunk_id, rd.path, c.idx, c.section, c.n_tokens, c.text FROM chunks c "
        "JOIN run_docs rd ON rd.doc_id=c.doc_id AND rd.run_id=? ORDER BY rd.path, c.idx",
        (run_id,),
    )
    return [ChunkRow(r[0], r[1], r[2], r[3], r[4], r[5], generated[r[0]]) for r in rows if r[0] not in exported]


def _perspectives(pairs: list[PairRow], calls: dict[str, int]) -> list[PerspectiveRow]:
    generated = Counter(p.perspective for p in pairs)
    exported = Counter(p.perspective for p in pairs if p.verdict == "exported")
    chunks: dict[str, set[str]] = {}
    for p in pairs:
        if p.verdict == "exported":
            chunks.setdefault(p.perspective, set()).add(p.chunk_id)
    names = sorted(set(generated) | set(calls))
    return [
        PerspectiveRow(n, calls.get(n), generated[n], exported[n], len(chunks.get(n, ()))) for n in names
    ]


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
    rows = store.db.execute(
        "SELECT rf.final_pair_id, rf.revisions, rf.stop_reason, "
        "(SELECT max(round) FROM refinements x WHERE x.final_pair_id=rf.final_pair_id) "
        "FROM refined rf JOIN run_pairs r ON r.pair_id=rf.final_pair_id WHERE r.run_id=? "
        "ORDER BY rf.revisions DESC, rf.final_pair_id",
        (run_id,),
    ).fetchall()
    data.refined_pairs = len(rows)
    data.rounds_histogram = dict(sorted(Counter(int(r[3] or 0) for r in rows).items()))
    data.revisions_histogram = dict(sorted(Counter(int(r[1]) for r in rows).items()))
    data.stop_reasons = dict(sorted(Counter(str(r[2]) for r in rows).items()))
    by_id = {p.pair_id: p for p in data.pairs}
    for final_id, revisions, _stop, _rounds in rows:
        if revisions == 0 or len(data.examples) >= MAX_EXAMPLES or final_id not in by_id:
            continue
        rounds = store.db.execute(
            "SELECT round, question, answer, critique, problems FROM refinements WHERE final_pair_id=? ORDER BY round",
            (final_id,),
        ).fetchall()
        final = by_id[final_id]
        draft_q, draft_a = rounds[0][1], rounds[0][2]
        data.examples.append(
            RefineExample(
                pair_id=final_id, perspective=final.perspective, draft_question=draft_q, draft_answer=draft_a,
                critiques=[(int(r[0]), str(r[3]), [str(x) for x in json.loads(r[4])]) for r in rounds],
                final_question=final.question, final_answer=final.answer,
                question_diff=word_diff(draft_q, final.question), answer_diff=word_diff(draft_a, final.answer),
            )
        )


def _failures(store: Store, run_id: int) -> tuple[list[FailureRow], int]:
    rows = store.db.execute(
        "SELECT stage, prompt_id, chunk_id, error FROM failures WHERE run_id=? ORDER BY id", (run_id,)
    ).fetchall()
    counts = Counter(r[0] for r in rows)
    first: dict[str, tuple[str, str, str, str]] = {}
    for r in rows:
        first.setdefault(r[0], r)
    return [FailureRow(s, counts[s], first[s][1], first[s][2], first[s][3]) for s in sorted(counts)], len(rows)


def _judge_threshold(settings: dict[str, object]) -> float | None:
    for key in JUDGE_THRESHOLD_KEYS:
        value = settings.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def build_report(store: Store, run_id: int, out_dir: Path) -> ReportData:
    """Gather every figure the page shows for one run, from the state database."""
    row = store.db.execute(
        "SELECT run_id, command, status, started_at, finished_at, settings, summary FROM runs WHERE run_id=?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise ReportError(f"run {run_id} is not in {store.path}")
    summary = json.loads(row[6]) if row[6] else {}
    data = ReportData(run_id, row[1], row[2], row[3], row[4] or "", json.loads(row[5] or "{}"), summary)
    data.pairs = _pairs(store, run_id, _split_map(out_dir))
    data.models = sorted({p.model for p in data.pairs if p.model} | ({str(summary["model"])} if summary.get("model") else set()))
    data.documents, data.chunks_total = _documents(store, run_id, data.pairs)
    data.skipped = list(summary.get("documents_skipped") or [])  # type: ignore[call-overload]
    data.zero_chunks = _zero_chunks(store, run_id, data.pairs)
    data.perspectives = _perspectives(data.pairs, dict(summary.get("calls_per_perspective") or {}))  # type: ignore[call-overload]
    n_verdicts = store.db.execute("SELECT count(*) FROM verdicts WHERE run_id=?", (run_id,)).fetchone()[0]
    data.has_verdicts = n_verdicts > 0
    counts = Counter(p.verdict for p in data.pairs)
    data.verdict_counts = {v: counts.get(v, 0) for v in VERDICTS} | {v: n for v, n in counts.items() if v not in VERDICTS}
    data.judge_scores = [p.judge_score for p in data.pairs if p.judge_score is not None]
    data.judge_methods = dict(Counter(m for (m,) in store.db.execute(
        "SELECT judge_method FROM verdicts WHERE run_id=?", (run_id,))))
    data.judge_threshold = _judge_threshold(data.settings)
    data.grounded = {
        "yes": sum(1 for p in data.pairs if p.grounded is True),
        "no": sum(1 for p in data.pairs if p.grounded is False),
        "unchecked": sum(1 for p in data.pairs if p.grounded is None),
    }
    questions = {p.pair_id: p.question for p in data.pairs}
    data.duplicates = [
        (p, questions.get(p.duplicate_of or "", p.duplicate_of or "")) for p in data.pairs if p.verdict == "duplicate"
    ]
    _refinement(store, run_id, data)
    data.failures, data.failures_total = _failures(store, run_id)
    return data


# --- rendering -------------------------------------------------------------


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("qagen", "templates"),
        autoescape=True,  # documents and model output are hostile input
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = ids.short
    env.filters["num"] = lambda v, d=2: "n/a" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    return env


def render_report(data: ReportData) -> str:
    from .report_charts import (
        charts_for,  # matplotlib: imported only when a page is drawn
    )

    env = _environment()
    return env.get_template("report.html.j2").render(
        d=data,
        charts=charts_for(data),
        table_rows=data.pairs[:MAX_TABLE_ROWS],
        zero_texts=data.zero_chunks[:MAX_ZERO_CHUNK_TEXTS],
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        max_rows=MAX_TABLE_ROWS,
    )


def write_report(store: Store, run_id: int, out_dir: Path) -> Path:
    """Write ``OUT/report.html`` for one run (atomically). Works on an open store, e.g. inside ``ingest``."""
    html = render_report(build_report(store, run_id, out_dir))
    path = out_dir / REPORT_NAME
    with atomic_writer(path) as fh:
        fh.write(html)
    return path
