"""The repair loop on a FakeLLM (no HTTP) and a real Store (issue 27): checks flag, the regenerator repairs from the
evidence, a repair is kept only if it passes every check; the model critic in full mode, and switched off when it
flags nearly everything; forced rounds, failures, fixed questions and answers."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from qagen.core.types import QAPair
from qagen.generate.caller import Caller
from qagen.generate.refine import CRITIC_PROBE, Flag, Refiner, RefineSettings
from qagen.llm.base import ChatRequest, LLMError
from qagen.prompting.prompts import load_prompts
from qagen.store import Store
from qagen.testing import FakeLLM
from tests.helpers import UNIT_DOC, db_rows, unit_chunk

PROMPTS = load_prompts()
CHUNK = unit_chunk()
DRAFT = QAPair("d" * 64, CHUNK.chunk_id, UNIT_DOC.doc_id, "facts", "When did the council vote?", "In May.", "",
               "gen-model")


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "out") as s:
        yield s


def verdict(needs_revision: bool, critique: str = "The answer leaves out the date.") -> str:
    """A critic reply valid against the ``critique`` schema (qagen/prompting/schemas.py)."""
    return json.dumps({"critique": critique, "problems": ["incomplete"] if needs_revision else [],
                       "needs_revision": needs_revision})


def revision(question: str, answer: str) -> str:
    """A regenerator reply valid against the ``revision`` schema (no quote: the draft has none)."""
    return json.dumps({"question": question, "answer": answer})


def asked(request: ChatRequest, field: str) -> str:
    """The ``Question:`` / ``Answer:`` line of a critic or regenerator request."""
    return request.messages[-1].content.split(f"{field}: ", 1)[1].split("\n", 1)[0]


def appends_revised(request: ChatRequest) -> str:
    """A regenerator that appends ' (revised)' to the answer it was shown."""
    return revision(asked(request, "Question"), asked(request, "Answer") + " (revised)")


def refiner_for(store: Store, llm: FakeLLM, max_rounds: int = 3, min_rounds: int = 0, mode: str = "repair",
                checks=None) -> Refiner:
    caller = Caller(store, llm, "gen-model", store.start_run("test", {}))
    return Refiner(caller, PROMPTS, RefineSettings(max_rounds, min_rounds, mode), checks=checks)


def refinement_rows(store: Store, final_pair_id: str) -> list[tuple]:
    return db_rows(
        store,
        "SELECT round, draft_pair_id, question, answer, needs_revision, forced, revised_question, revised_answer, "
        "accepted, failed_checks FROM refinements WHERE final_pair_id=? ORDER BY round",
        final_pair_id,
    )


def refined_row(store: Store) -> list[tuple]:
    return db_rows(store, "SELECT final_pair_id, draft_pair_id, revisions, stop_reason FROM refined")


def needs_date(pair, doc, chunk) -> list[Flag]:
    """A check: the answer must give the date the chunk states (4 May)."""
    return [] if "4 May" in pair.answer else [Flag("incomplete", "The answer leaves out the date; the passage says: "
                                                                  "'The Eastbay council voted on 4 May'.")]


def no_long_answers(pair, doc, chunk) -> list[Flag]:
    return needs_date(pair, doc, chunk) + ([Flag("too_long", "too long")] if len(pair.answer) > 30 else [])


def test_a_flagged_pair_is_repaired_from_the_evidence_and_the_repair_is_kept(store):
    llm = FakeLLM().add("regenerator", revision("  When did the Eastbay council vote to close the bridge? ", " On 4 May. "))
    outcome = asyncio.run(refiner_for(store, llm, checks=needs_date).refine(DRAFT, UNIT_DOC, CHUNK))

    assert (outcome.stop, outcome.revisions) == ("repaired", 1)
    assert (outcome.final.question, outcome.final.answer) == (
        "When did the Eastbay council vote to close the bridge?", "On 4 May.")
    assert outcome.final.pair_id != DRAFT.pair_id and dict(outcome.final.extra)["stop"] == "repaired"
    assert [r.prompt_id for r in llm.requests] == ["regenerator"] and llm.pending() == {}  # no critic in repair mode
    assert "the passage says: 'The Eastbay council voted on 4 May'" in llm.requests[0].messages[-1].content
    assert refinement_rows(store, outcome.final.pair_id) == [
        (1, DRAFT.pair_id, DRAFT.question, DRAFT.answer, 1, 0,
         "When did the Eastbay council vote to close the bridge?", "On 4 May.", 1, "[]")]
    assert refined_row(store) == [(outcome.final.pair_id, DRAFT.pair_id, 1, "repaired")]


def test_a_pair_that_passes_every_check_goes_through_unchanged(store):
    llm = FakeLLM()
    good = QAPair("g" * 64, CHUNK.chunk_id, UNIT_DOC.doc_id, "facts", "When did the council vote?", "On 4 May.", "",
                  "gen-model")
    outcome = asyncio.run(refiner_for(store, llm, checks=needs_date).refine(good, UNIT_DOC, CHUNK))
    assert (outcome.stop, outcome.revisions) == ("passed_checks", 0) and outcome.final == good
    assert llm.requests == [] and refined_row(store) == []


def test_a_revision_that_fails_a_check_the_draft_passed_is_rejected_and_the_draft_kept(store):
    llm = FakeLLM().add("regenerator",
                        revision(DRAFT.question, "On 4 May, after a long debate in the council hall."),  # too long now
                        revision(DRAFT.question, "Also long, and no date either, in this rewrite."))
    outcome = asyncio.run(refiner_for(store, llm, max_rounds=2, checks=no_long_answers).refine(DRAFT, UNIT_DOC, CHUNK))
    assert (outcome.stop, outcome.revisions) == ("max_rounds", 0)
    assert outcome.final.answer == DRAFT.answer  # the best earlier version: the draft
    rows = refinement_rows(store, outcome.final.pair_id)
    assert [(k, accepted, failed) for k, *_, accepted, failed in rows] == [
        (1, 0, '["too_long"]'), (2, 0, '["incomplete", "too_long"]')]
    assert refined_row(store) == [(outcome.final.pair_id, DRAFT.pair_id, 0, "max_rounds")]
    assert llm.requests[1].seed == 2  # round 2 asks again with another seed (not the rejected reply from the cache)


def test_full_mode_asks_the_critic_about_pairs_that_pass_and_accepts_only_checked_repairs(store):
    llm = FakeLLM()
    good = QAPair("g" * 64, CHUNK.chunk_id, UNIT_DOC.doc_id, "facts", "When did the council vote?", "On 4 May.", "",
                  "gen-model")
    llm.add("critic", verdict(True, "Name the council."), verdict(False, "No revision needed."))
    llm.add("regenerator", revision("When did the Eastbay council vote?", "On 4 May."))
    outcome = asyncio.run(refiner_for(store, llm, mode="full", checks=needs_date).refine(good, UNIT_DOC, CHUNK))
    assert (outcome.stop, outcome.revisions) == ("no_revision_needed", 1)  # the critic saw the repair and is content
    assert outcome.final.question == "When did the Eastbay council vote?"
    assert [r.prompt_id for r in llm.requests] == ["critic", "regenerator", "critic"]
    assert "Name the council." in llm.requests[1].messages[-1].content


def test_an_always_revise_critic_is_switched_off_after_its_first_reviews(store):
    """It flags every pair: after CRITIC_PROBE reviews it is no longer asked, and the checks alone decide."""
    llm = FakeLLM(lambda req: verdict(True) if req.prompt_id == "critic" else appends_revised(req))
    refiner = refiner_for(store, llm, max_rounds=1, mode="full", checks=needs_date)
    pairs = [QAPair(f"{i:064d}", CHUNK.chunk_id, UNIT_DOC.doc_id, "facts", f"Question {i}?", "On 4 May.", "", "m")
             for i in range(CRITIC_PROBE + 10)]

    async def run_all() -> None:
        for p in pairs:
            await refiner.refine(p, UNIT_DOC, CHUNK)

    asyncio.run(run_all())
    assert refiner.stats.critic_reviews == CRITIC_PROBE and refiner.stats.critic_flags == CRITIC_PROBE
    assert "asked to revise 50 of the first 50" in refiner.stats.critic_off
    assert len(llm.requests_for("critic")) == CRITIC_PROBE  # the last 10 pairs: no critic call
    assert refiner.stats.stops["passed_checks"] == 10


def test_min_rounds_forces_rounds_when_nothing_is_flagged(store):
    llm = FakeLLM(appends_revised)
    good = QAPair("g" * 64, CHUNK.chunk_id, UNIT_DOC.doc_id, "facts", "When did the council vote?", "On 4 May.", "",
                  "gen-model")
    outcome = asyncio.run(refiner_for(store, llm, max_rounds=3, min_rounds=2, checks=needs_date).refine(
        good, UNIT_DOC, CHUNK))
    assert (outcome.stop, outcome.revisions) == ("repaired", 2)
    assert outcome.final.answer == "On 4 May. (revised) (revised)"
    rows = refinement_rows(store, outcome.final.pair_id)
    assert [(k, needs, forced, accepted) for k, _, _, _, needs, forced, _, _, accepted, _ in rows] == [
        (1, 0, 1, 1), (2, 0, 1, 1)]


@pytest.mark.parametrize(
    ("critic_reply", "failure_stage"),
    [(LLMError("HTTP 500", retryable=True), "generate"), ('{"critique": "ok"}', "parse")],
    ids=["transport", "invalid-twice"],
)
def test_a_critic_failure_stops_the_loop_with_the_draft(store, critic_reply, failure_stage):
    llm = FakeLLM(lambda req: critic_reply if req.prompt_id == "critic" else appends_revised(req))
    good = QAPair("g" * 64, CHUNK.chunk_id, UNIT_DOC.doc_id, "facts", "When did the council vote?", "On 4 May.", "",
                  "gen-model")
    outcome = asyncio.run(refiner_for(store, llm, mode="full", checks=needs_date).refine(good, UNIT_DOC, CHUNK))
    assert (outcome.stop, outcome.revisions) == ("critic_failed", 0) and outcome.final == good
    assert {r.prompt_id for r in llm.requests} == {"critic"}  # the regenerator is never asked
    assert db_rows(store, "SELECT stage, prompt_id FROM failures") == [(failure_stage, "critic")]


def test_a_regenerator_failure_keeps_the_draft(store):
    llm = FakeLLM().add("regenerator", LLMError("HTTP 503", retryable=True))
    outcome = asyncio.run(refiner_for(store, llm, checks=needs_date).refine(DRAFT, UNIT_DOC, CHUNK))
    assert (outcome.stop, outcome.revisions) == ("regenerator_failed", 0)
    assert (outcome.final.question, outcome.final.answer) == (DRAFT.question, DRAFT.answer)
    assert [(k, revised) for k, *_, revised, _a, _f in refinement_rows(store, outcome.final.pair_id)] == [(1, None)]


def test_a_templated_question_and_a_ledger_answer_stay_as_built(store):
    """Code-built questions (answers / entities / identity outputs) keep their question; the fact ledger's pairs keep
    their answer (the span): the regenerator may change only the other side."""
    question = f'Give a short summary of "{UNIT_DOC.title}".'
    draft = QAPair("s" * 64, CHUNK.chunk_id, UNIT_DOC.doc_id, "summaries", question, "m", "", "gen-model")
    llm = FakeLLM().add("regenerator", revision("copy.copy", "The council voted on 4 May to close the old bridge."))
    outcome = asyncio.run(refiner_for(store, llm, checks=needs_date).refine(draft, UNIT_DOC, CHUNK))
    assert (outcome.final.question, outcome.final.answer) == (
        question, "The council voted on 4 May to close the old bridge.")

    span = QAPair("f" * 64, CHUNK.chunk_id, UNIT_DOC.doc_id, "fact_questions", "Who voted on 4 May?", "council",
                  "", "m", (("fact_id", "x"), ("sentence", "The Eastbay council voted on 4 May.")))

    def leak(pair, doc, chunk):
        return [Flag("leak", "The question contains its answer.")] if "council" in pair.question else []

    llm = FakeLLM().add("regenerator", revision("Which body voted on 4 May?", "The Eastbay council"))
    fixed = asyncio.run(refiner_for(store, llm, checks=leak).refine(
        replace(span, question="Which council voted on 4 May?"), UNIT_DOC, CHUNK))
    assert (fixed.final.question, fixed.final.answer) == ("Which body voted on 4 May?", "council")
    assert dict(fixed.final.extra)["fact_id"] == "x"


def test_refine_mode_from_flags_the_environment_and_old_booleans(monkeypatch):
    """--refine off|repair|full; qagen <= 0.4's boolean (True was the critic loop) and QAGEN_REFINE=false still
    work; anything else is a clear error."""
    from qagen.config import Settings, load_settings

    assert Settings().refine_mode == "off"
    assert Settings(refine="repair").refine_mode == "repair" and Settings(refine=True).refine_mode == "full"
    for word, mode in (("false", "off"), ("0", "off"), ("True", "full"), ("full", "full"), ("off", "off")):
        monkeypatch.setenv("QAGEN_REFINE", word)
        assert load_settings().refine_mode == mode
    monkeypatch.setenv("QAGEN_REFINE", "sometimes")
    with pytest.raises(ValueError, match="--refine must be one of off, repair, full, not 'sometimes'"):
        load_settings()
