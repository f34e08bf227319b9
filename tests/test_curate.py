"""Judge, grounding, dedup, fail-fast, per-role endpoints and the HelixNet style, against stub servers.

Each test scripts the stub's replies, runs the real pipeline, and checks the
exported JSONL, the summary and the ``verdicts`` rows in the state database.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qagen.config import Settings
from qagen.core.errors import FailFast
from qagen.generate.judge import parse_yes_no, yes_probability
from qagen.pipeline.ingest import ingest
from qagen.testing import StubReply, StubServer
from tests.helpers import (
    YES,
    is_judge,
    judge_task,
    judging,
    logprob_reply,
    passage_reply,
)

NO = [("No", -0.05), ("Yes", -3.0)]


def exported(out: Path) -> list[dict]:
    return [json.loads(line) for n in ("train.jsonl", "eval.jsonl") for line in (out / n).read_text().splitlines()]


def verdict_rows(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "qagen.sqlite") as db:
        return db.execute(
            "SELECT v.pair_id, v.verdict, v.detail, v.judge, v.judge_method, v.judge_score, v.grounded, "
            "v.duplicate_of, p.question FROM verdicts v JOIN pairs p ON p.pair_id=v.pair_id "
            "WHERE v.run_id=(SELECT max(run_id) FROM runs)"
        ).fetchall()


# --- the judge ---------------------------------------------------------------------------------
def test_yes_probability_reads_first_token_logprobs():
    assert yes_probability([("Yes", -0.1), ("No", -2.4)]) == pytest.approx(0.909, abs=1e-3)
    # case, leading spaces and punctuation; other tokens are ignored
    assert yes_probability([("The", -0.5), (" yes", -1.0), ("NO.", -1.0)]) == pytest.approx(0.5)
    assert yes_probability([("The", -0.1), ("A", -1.0)]) is None
    assert parse_yes_no("Yes, it is.") == 1.0 and parse_yes_no(' "no"') == 0.0 and parse_yes_no("Maybe") is None


def test_judge_scores_are_stored_and_low_scores_rejected(corpus, tmp_path, stub, settings_for):
    # The second pair of every multi-pair call gets "No" on its checks.
    stub.handler = judging(lambda task: logprob_reply(NO if "pairs[1]" in task else YES))
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(judge=True))
    assert s.status == "ok" and s.judged and s.judge_method == "logprobs"
    rows = verdict_rows(out)
    rejected = [r for r in rows if r[1] == "judge_rejected"]
    assert rejected and all("pairs[1]" in r[8] for r in rejected)
    assert all(r[5] < 0.5 and "judge score" in r[2] for r in rejected)
    assert s.judge_rejected == len(rejected) and s.verdicts["judge_rejected"] == len(rejected)
    records = exported(out)
    assert not any("pairs[1]" in r["messages"][1]["content"] for r in records)
    judged = [r for r in records if r["perspective"] != "identity"]
    assert judged and all(set(r["judge"]) == {"supported", "self_contained", "useful"} for r in judged)
    assert all(r["judge_score"] == pytest.approx(0.95, abs=0.01) for r in judged)
    # three checks per pair, each a 1-token request asking for the first token's logprobs
    checks = [r for r in stub.requests if is_judge(r)]
    assert len(checks) == 3 * s.pairs_generated - 3 * s.pairs_per_perspective["identity"]
    assert all(r["max_tokens"] == 1 and r["logprobs"] and r["top_logprobs"] == 20 for r in checks)


def test_judge_falls_back_to_parsed_yes_no_without_logprobs(corpus, tmp_path, stub, settings_for):
    stub.handler = judging(lambda task: StubReply(content="no" if "pairs[1]" in task else "Yes."))
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(judge=True))
    assert s.judge_method == "parsed" and s.judge_rejected > 0 and s.judge_passed > 0
    assert {r[4] for r in verdict_rows(out) if r[1] != "exported" or r[5] is not None} == {"parsed"}
    assert {json.dumps(r["judge"]) for r in exported(out) if "judge" in r} == {
        '{"self_contained": 1.0, "supported": 1.0, "useful": 1.0}'
    }


def test_judge_rejecting_everything_is_an_error(corpus, tmp_path, stub, settings_for):
    stub.handler = judging(lambda task: logprob_reply(NO))
    s = ingest(corpus, tmp_path / "out", settings_for(judge=True, fail_fast_after=0))
    assert s.status == "failed" and "rejected all" in s.error
    assert s.train_pairs + s.eval_pairs == s.pairs_per_perspective["identity"]  # only code-built pairs remain


def test_fail_fast_alarm_stops_on_rejections(corpus, tmp_path, stub, settings_for):
    stub.handler = judging(lambda task: logprob_reply(NO))
    with pytest.raises(FailFast) as caught:
        ingest(corpus, tmp_path / "out", settings_for(judge=True, fail_fast_after=6))
    assert caught.value.stage == "judge" and caught.value.rate == 1.0 and "pairs" not in caught.value.stage
    assert "first 6 judge items" in str(caught.value) and "Example:" in str(caught.value)
    with sqlite3.connect(tmp_path / "out" / "qagen.sqlite") as db:
        status, summary = db.execute("SELECT status, summary FROM runs").fetchone()
    assert status == "failed" and "stopped early" in json.loads(summary)["error"]


def test_fail_fast_alarm_stops_on_parse_failures_with_exit_1(corpus, tmp_path, stub):
    stub.handler = lambda req: StubReply(content="this is not JSON at all")

    def ingest(out: Path, after: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "qagen.cli", "ingest", str(corpus), "--out", str(out), "--base-url", stub.base_url,
             "--model", "stub-model", "--fail-fast-after", str(after), "--no-refine", "--no-judge", "--suite", "broad"],
            capture_output=True, text=True, timeout=300, check=False,
        )

    ingest(tmp_path / "full", 0)  # the same run without the alarm: every call and its corrective retry
    full = stub.count()
    out = tmp_path / "out"
    done = ingest(out, 4)
    assert done.returncode == 1
    message = " ".join(done.stderr.split())  # rich wraps long lines
    assert "parse stage" in message and "100% of the first 4" in message and "this is not JSON" in message
    assert stub.count() - full < full  # it stopped before the end
    with sqlite3.connect(out / "qagen.sqlite") as db:
        assert db.execute("SELECT status FROM runs").fetchone()[0] == "failed"


# --- grounding -------------------------------------------------------------------------------
def inventing(req: dict) -> StubReply:
    """Like passage_reply, but the second pair's quote is invented."""
    reply = passage_reply(req)
    fmt = (req.get("response_format") or {}).get("json_schema", {})
    if fmt.get("name") == "qa_pairs":
        data = json.loads(reply.content)
        if len(data["pairs"]) > 1:
            data["pairs"][1]["quote"] = "words that appear nowhere in the document at all"
        reply = StubReply(content=json.dumps(data))
    return reply


