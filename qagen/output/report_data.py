"""The figures of one run's report (``OUT/report.html``, the dataset card): plain data, no SQL.

Counts are totals over the whole run; the row lists are capped (see :mod:`qagen.output.report`), so
their length is what the page shows, not what the run holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qagen.output.coverage_map import DocMap


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
    text: str  # only for the first MAX_ZERO_CHUNK_TEXTS rows ("" after them)
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
class DuplicateRow:
    pair_id: str
    perspective: str
    question: str  # the dropped question
    repeats: str  # the question it repeats (its pair id when that pair is not in the run)


@dataclass(frozen=True)
class Histogram:
    edges: list[float]  # len(counts) + 1, ascending; bins are [a, b), the last one [a, b]
    counts: list[int]


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


def _empty_histogram() -> Histogram:
    return Histogram([0.0, 1.0], [0])


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
    coverage: list[DocMap] = field(default_factory=list)  # the fact ledger's coverage map (qagen/output/coverage_map.py)
    documents_total: int = 0
    documents: list[DocRow] = field(default_factory=list)  # the first MAX_DOC_ROWS, by path
    top_documents: list[DocRow] = field(default_factory=list)  # the MAX_DOC_BARS with most pairs (chart)
    skipped: list[dict[str, str]] = field(default_factory=list)
    chunks_total: int = 0
    zero_chunks_total: int = 0
    zero_chunks: list[ChunkRow] = field(default_factory=list)  # the first MAX_ZERO_CHUNK_ROWS, by path and index
    perspectives: list[PerspectiveRow] = field(default_factory=list)
    generated: int = 0
    table_rows: list[PairRow] = field(default_factory=list)  # the first MAX_TABLE_ROWS pairs, in run order
    has_verdicts: bool = False
    verdict_counts: dict[str, int] = field(default_factory=dict)
    split_counts: dict[str, int] = field(default_factory=dict)  # exported pairs in train.jsonl / eval.jsonl
    judge_scored: int = 0  # pairs with a judge score
    judge_hist: Histogram = field(default_factory=_empty_histogram)  # HIST_BINS bins over [0, 1]
    judge_methods: dict[str, int] = field(default_factory=dict)
    judge_threshold: float | None = None
    grounded: dict[str, int] = field(default_factory=dict)  # yes | no | unchecked
    duplicates: list[DuplicateRow] = field(default_factory=list)  # the first MAX_DUPLICATES, in run order
    question_lengths: Histogram = field(default_factory=_empty_histogram)  # exported pairs, characters
    answer_lengths: Histogram = field(default_factory=_empty_histogram)
    knowledge_table: str = ""  # from OUT/eval_report.json, once `qagen eval` / `qagen run` has scored a tuned model
    open_book_table: str = ""  # the same, with --open-book
    exam_questions: int = 0
    refined_pairs: int = 0
    rounds_histogram: dict[int, int] = field(default_factory=dict)  # critic rounds per pair -> pairs
    revisions_histogram: dict[int, int] = field(default_factory=dict)
    stop_reasons: dict[str, int] = field(default_factory=dict)
    examples: list[RefineExample] = field(default_factory=list)
    failures: list[FailureRow] = field(default_factory=list)
    failures_total: int = 0

    @property
    def exported_count(self) -> int:
        return self.verdict_counts.get("exported", 0)

    @property
    def thrown_away(self) -> int:
        """Training pairs not exported (the held-out exam's pairs are never exported, by design)."""
        exam = sum(n for verdict, n in self.verdict_counts.items() if verdict.startswith("exam"))
        return self.generated - self.exported_count - exam

    @property
    def duplicates_total(self) -> int:
        return self.verdict_counts.get("duplicate", 0)
