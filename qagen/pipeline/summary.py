"""The ingest summary: what a run did, stage by stage (the CLI's table and ``--json``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from itertools import groupby

from qagen.config import Settings
from qagen.core.types import Fact
from qagen.curate.verdicts import CurateResult
from qagen.generate.ledger import Coverage
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
    # every reply this run's dataset rests on, sent now or answered by the store (what it cost when paid for)
    teacher_tokens: int = 0
    calls_per_perspective: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)  # per-pair step -> pairs it saw (qagen/generate/steps.py)
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
    profile: str = ""  # "embedded": the embedded model's defaults applied (embedded suite, small chunks, no exam)
    suite: str = ""  # the perspective suite that ran (prompts/suites.yaml)
    drafted: int = 0  # draft pairs sent through the critic loop
    revisions_histogram: dict[str, int] = field(default_factory=dict)  # accepted repairs per pair -> pairs
    # the repair loop (qagen/generate/refine.py): mode, pairs flagged per check, repairs tried, accepted and rejected
    # (by the check they failed), rounds per pair, the model critic's flag rate, the tokens the loop spent
    refine: dict[str, object] = field(default_factory=dict)
    stop_reasons: dict[str, int] = field(default_factory=dict)
    dpo_pairs: int = 0
    dpo_path: str = ""
    # Continued pretraining (--cpt): OUT/cpt.jsonl's texts (chunks + rewrites), the rewrites kept and those dropped
    # for a number, name or date their chunk does not state (qagen/generate/rewrite.py)
    cpt_texts: int = 0
    cpt_path: str = ""
    text_rows: int = 0  # --text-rows: pieces of the documents' text in OUT/text.jsonl, mixed into training
    text_path: str = ""
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
    # The fact ledger (qagen/generate/ledger.py): facts per document, facts with >= 1 and >= k exported rows,
    # teacher tokens per exported pair and per covered fact
    facts: dict[str, object] = field(default_factory=dict)
    chunks_without_pairs: int = 0
    chunks_without_pairs_examples: list[str] = field(default_factory=list)
    contaminated_removed: int = 0
    contaminated_examples: list[str] = field(default_factory=list)
    error: str = ""
    # `qagen review`: decisions applied at export: accepted, rejected, edited, overrides (accepted though a check
    # dropped it)
    review: dict[str, int] = field(default_factory=dict)
    unchanged: bool = False  # nothing changed since the last run: its dataset was kept as it is
    input_fingerprint: str = ""  # hash of the corpus bytes, settings and prompts (the unchanged check)
    outputs: dict[str, str] = field(default_factory=dict)  # output file -> hash, as this run left them
    report_path: str = ""
    card_path: str = ""
    failure_examples: list[str] = field(default_factory=list)
    # what the user should know that is not a failure: the output folder left out of the walk, outputs kept or replaced
    warnings: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # the files in OUT this run replaced or removed (none if failed)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, object]) -> Summary:
        """A run's record as the state store keeps it, back as a Summary (a key an older qagen wrote that this one
        no longer has is left out)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})  # type: ignore[arg-type]


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
    summary.teacher_tokens = stats.prompt_tokens + stats.completion_tokens + stats.cached_tokens
    summary.calls_per_perspective = dict(sorted(stats.calls.items()))
    summary.steps = {name: stats.steps[name] for name in ("best-of", "refine", "judge") if name in stats.steps}
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


def add_coverage(summary: Summary, store: Store, run_id: int, k: int, ledger: Counter[str]) -> None:
    """The fact ledger's figures for the exported pairs (after every check, grounding and dedup), one document at a
    time; and what the teacher's tokens bought: per exported pair, per exported model-written pair, per covered fact.
    ``ledger``: the generate stage's counters (the extraction request's spans kept and rejected, ...)."""
    found = Coverage(k=k)
    facts = groupby(store.run_facts(run_id), key=lambda row: row[0])
    pairs = groupby(((rp.path, rp) for rp in store.run_pairs(run_id)), key=lambda row: row[0])
    exported = model_written = 0
    for path, doc_facts, doc_pairs in _by_document(facts, pairs):
        kept = [rp.pair for rp in doc_pairs if rp.exported]
        exported += len(kept)
        model_written += sum(1 for p in kept if p.request_key)
        found.add_document(path, doc_facts, kept)
    if not found.facts:
        return
    tokens = summary.teacher_tokens
    summary.facts = {
        **asdict(found),
        "teacher_tokens": tokens,
        "tokens_per_exported_pair": round(tokens / exported, 1) if exported else None,
        "tokens_per_model_pair": round(tokens / model_written, 1) if model_written else None,
        "tokens_per_covered_fact": round(tokens / found.exposed, 1) if found.exposed else None,
        "generation": dict(sorted(ledger.items())),
    }


def _by_document(facts: Iterable[tuple[str, Iterator[tuple[str, Fact]]]],
                 pairs: Iterable[tuple[str, Iterator[tuple[str, object]]]],
                 ) -> Iterator[tuple[str, list[Fact], list]]:  # type: ignore[type-arg]
    """Both streams are in document-path order: pair them up, a document at a time (either side may be empty)."""
    facts_it, pairs_it = iter(facts), iter(pairs)
    f_next, p_next = next(facts_it, None), next(pairs_it, None)
    while f_next is not None or p_next is not None:
        f_path = f_next[0] if f_next is not None else None
        p_path = p_next[0] if p_next is not None else None
        path = min(x for x in (f_path, p_path) if x is not None)
        doc_facts = [f for _, f in f_next[1]] if f_path == path else []
        doc_pairs = [rp for _, rp in p_next[1]] if p_path == path else []
        if f_path == path:
            f_next = next(facts_it, None)
        if p_path == path:
            p_next = next(pairs_it, None)
        yield path, doc_facts, doc_pairs