def test_ungrounded_quotes_are_dropped_and_counted(corpus, tmp_path, stub, settings_for):
    stub.handler = inventing
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for())
    rows = verdict_rows(out)
    ungrounded = [r for r in rows if r[1] == "ungrounded"]
    assert ungrounded and all("pairs[1]" in r[8] and r[6] == 0 for r in ungrounded)
    assert s.ungrounded == len(ungrounded) and s.grounded == s.grounding_checked - len(ungrounded) > 0
    records = exported(out)
    quoted = [r for r in records if r["perspective"] in ("quiz", "facts")]
    assert quoted and all(r["grounded"] is True and r["quote"] for r in quoted)
    # summaries and code-built pairs are not quote-grounded
    assert all("grounded" not in r for r in records if r["perspective"] in ("summaries", "identity"))


def test_ungrounded_flag_mode_exports_them_marked(corpus, tmp_path, stub, settings_for):
    stub.handler = inventing
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(ungrounded="flag", dedup=False))
    flagged = [r for r in exported(out) if r.get("grounded") is False]
    assert flagged and len(flagged) == s.ungrounded and "ungrounded" not in s.verdicts


# --- dedup -----------------------------------------------------------------------------------
def paraphrasing(req: dict) -> StubReply:
    """Every quiz call asks the same question, worded slightly differently per chunk."""
    fmt = (req.get("response_format") or {}).get("json_schema", {})
    if fmt.get("name") == "qa_pairs" and "quiz questions" in json.dumps(req["messages"]):
        passage = json.dumps(req["messages"])
        variant = "the Congress" if "shallow" in passage.lower() else "Congress"
        data = json.loads(passage_reply(req).content)
        data["pairs"] = [{"question": f"What did Washington ask {variant} to provide for the common defence?",
                          "quote": data["pairs"][0]["quote"], "answer": "He asked for a militia."}]
        return StubReply(content=json.dumps(data))
    if is_judge(req) and "the Congress" in judge_task(req):
        return logprob_reply([("Yes", -0.01), ("No", -5.0)])  # the better-judged variant
    return passage_reply(req) if not is_judge(req) else logprob_reply([("Yes", -0.5), ("No", -1.5)])


def test_dedup_keeps_the_best_judged_paraphrase(corpus, tmp_path, stub, settings_for):
    stub.handler = paraphrasing
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(judge=True, dedup=True))
    rows = verdict_rows(out)
    dupes = [r for r in rows if r[1] == "duplicate"]
    assert s.duplicates_removed == len(dupes)
    kept = {r[0]: r for r in rows}
    defence = [d for d in dupes if "common defence" in d[8]]
    assert defence
    for d in defence:
        winner = kept[d[7]]
        assert winner[1] == "exported" and "the Congress" in winner[8] and winner[5] > d[5]
    quiz = [r["messages"][1]["content"] for r in exported(out) if r["perspective"] == "quiz"]
    assert len([q for q in quiz if "common defence" in q]) == 1


