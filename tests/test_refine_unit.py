"""The critic -> regenerator loop on a FakeLLM (no HTTP) and a real Store: stopping, caps, forced rounds, failures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from qagen.core.types import QAPair
from qagen.generate.caller import Caller
from qagen.generate.refine import Refiner, RefineSettings
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


def refiner_for(store: Store, llm: FakeLLM, max_rounds: int = 3, min_rounds: int = 0) -> Refiner:
    caller = Caller(store, llm, "gen-model", store.start_run("test", {}))
    return Refiner(caller, PROMPTS, RefineSettings(max_rounds, min_rounds))


def refinement_rows(store: Store, final_pair_id: str) -> list[tuple]:
    return db_rows(
        store,
        "SELECT round, draft_pair_id, question, answer, needs_revision, forced, revised_question, revised_answer "
        "FROM refinements WHERE final_pair_id=? ORDER BY round",
        final_pair_id,
    )


def refined_row(store: Store) -> list[tuple]:
    return db_rows(store, "SELECT final_pair_id, draft_pair_id, revisions, stop_reason FROM refined")


def test_the_loop_stops_at_the_first_no_revision_needed(store):
    llm = FakeLLM()
    llm.add("critic", verdict(True), verdict(False, "Correct and complete; no revision needed."))
    llm.add("regenerator", revision("  When did the Eastbay council vote to close the bridge? ", " On 4 May. "))
    outcome = asyncio.run(refiner_for(store, llm, max_rounds=3).refine(DRAFT, UNIT_DOC, CHUNK))

    assert (outcome.stop, outcome.revisions) == ("no_revision_needed", 1)
    # the refined pair is the regenerator's (stripped), under a new id
    assert outcome.final.question == "When did the Eastbay council vote to close the bridge?"
    assert outcome.final.answer == "On 4 May."
    assert outcome.final.pair_id != DRAFT.pair_id and dict(outcome.final.extra)["stop"] == "no_revision_needed"
    assert [r.prompt_id for r in llm.requests] == ["critic", "regenerator", "critic"] and llm.pending() == {}
    assert asked(llm.requests[2], "Answer") == "On 4 May."  # the second critique judged the revision
    assert "The answer leaves out the date." in llm.requests[1].messages[-1].content  # the regenerator saw the critique
    assert refinement_rows(store, outcome.final.pair_id) == [
        (1, DRAFT.pair_id, DRAFT.question, DRAFT.answer, 1, 0,
         "When did the Eastbay council vote to close the bridge?", "On 4 May."),
        (2, DRAFT.pair_id, "When did the Eastbay council vote to close the bridge?", "On 4 May.", 0, 0, None, None),
    ]
    assert refined_row(store) == [(outcome.final.pair_id, DRAFT.pair_id, 1, "no_revision_needed")]


def test_a_satisfied_first_critique_keeps_the_draft(store):
    llm = FakeLLM().add("critic", verdict(False, "Fine as it is."))
    outcome = asyncio.run(refiner_for(store, llm).refine(DRAFT, UNIT_DOC, CHUNK))
    assert (outcome.stop, outcome.revisions) == ("no_revision_needed", 0)
    assert (outcome.final.question, outcome.final.answer) == (DRAFT.question, DRAFT.answer)
    assert [r.prompt_id for r in llm.requests] == ["critic"]
    assert [r[0] for r in refinement_rows(store, outcome.final.pair_id)] == [1]


def test_the_loop_caps_at_max_rounds(store):
    llm = FakeLLM(lambda req: verdict(True) if req.prompt_id == "critic" else appends_revised(req))
    outcome = asyncio.run(refiner_for(store, llm, max_rounds=2).refine(DRAFT, UNIT_DOC, CHUNK))

    assert (outcome.stop, outcome.revisions) == ("max_rounds", 2)
    assert outcome.final.answer == "In May. (revised) (revised)"
    assert [r.prompt_id for r in llm.requests] == ["critic", "regenerator"] * 2
    rows = refinement_rows(store, outcome.final.pair_id)
    assert [(k, answer, revised, needs) for k, _, _, answer, needs, _, _, revised in rows] == [
        (1, "In May.", "In May. (revised)", 1),
        (2, "In May. (revised)", "In May. (revised) (revised)", 1),
    ]
    assert refined_row(store) == [(outcome.final.pair_id, DRAFT.pair_id, 2, "max_rounds")]


def test_min_rounds_forces_a_revision_when_the_critic_is_satisfied(store):
    llm = FakeLLM(lambda req: verdict(False, "Looks good.") if req.prompt_id == "critic" else appends_revised(req))
    outcome = asyncio.run(refiner_for(store, llm, max_rounds=3, min_rounds=2).refine(DRAFT, UNIT_DOC, CHUNK))

    assert (outcome.stop, outcome.revisions) == ("no_revision_needed", 2)
    assert outcome.final.answer == "In May. (revised) (revised)"
    assert [r.prompt_id for r in llm.requests] == ["critic", "regenerator", "critic", "regenerator", "critic"]
    rows = refinement_rows(store, outcome.final.pair_id)
    assert [(k, needs, forced, revised is not None) for k, _, _, _, needs, forced, _, revised in rows] == [
        (1, 0, 1, True), (2, 0, 1, True), (3, 0, 0, False),
    ]


@pytest.mark.parametrize(
    ("critic_reply", "failure_stage"),
    [(LLMError("HTTP 500", retryable=True), "generate"), ('{"critique": "ok"}', "parse")],
    ids=["transport", "invalid-twice"],
)
def test_a_critic_failure_stops_the_loop_with_the_draft(store, critic_reply, failure_stage):
    llm = FakeLLM(lambda req: critic_reply if req.prompt_id == "critic" else appends_revised(req))
    outcome = asyncio.run(refiner_for(store, llm).refine(DRAFT, UNIT_DOC, CHUNK))

    assert (outcome.stop, outcome.revisions) == ("critic_failed", 0)
    assert (outcome.final.question, outcome.final.answer) == (DRAFT.question, DRAFT.answer)
    assert {r.prompt_id for r in llm.requests} == {"critic"}  # the regenerator is never asked
    assert refinement_rows(store, outcome.final.pair_id) == []
    assert refined_row(store) == [(outcome.final.pair_id, DRAFT.pair_id, 0, "critic_failed")]
    assert db_rows(store, "SELECT stage, prompt_id FROM failures") == [(failure_stage, "critic")]


def test_a_regenerator_failure_keeps_the_last_good_pair(store):
    llm = FakeLLM()
    llm.add("critic", verdict(True), verdict(True))
    llm.add("regenerator", revision("When did the council vote on the bridge?", "On 4 May."),
            LLMError("HTTP 503", retryable=True))
    outcome = asyncio.run(refiner_for(store, llm).refine(DRAFT, UNIT_DOC, CHUNK))
    assert (outcome.stop, outcome.revisions) == ("regenerator_failed", 1)
    assert (outcome.final.question, outcome.final.answer) == ("When did the council vote on the bridge?", "On 4 May.")
    rows = refinement_rows(store, outcome.final.pair_id)
    assert [(k, revised) for k, *_, revised in rows] == [(1, "On 4 May."), (2, None)]


def test_a_templated_question_stays_as_built_and_only_the_answer_is_revised(store):
    """The regenerator once turned 'Give a short summary of ...' into 'copy.copy' (issue 15): code-built questions
    (answers / entities / identity outputs) keep their question; a model-written one (facts) takes the revision."""
    question = f'Give a short summary of "{UNIT_DOC.title}".'
    draft = QAPair("s" * 64, CHUNK.chunk_id, UNIT_DOC.doc_id, "summaries", question, "m", "", "gen-model")
    llm = FakeLLM()
    llm.add("critic", verdict(True), verdict(False, "Fine now; no revision needed."))
    llm.add("regenerator", revision("copy.copy", "The council voted in May to close the old bridge."))
    outcome = asyncio.run(refiner_for(store, llm).refine(draft, UNIT_DOC, CHUNK))
    assert outcome.final.question == question
    assert outcome.final.answer == "The council voted in May to close the old bridge."
    assert refinement_rows(store, outcome.final.pair_id)[0][6] == question  # the record says what was kept

    llm = FakeLLM()
    llm.add("critic", verdict(True), verdict(False, "Fine now; no revision needed."))
    llm.add("regenerator", revision("When did the Eastbay council vote?", "On 4 May."))
    facts = asyncio.run(refiner_for(store, llm).refine(DRAFT, UNIT_DOC, CHUNK))
    assert facts.final.question == "When did the Eastbay council vote?"
