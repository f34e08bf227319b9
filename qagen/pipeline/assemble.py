"""Stage assembly: which stages a run has, built from the settings once, the same for every executor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qagen.config import Settings
from qagen.core.progress import Progress
from qagen.core.types import Chunk, Document, Fact, QAPair
from qagen.corpus.chunker import ChunkerSettings
from qagen.curate.critique import critique
from qagen.curate.filters import FilterSettings, PairView, screen, screen_all
from qagen.curate.quality import grounding_score
from qagen.curate.verdicts import CurateSettings, is_span
from qagen.generate.caller import Alarm, Caller
from qagen.generate.judge import Judge
from qagen.generate.perspectives import Generator
from qagen.generate.question_checks import check_question
from qagen.generate.refine import Checks, Flag, Refiner, RefineSettings
from qagen.generate.rewrite import Rewriter
from qagen.llm.base import LLM
from qagen.llm.factory import make_role_llms
from qagen.prompting.prompts import Prompt, PromptSet
from qagen.store import Store


@dataclass
class Stages:
    """The generation stages of one run (or one Ray shard): a caller, the perspectives, refiner and judge, and
    the chunk rewriter for continued pretraining (``--cpt``; the executor runs it on every chunk)."""

    caller: Caller
    generator: Generator
    rewriter: Rewriter | None = None

    @property
    def refiner(self) -> Refiner | None:
        return self.generator.refiner

    @property
    def judge(self) -> Judge | None:
        return self.generator.judge


def build_stages(
    store: Store, llm: LLM, model: str, prompts: PromptSet, settings: Settings, run_id: int, progress: Progress
) -> Stages:
    """The caller and the stages the settings turn on (roles, fail-fast alarms, refiner, judge)."""
    alarms = {}
    if settings.fail_fast_after:
        alarms = {
            "parse": Alarm("parse", settings.max_parse_failure_rate, settings.fail_fast_after),
            "judge": Alarm("judge", settings.max_reject_rate, settings.fail_fast_after),
        }
    caller = Caller(store, llm, model, run_id, progress, roles=make_role_llms(settings, llm), alarms=alarms)
    refiner = None
    if settings.refining:
        refiner = Refiner(caller, prompts, RefineSettings(settings.rounds, settings.min_rounds, settings.refine_mode),
                          checks=repair_checks(settings, prompts))
    judge = Judge(caller, prompts, settings.judge_threshold, settings.best_of) if settings.judging else None
    screen_pair = _screener(filter_settings(settings)) if settings.filters else None
    # the whole-document reduce passage may be as long as a chunk (estimated at 4 characters a token)
    reduce_chars = 4 * chunker_settings(settings).chunk_size
    rewriter = Rewriter(caller, prompts, settings.cpt_rewrites) if settings.cpt else None
    return Stages(caller, Generator(caller, prompts, refiner=refiner, judge=judge, exam=settings.exam_on,
                                    screen=screen_pair, reduce_chars=reduce_chars,
                                    facts_k=settings.ledger_k, seed=settings.seed), rewriter)


def repair_checks(settings: Settings, prompts: PromptSet) -> Checks:
    """The repair loop's first critic (qagen/generate/refine.py): the filters (when on), the quote's grounding, and
    for the fact ledger's pairs the answer's span and the question's checks; each failure with its evidence."""
    filters = filter_settings(settings)

    def checks(pair: QAPair, doc: Document, chunk: Chunk) -> list[Flag]:
        try:
            prompt: Prompt | None = prompts.by_id(pair.perspective)
        except KeyError:
            prompt = None
        failed = screen_all(PairView(pair.question, pair.answer, prompt, doc.title, chunk.text, doc.meta), filters)
        extra = dict(pair.extra)
        if prompt is not None and prompt.grounding == "quote":
            score = grounding_score(extra.get("quote", ""), chunk.text)
            if score < settings.grounding_threshold:
                failed.append(("ungrounded", f"its quote scores {score:.0f} of 100 against the passage"))
        if prompt is not None and prompt.grounding == "span":
            if not is_span(pair.answer, chunk.text):
                failed.append(("ungrounded", "the answer is not a span of the passage"))
            fact = Fact("", pair.chunk_id, pair.doc_id, pair.answer, extra.get("sentence", ""), 0, "", "")
            if verdict := check_question(pair.question, fact, doc.title):
                failed.append((verdict, verdict))
        seen: dict[str, str] = {}
        for check, reason in failed:  # one flag per check
            seen.setdefault(check, reason)
        return [Flag(check, critique(check, reason, pair.question, pair.answer, chunk.text, doc.title))
                for check, reason in seen.items()]

    return checks