def test_no_dedup_keeps_them(corpus, tmp_path, stub, settings_for):
    stub.handler = paraphrasing
    s = ingest(corpus, tmp_path / "out", settings_for(judge=True, dedup=False))
    assert s.duplicates_removed == 0


# --- per-role endpoints and the HelixNet style --------------------------------------------------
def test_critic_and_judge_can_use_their_own_endpoints(corpus, tmp_path, stub, settings_for):
    with StubServer(passage_reply) as other:
        s = ingest(corpus, tmp_path / "out", settings_for(
            refine=True, judge=True, critic_base_url=other.base_url, critic_model="critic-7b",
            judge_base_url=other.base_url, judge_model="judge-7b",
        ))
        on_other = list(other.requests)
    assert s.status == "ok"
    critiques = [r for r in on_other if (r.get("response_format") or {}).get("json_schema", {}).get("name") == "critique"]
    judges = [r for r in on_other if is_judge(r)]
    assert critiques and {r["model"] for r in critiques} == {"critic-7b"}
    assert judges and {r["model"] for r in judges} == {"judge-7b"}
    main = list(stub.requests)
    assert main and not any(is_judge(r) for r in main)
    assert {r["model"] for r in main} == {"stub-model"}


def test_role_endpoint_without_model_is_rejected(corpus, tmp_path, stub, settings_for):
    from qagen.core.errors import InputError

    with pytest.raises(InputError, match="--critic-base-url needs --critic-model"):
        ingest(corpus, tmp_path / "out", settings_for(refine=True, critic_base_url=stub.base_url))


def test_a_stage_that_cannot_be_built_leaves_no_run_running(corpus, tmp_path, stub, settings_for):
    """The stages are built after the run row is written: a failure there ends the run "failed", not "running"."""
    from qagen.core.errors import InputError

    out = tmp_path / "out"
    with pytest.raises(InputError):
        ingest(corpus, out, settings_for(refine=True, critic_base_url=stub.base_url))
    with sqlite3.connect(out / "qagen.sqlite") as db:
        runs = db.execute("SELECT status, finished_at IS NOT NULL, json_extract(summary, '$.error') FROM runs").fetchall()
    assert [(status, finished) for status, finished, _ in runs] == [("failed", 1)]
    assert "--critic-base-url needs --critic-model" in runs[0][2]


def helix(req: dict) -> StubReply:
    """HelixNet-format critic/regenerator over /v1/completions; the critic is satisfied after one revision."""
    if "prompt" in req:
        prompt = req["prompt"]
        if prompt.rstrip().endswith("REGENERATED ANSWER:"):
            return StubReply(content=" A fuller answer from the passage.")
        if "A fuller answer" in prompt:
            return StubReply(content=" Accurate. No revision needed.")
        return StubReply(content=" The response is vague.")
    return passage_reply(req)


def test_helixnet_style_uses_completions_format(corpus, tmp_path, stub, settings_for):
    stub.handler = helix
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(refine=True, refine_style="helixnet"))
    prompts = [r["prompt"] for r in stub.requests if "prompt" in r]
    assert prompts and all(p.startswith("SYSTEM: ") and "\nUSER: " in p and "\nRESPONSE: " in p for p in prompts)
    assert any(p.rstrip().endswith("CRITIQUE:") for p in prompts)
    assert any(p.rstrip().endswith("REGENERATOR: REGENERATED ANSWER:") for p in prompts)
    assert s.revisions_histogram == {"1": s.drafted} and s.stop_reasons == {"no_revision_needed": s.drafted}
    llm_pairs = [r for r in exported(out) if r["perspective"] != "identity"]
    assert llm_pairs and all(r["messages"][2]["content"] == "A fuller answer from the passage." for r in llm_pairs)
    with sqlite3.connect(out / "qagen.sqlite") as db:
        crit = db.execute("SELECT critique, needs_revision FROM refinements ORDER BY round").fetchall()
    assert ("The response is vague.", 1) in crit and ("Accurate. No revision needed.", 0) in crit


# --- defaults ------------------------------------------------------------------------------------
def test_curation_defaults_follow_the_backend():
    s = Settings()
    # the embedded model's profile: the critic loop off unless asked (--refine); the judge, filters, grounding, dedup
    assert not s.refining and s.judging and s.dedup and s.filters and s.ungrounded == "drop"
    served = Settings(base_url="http://x/v1", model="m")
    # a served model: no critic loop and no judge unless asked (RESULTS §26: both lowered closed-book F1, at 4.7x
    # and 3.2x generation's tokens)
    assert not served.refining and not served.judging and served.dedup and served.filters
    assert Settings(base_url="http://x/v1", model="m", refine=True).refining
    assert Settings(base_url="http://x/v1", model="m", judge=True).judging and not Settings(judge=False).judging
    assert s.rounds == 1  # the embedded CPU model: one round when --refine (see benchmarks/RESULTS.md)
    assert Settings(base_url="http://x/v1", model="m").rounds == 3
    assert Settings(max_rounds=5).rounds == 5


