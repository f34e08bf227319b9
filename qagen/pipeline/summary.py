"""The ingest summary: what a run did, stage by stage (the CLI's table and ``--json``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from qagen.config import Settings
from qagen.curate.verdicts import CurateResult
from qagen.generate.facts import coverage
from qagen.pipeline.executor import RunTotals
from qagen.store import Store


@dataclass
class Summary:
    status: str = "ok"  # ok | partial | failed
    docs_dir: str = ""
    out_dir: str = ""
    backend: str = ""
    model: str = ""
    group_id: str = ""
    documents_read: int = 0
    documents_skipped: list[dict[str, str]] = field(default_factory=list)
    chunks: int = 0
    chunk_unit: str = ""
    requests_sent: int = 0
    requests_cached: int = 0
    requests_failed: int = 0
    http_retries: int = 0
    corrective_retries: int = 0
    invalid_replies: int = 0
    length_cutoffs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls_per_perspective: dict[str, int] = field(default_factory=dict)
    pairs_per_perspective: dict[str, int] = field(default_factory=dict)
    pairs_total: int = 0
    train_pairs: int = 0
    eval_pairs: int = 0
    split_by: str = ""
    train_path: str = ""
    eval_path: str = ""
    exam_questions: int = 0  # the held-out exam (OUT/exam.jsonl): never trained on; `qagen eval` scores it
    exam_path: str = ""
    state_db: str = ""
    refined: bool = False
    profile: str = ""  # "embedded": the embedded model's defaults applied (broad suite, small chunks, the judge)
    suite: str = ""  # the perspective suite that ran (prompts/suites.yaml)
    drafted: int = 0  # draft pairs sent through the critic loop
    revisions_histogram: dict[str, int] = field(default_factory=dict)  # revisions per pair -> pairs
    stop_reasons: dict[str, int] = field(default_factory=dict)
    dpo_pairs: int = 0
    dpo_path: str = ""
    # Continued pretraining (--cpt): OUT/cpt.jsonl's texts (chunks + rewrites), the rewrites kept and those dropped
    # for a number, name or date their chunk does not state (qagen/generate/rewrite.py)
    cpt_texts: int = 0
    cpt_path: str = ""
    contextual_rows: int = 0  # --contextual-share: open-book rows added to train.jsonl
    contextual_modes: dict[str, int] = field(default_factory=dict)  # answer | distractors | withheld -> rows
    rewrites: int = 0
    rewrites_dropped: int = 0
    # Per stage: what the judge, grounding, dedup and decontamination did (qagen/curate/verdicts.py)
    judged: bool = False
    judge_method: str = ""  # logprobs | parsed | mixed: "parsed" means the endpoint gave no logprobs
    judge_threshold: float = 0.0
    best_of: int = 1
    best_of_replaced: int = 0  # drafts whose answer lost to a sampled one
    judge_passed: int = 0
    filtered: dict[str, int] = field(default_factory=dict)  # filter verdict -> pairs (qagen/curate/filters.py)
    screened: int = 0  # of those, caught before the judge (a judge call saved each)
    judge_rejected: int = 0
    judge_failed: int = 0
    grounding_checked: int = 0
    grounded: int = 0
    ungrounded: int = 0
    ungrounded_policy: str = ""
    duplicates_removed: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)  # verdict -> pairs
    verdict_examples: dict[str, str] = field(default_factory=dict)
    pairs_generated: int = 0  # before curation (after refinement)
    exported_per_perspective: dict[str, int] = field(default_factory=dict)
    yield_per_perspective: dict[str, float] = field(default_factory=dict)  # exported pairs per call
    # Facts x k (qagen/generate/facts.py): exposures per fact in the exported pairs, the facts below k, reversals
    facts: dict[str, object] = field(default_factory=dict)
    chunks_without_pairs: int = 0
    chunks_without_pairs_examples: list[str] = field(default_factory=list)
    contaminated_removed: int = 0
    contaminated_examples: list[str] = field(default_factory=list)
    error: str = ""
    unchanged: bool = False  # nothing changed since the last run: its dataset was kept as it is
    input_fingerprint: str = ""  # hash of the corpus bytes, settings and prompts (the unchanged check)
    outputs: dict[str, str] = field(default_factory=dict)  # output file -> hash, as this run left them
    report_path: str = ""
    card_path: str = ""
    failure_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Interrupted(KeyboardInterrupt):
    """The run was interrupted; ``summary`` describes what was finished and written."""

    def __init__(self, summary: Summary):
        super().__init__("interrupted")
        self.summary = summary


def add_totals(summary: Summary, totals: RunTotals) -> None:
    """The executors' counters (every shard's, merged) into the summary."""
    stats = totals.stats
    summary.documents_read, summary.chunks = totals.documents_read, totals.chunks
    summary.documents_skipped = [{"path": p, "reason": why} for p, why in sorted(totals.skipped)]
    summary.requests_sent, summary.requests_cached, summary.requests_failed = stats.sent, stats.cached, stats.failed
    summary.corrective_retries, summary.invalid_replies = stats.corrective_retries, stats.invalid
    summary.length_cutoffs = stats.length_cutoffs
    summary.screened = stats.screened
    summary.rewrites, summary.rewrites_dropped = stats.rewrites, stats.rewrites_dropped
    summary.prompt_tokens, summary.completion_tokens = stats.prompt_tokens, stats.completion_tokens
    summary.calls_per_perspective = dict(sorted(stats.calls.items()))
    summary.failure_examples = list(stats.failure_examples)
    summary.best_of_replaced = totals.best_of_replaced


def add_curation(
    summary: Summary, curated: CurateResult, store: Store, run_id: int, calls: Counter[str], settings: Settings
) -> None:
    """What the judge, grounding, dedup and decontamination did, from the run's verdicts."""
    counts = curated.counts
    summary.verdicts = dict(sorted(counts.items()))
    summary.verdict_examples = dict(sorted(curated.examples.items()))
    summary.pairs_generated = sum(counts.values())
    summary.judge_rejected, summary.judge_failed = counts["judge_rejected"], counts["judge_failed"]
    summary.judged = bool(curated.judge_methods) or bool(counts["judge_failed"])
    summary.judge_method = "/".join(sorted(curated.judge_methods))
    summary.judge_threshold = settings.judge_threshold
    summary.best_of = settings.best_of
    summary.judge_passed = curated.judge_passed
    summary.filtered = dict(sorted(curated.filtered.items()))
    summary.grounding_checked, summary.grounded, summary.ungrounded = (
        curated.grounding_checked, curated.grounded, curated.ungrounded)
    summary.ungrounded_policy = settings.ungrounded
    summary.duplicates_removed = counts["duplicate"]
    summary.contaminated_removed = counts["contaminated"]
    if "contaminated" in curated.examples:
        summary.contaminated_examples = [curated.examples["contaminated"]]
    exported = store.exported_per_perspective(run_id)
    summary.exported_per_perspective = dict(sorted(exported.items()))
    summary.yield_per_perspective = {
        name: round(exported.get(name, 0) / n, 2) for name, n in sorted(calls.items()) if n
    }
    summary.chunks_without_pairs, empty = store.chunks_without_pairs(run_id)
    summary.chunks_without_pairs_examples = [f"{path} part {idx + 1} ({section or 'no section'})"
                                             for path, idx, section in empty]


def add_coverage(summary: Summary, store: Store, run_id: int, k: int) -> None:
    """How often each fact is asked in the exported pairs (after judge, grounding and dedup)."""
    def rows() -> Iterator[tuple[str, str, str, bool, bool]]:  # streamed: memory grows with the facts only
        for rp in store.run_pairs(run_id):
            extra = dict(rp.pair.extra)
            if extra.get("fact_id"):
                yield (extra["fact_id"], rp.pair.chunk_id, rp.pair.question, rp.verdict == "exported",
                       extra.get("direction") == "reverse")

    found = coverage(rows(), k)
    if found.facts:
        summary.facts = asdict(found)