def filter_settings(settings: Settings) -> FilterSettings:
    return FilterSettings(enabled=settings.filters, max_repetition=settings.max_repetition)


def _screener(filters: FilterSettings):  # the Generator's ``Screen`` callable
    """The deterministic filters as the generate stage calls them: a filtered pair is not judged."""

    def screen_pair(pair: QAPair, prompt: Prompt, doc: Document, chunk: Chunk) -> tuple[str, str] | None:
        return screen(PairView(pair.question, pair.answer, prompt, doc.title, chunk.text, doc.meta), filters)

    return screen_pair


def chunker_settings(settings: Settings) -> ChunkerSettings:
    size, overlap = settings.chunking
    return ChunkerSettings(chunk_size=size, chunk_overlap=overlap, tokenizer=settings.tokenizer)


def curate_settings(settings: Settings) -> CurateSettings:
    return CurateSettings(
        judge_threshold=settings.judge_threshold,
        grounding_threshold=settings.grounding_threshold,
        ungrounded=settings.ungrounded,
        dedup=settings.dedup,
        dedup_threshold=settings.dedup_threshold,
        decontaminate=tuple(Path(f) for f in settings.decontaminate),
        filters=filter_settings(settings),
    )


def pair_step_plan(settings: Settings) -> list[tuple[str, str]]:
    """The per-pair steps :func:`build_stages` turns on (qagen/generate/steps.py), in order, each with a line."""
    steps = []
    if settings.judging and settings.best_of > 1:
        steps.append(("best-of", f"{settings.best_of} answers per drafted question, the best-judged kept"))
    if settings.refining:
        steps.append(("refine", f"--refine {settings.refine_mode}: up to {settings.rounds} rounds"
                      + (f", at least {settings.min_rounds}" if settings.min_rounds else "")))
    if settings.judging:
        steps.append(("judge", ("the filters, then " if settings.filters else "")
                      + f"yes/no checks, P(yes) >= {settings.judge_threshold} to export"))
    return steps


def curation_plan(settings: Settings) -> list[tuple[str, str]]:
    """What curation does to the run's pairs (qagen/curate/verdicts.py), in order."""
    plan = []
    if settings.filters:
        plan.append(("filters", (f"repetition (> {settings.max_repetition:.0%} repeated), too short, echoes, cut off, "
                                 "unfilled templates, unstated metadata")))
    plan.append(("grounding", (f"quotes must score >= {settings.grounding_threshold:.0f} against their chunk "
                               f"({settings.ungrounded} the rest); ledger answers must be spans of it")))
    if settings.judging:
        plan.append(("judge verdicts", f"pairs below P(yes) {settings.judge_threshold} are not exported"))
    if settings.dedup:
        plan.append(("dedup", (f"near-duplicate questions across the corpus (similarity >= "
                               f"{settings.dedup_threshold}), the best kept")))
    if settings.decontaminate:
        plan.append(("decontaminate", "questions near " + ", ".join(settings.decontaminate) + " dropped"))
    return plan


def max_pending(settings: Settings) -> int:
    """Queued perspective calls at most (bounds memory; several times what is in flight)."""
    return max(4 * settings.concurrency, 16)
