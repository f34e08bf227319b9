"""The judge on a FakeLLM (no HTTP) and a real Store: P(yes) from logprobs, the parsed fallback, roles, thresholds."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from qagen.core.records import Judgement
from qagen.core.types import QAPair
from qagen.generate.caller import Caller
from qagen.generate.judge import TOP_LOGPROBS, Judge
from qagen.llm.base import ChatRequest, LLMError
from qagen.prompting.prompts import load_prompts
from qagen.store import Store
from qagen.testing import FakeLLM, FakeReply
from tests.helpers import UNIT_DOC, db_rows, unit_chunk

PROMPTS = load_prompts()
CHECKS = {name: text for name, text in PROMPTS.by_id("judge").questions}  # supported, self_contained, useful
CHUNK = unit_chunk()
PAIR = QAPair("p" * 64, CHUNK.chunk_id, UNIT_DOC.doc_id, "facts", "When did the Eastbay council vote to close the bridge?",
              "On 4 May.", "", "gen-model")


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "out") as s:
        yield s


def check_of(request: ChatRequest) -> str:
    """Which check a judge request asks (its yes/no question is in the last message)."""
    task = request.messages[-1].content
    (name,) = [n for n, text in CHECKS.items() if text.split("{{")[0].strip() in task]
    return name


def by_check(replies: dict[str, object]) -> FakeLLM:
    return FakeLLM(lambda req: replies[check_of(req)])


def logprobs(*top: tuple[str, float]) -> FakeReply:
    return FakeReply(top[0][0], top_logprobs=top, finish_reason="length", completion_tokens=1)


def judge_with(store: Store, llm: FakeLLM, threshold: float = 0.5, **kwargs) -> Judge:
    return Judge(Caller(store, llm, "gen-model", store.start_run("test", {}), **kwargs), PROMPTS, threshold)


def test_p_yes_is_read_from_the_first_tokens_logprobs(store):
    llm = by_check({
        "supported": logprobs(("Yes", -0.1), ("No", -2.3)),
        "self_contained": logprobs(("No", -0.1), (" yes", -2.3), ("The", -3.0)),  # other tokens are ignored
        "useful": logprobs(("YES.", -1.0), ("no", -1.0)),
    })
    judgement = asyncio.run(judge_with(store, llm).judge(PAIR, UNIT_DOC, CHUNK))

    p = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.3))  # 0.904837 / (0.904837 + 0.100259) = 0.900250
    assert p == pytest.approx(0.90025, abs=1e-5)
    assert judgement.scores == {"supported": round(p, 4), "self_contained": round(1 - p, 4), "useful": 0.5}
    assert judgement.scores["supported"] == 0.9002  # stored rounded to 4 places
    assert judgement.method == "logprobs" and judgement.missing == ()
    assert judgement.score == pytest.approx((0.9002 + 0.0998 + 0.5) / 3)
    # one request per check, each asking for the first token's alternatives, with the pair in it
    assert sorted(check_of(r) for r in llm.requests) == sorted(CHECKS)
    for r in llm.requests:
        assert (r.prompt_id, r.role, r.top_logprobs, r.max_tokens) == ("judge", "judge", TOP_LOGPROBS, 1)
        assert PAIR.question in r.messages[-1].content and PAIR.answer in r.messages[-1].content
    # a one-token reply cut at max_tokens is final: cached with its logprobs
    rows = db_rows(store, "SELECT prompt_id, finish_reason FROM requests")
    assert rows == [("judge", "length")] * 3


def test_without_logprobs_the_first_word_is_parsed(store):
    llm = by_check({"supported": "Yes.", "self_contained": ' "no"', "useful": "No, it would not."})
    judgement = asyncio.run(judge_with(store, llm).judge(PAIR, UNIT_DOC, CHUNK))
    assert judgement.scores == {"supported": 1.0, "self_contained": 0.0, "useful": 0.0}
    assert judgement.method == "parsed" and judgement.score == pytest.approx(1 / 3)
    assert db_rows(store, "SELECT count(*) FROM failures") == [(0,)]


def test_a_reply_neither_yes_nor_no_scores_zero_and_is_recorded(store):
    llm = by_check({"supported": "Yes", "self_contained": "Perhaps", "useful": "Probably"})
    judgement = asyncio.run(judge_with(store, llm).judge(PAIR, UNIT_DOC, CHUNK))
    assert judgement.scores == {"supported": 1.0, "self_contained": 0.0, "useful": 0.0}
    assert judgement.missing == ()  # scored (as "no"), not missing
    rows = db_rows(store, "SELECT stage, prompt_id, chunk_id, error, retryable FROM failures ORDER BY error")
    assert [(s, p, c, r) for s, p, c, _, r in rows] == [("judge", "judge", CHUNK.chunk_id, 0)] * 2
    assert rows[0][3].startswith("self_contained: neither yes nor no") and "'Perhaps'" in rows[0][3]
    assert rows[1][3].startswith("useful: neither yes nor no") and "'Probably'" in rows[1][3]


def test_a_failed_check_is_missing_and_never_passes(store):
    llm = by_check({"supported": "Yes", "self_contained": "Yes", "useful": LLMError("timeout", retryable=True)})
    judge = judge_with(store, llm, threshold=0.1)
    judgement = asyncio.run(judge.judge(PAIR, UNIT_DOC, CHUNK))
    assert judgement.missing == ("useful",) and judgement.score is None and not judge.passes(judgement)


@pytest.mark.parametrize(("threshold", "passes"), [(0.5, True), (0.9, True), (0.9003, False), (0.95, False)])
def test_passes_compares_the_mean_score_with_the_threshold(store, threshold, passes):
    llm = FakeLLM(lambda req: logprobs(("Yes", -0.1), ("No", -2.3)))  # every check 0.9002
    judge = judge_with(store, llm, threshold=threshold)
    (judgement,) = asyncio.run(judge.judge_pairs([PAIR], UNIT_DOC, CHUNK))
    assert judgement.score == pytest.approx(0.9002)
    assert judge.passes(judgement) is passes
    # judge_pairs stores the scores for curation
    assert store.judgements(judge.caller.run_id) == {PAIR.pair_id: (judgement.scores, "logprobs", judgement.score)}


def test_passes_on_hand_made_judgements(store):
    judge = judge_with(store, FakeLLM(), threshold=0.7)
    assert judge.passes(Judgement({"a": 0.9, "b": 0.5}, ("logprobs",) * 2, ()))  # mean 0.7
    assert not judge.passes(Judgement({"a": 0.9, "b": 0.49}, ("logprobs",) * 2, ()))
    assert not judge.passes(Judgement({}, (), ()))


def test_judge_requests_go_to_the_judge_roles_backend_and_model(store):
    generator_llm = FakeLLM(name="generator")  # unscripted: any call to it fails the test
    judge_llm = FakeLLM(lambda req: logprobs(("Yes", -0.05), ("No", -3.0)), name="judge")
    judge = judge_with(store, generator_llm, roles={"judge": (judge_llm, "judge-model")})
    judgement = asyncio.run(judge.judge(PAIR, UNIT_DOC, CHUNK))

    assert generator_llm.requests == []
    assert len(judge_llm.requests) == len(CHECKS)
    assert {(r.model, r.role) for r in judge_llm.requests} == {("judge-model", "judge")}
    assert db_rows(store, "SELECT DISTINCT model FROM requests") == [("judge-model",)]
    assert judgement.method == "logprobs" and not judgement.missing