def test_default_settings_run_refine_judge_and_export_dpo(corpus, tmp_path, stub, settings_for):
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(refine=True, judge=True, dedup=True, report=True, license="cc0-1.0"))
    assert s.status == "ok" and s.refined and s.judged and s.drafted > 0
    assert s.verdicts["exported"] == s.train_pairs + s.eval_pairs
    assert (out / "dpo.jsonl").exists()
    # the report and the dataset card come with the dataset
    assert s.report_path == str(out / "report.html") and "<svg" in (out / "report.html").read_text()
    card = (out / "README.md").read_text()
    assert card.startswith("---") and "license: cc0-1.0" in card
    # a re-run is free: generation, refinement and judging all come from the store
    before = stub.count()
    again = ingest(corpus, out, settings_for(refine=True, judge=True, dedup=True))
    assert stub.count() == before and again.requests_sent == 0
    assert again.verdicts == s.verdicts


# --- best-of-n -------------------------------------------------------------------------------------
def sampling(req: dict) -> StubReply:
    """The answerer's seed-2 sample is the one the judge likes; everything else is judged lukewarm."""
    fmt = (req.get("response_format") or {}).get("json_schema", {})
    if fmt.get("name") == "answer":
        quote = passage_of_req(req)[:60]
        return StubReply(content=json.dumps({"quote": quote, "answer": f"Sampled answer with seed {req['seed']}."}))
    if is_judge(req):
        good = "Sampled answer with seed 2." in judge_task(req)
        return logprob_reply([("Yes", -0.01), ("No", -5.0)] if good else [("Yes", -0.7), ("No", -0.7)])
    return passage_reply(req)


def passage_of_req(req: dict) -> str:
    from tests.helpers import passage_of

    return passage_of(req).strip()


def test_best_of_n_keeps_the_best_judged_answer(corpus, tmp_path, stub, settings_for):
    stub.handler = sampling
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(judge=True, best_of=3))
    samples = [r for r in stub.requests if (r.get("response_format") or {}).get("json_schema", {}).get("name") == "answer"]
    assert samples and sorted({r["seed"] for r in samples}) == [1, 2]
    quoted = [r for r in exported(out) if r["perspective"] in ("quiz", "facts", "title_questions")]
    assert quoted and all(r["messages"][2]["content"] == "Sampled answer with seed 2." for r in quoted)
    assert all(r["best_of"] == "3/3" and r["judge_score"] > 0.9 for r in quoted)
    assert s.best_of_replaced == len(quoted)
    # other perspectives are not resampled
    assert all("best_of" not in r for r in exported(out) if r["perspective"] in ("summaries", "metadata"))


def test_best_of_needs_the_judge(corpus, tmp_path, stub, settings_for):
    from qagen.core.errors import InputError

    with pytest.raises(InputError, match="--best-of needs the judge"):
        ingest(corpus, tmp_path / "out", settings_for(judge=False, best_of=2))


def test_judge_reply_that_is_neither_yes_nor_no_scores_zero_and_is_recorded(corpus, tmp_path, stub, settings_for):
    stub.handler = judging(lambda task: StubReply(content="Perhaps" if "pairs[1]" in task else "Yes"))
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(judge=True))
    assert s.judge_failed == 0 and s.judge_rejected > 0
    with sqlite3.connect(out / "qagen.sqlite") as db:
        errors = [r[0] for r in db.execute("SELECT error FROM failures WHERE stage='judge'")]
    assert errors and all("neither yes nor no" in e and "'Perhaps'" in e for e in errors)


def test_failed_judge_request_is_not_exported_and_retried_next_run(corpus, tmp_path, stub, settings_for):
    stub.handler = judging(lambda task: StubReply(status=400, content="bad") if "pairs[1]" in task else logprob_reply(YES))
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(judge=True))
    failed = [r for r in verdict_rows(out) if r[1] == "judge_failed"]
    assert s.status == "partial" and failed and s.judge_failed == len(failed)
    assert not any("pairs[1]" in r["messages"][1]["content"] for r in exported(out))
    stub.handler = judging(lambda task: logprob_reply(YES))
    again = ingest(corpus, out, settings_for(judge=True))
    assert again.status == "ok" and again.judge_failed == 0
    assert again.requests_sent == 3 * len(failed)  # only the failed checks, three per pair
