"""The repair loop's full mode (the model critic too: ``refine=True`` means ``--refine full``), against a stub
server with scripted verdicts; the unit tests (tests/test_refine_unit.py) cover the checks-only repair mode."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from qagen.pipeline.ingest import ingest
from qagen.prompting.prompts import load_prompts
from qagen.testing import StubReply
from tests.helpers import passage_of, passage_reply


def scripted(needs_revision) -> callable:
    """Critic says ``needs_revision(round_text)``; the regenerator appends ' (revised)' to the answer."""

    def handler(req: dict) -> StubReply:
        fmt = (req.get("response_format") or {}).get("json_schema", {})
        user = req["messages"][1]["content"]
        task = user.split("Task:", 1)[1]
        if fmt.get("name") == "critique":
            return StubReply(content=json.dumps(
                {"critique": "The answer is too short.", "problems": ["incomplete"], "needs_revision": needs_revision(task)}
            ))
        if fmt.get("name") == "revision":
            question = task.split("Question: ", 1)[1].split("\n", 1)[0]
            answer = task.split("Answer: ", 1)[1].split("\n", 1)[0]
            revised = {"question": question, "answer": answer + " (revised)"}
            if "quote" in fmt["schema"]["properties"]:  # drafts that carry a quote keep one
                revised["quote"] = passage_of(req).strip()[:60]
            return StubReply(content=json.dumps(revised))
        return passage_reply(req)

    return handler


def exported(out: Path) -> list[dict]:
    return [json.loads(l) for n in ("train.jsonl", "eval.jsonl") for l in (out / n).read_text().splitlines()]


def requests_by(stub, name: str) -> list[dict]:
    return [r for r in stub.requests if (r.get("response_format") or {}).get("json_schema", {}).get("name") == name]


def test_loop_stops_when_the_critic_is_satisfied(corpus, tmp_path, stub, settings_for):
    stub.handler = scripted(lambda task: False)
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(refine=True))
    assert s.refined and s.drafted > 0
    assert s.revisions_histogram == {"0": s.drafted} and s.stop_reasons == {"no_revision_needed": s.drafted}
    assert len(requests_by(stub, "critique")) == s.drafted and not requests_by(stub, "revision")
    llm_pairs = [r for r in exported(out) if r["perspective"] != "identity"]
    assert len(llm_pairs) == s.drafted
    assert all(r["revisions"] == 0 and r["stop"] == "no_revision_needed" for r in llm_pairs)
    assert all("(revised)" not in r["messages"][2]["content"] for r in llm_pairs)
    assert s.dpo_pairs == 0 and (out / "dpo.jsonl").read_text() == ""


def test_loop_caps_at_max_rounds_and_stores_every_round(corpus, tmp_path, stub, settings_for):
    stub.handler = scripted(lambda task: True)
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(refine=True, max_rounds=2))
    assert s.revisions_histogram == {"2": s.drafted} and s.stop_reasons == {"max_rounds": s.drafted}
    for rec in (r for r in exported(out) if r["perspective"] != "identity"):
        assert rec["messages"][2]["content"].endswith("(revised) (revised)")
        assert rec["revisions"] == 2
    db = sqlite3.connect(out / "qagen.sqlite")
    rounds = db.execute("SELECT final_pair_id, round, answer, revised_answer, needs_revision FROM refinements").fetchall()
    assert len(rounds) == 2 * s.drafted
    by_pair: dict[str, list] = {}
    for final, k, answer, revised, needs in rounds:
        by_pair.setdefault(final, []).append((k, answer, revised, needs))
    for steps in by_pair.values():
        (k1, a1, r1, _), (k2, a2, r2, _) = sorted(steps)
        assert (k1, k2) == (1, 2) and r1 == a1 + " (revised)" and a2 == r1 and r2 == r1 + " (revised)"
    # drafts are kept in the store, not exported
    drafts = db.execute("SELECT count(*) FROM refined r JOIN pairs p ON p.pair_id=r.draft_pair_id").fetchone()[0]
    assert drafts == s.drafted


def test_min_rounds_forces_revisions(corpus, tmp_path, stub, settings_for):
    stub.handler = scripted(lambda task: False)
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(refine=True, max_rounds=3, min_rounds=2))
    assert s.revisions_histogram == {"2": s.drafted}
    assert s.stop_reasons == {"no_revision_needed": s.drafted}
    db = sqlite3.connect(out / "qagen.sqlite")
    forced = db.execute("SELECT round, forced FROM refinements ORDER BY round").fetchall()
    assert {r for r, f in forced if f} == {1, 2} and {r for r, f in forced if not f} == {3}


def test_dpo_file_pairs_draft_against_final(corpus, tmp_path, stub, settings_for):
    stub.handler = scripted(lambda task: "(revised)" not in task)  # satisfied after one revision
    out = tmp_path / "out"
    s = ingest(corpus, out, settings_for(refine=True))
    assert s.revisions_histogram == {"1": s.drafted}
    lines = [json.loads(l) for l in (out / "dpo.jsonl").read_text().splitlines()]
    assert len(lines) == s.dpo_pairs == s.drafted
    final_by_id = {r["pair_id"]: r for r in exported(out)}
    for line in lines:
        assert [m["role"] for m in line["messages"]] == ["system", "user"]
        assert line["chosen"]["role"] == line["rejected"]["role"] == "assistant"
        assert line["chosen"]["content"] == line["rejected"]["content"] + " (revised)"
        final = final_by_id[line["pair_id"]]
        assert final["messages"][:2] == line["messages"]
        assert final["messages"][2]["content"] == line["chosen"]["content"]
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("json", data_files=str(out / "dpo.jsonl"), cache_dir=str(tmp_path / "hf"))
    assert ds["train"].num_rows == s.dpo_pairs


def test_rerun_is_free_and_critic_edit_reruns_refinement_only(corpus, tmp_path, stub, settings_for):
    stub.handler = scripted(lambda task: "(revised)" not in task)
    out = tmp_path / "out"
    first = ingest(corpus, out, settings_for(refine=True))
    calls = stub.count()
    again = ingest(corpus, out, settings_for(refine=True))
    assert stub.count() == calls and again.requests_sent == 0
    assert (again.drafted, again.dpo_pairs) == (first.drafted, first.dpo_pairs)

    user = tmp_path / "prompts"
    user.mkdir()
    critic = Path(load_prompts().by_id("critic").source).read_text()
    (user / "critic.md").write_text(critic.replace("Review this question", "Carefully review this question"))
    before = len(stub.requests)
    edited = ingest(corpus, out, settings_for(refine=True), prompts_dir=user)
    names = {(r.get("response_format") or {}).get("json_schema", {}).get("name") for r in stub.requests[before:]}
    assert names == {"critique"}  # regenerated pairs were cached; generation was not re-run
    assert edited.requests_sent == first.drafted * 2  # each pair: critic on the draft, critic on the revision


def test_invalid_round_settings_are_rejected(corpus, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "qagen.cli", "ingest", str(corpus), "--out", str(tmp_path / "o"), "--refine", "full",
         "--max-rounds", "1", "--min-rounds", "2"], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and "--min-rounds" in result.stderr
    # the loop is opt-in: forcing rounds without it is an error, not a silent no-op
    result = subprocess.run(
        [sys.executable, "-m", "qagen.cli", "ingest", str(corpus), "--out", str(tmp_path / "o"), "--min-rounds", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and "add --refine repair" in result.stderr and not (tmp_path / "o").exists()
    result = subprocess.run(  # an unknown mode is a clear error too
        [sys.executable, "-m", "qagen.cli", "ingest", str(corpus), "--out", str(tmp_path / "o"), "--refine", "always"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and "--refine must be one of off, repair, full" in result.stderr


def test_decontaminate_drops_benchmark_questions(corpus, tmp_path, stub, settings_for):
    out = tmp_path / "out"
    clean = ingest(corpus, out, settings_for())
    victim = exported(out)[0]["messages"][1]["content"]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"data": [{"paragraphs": [{"qas": [
        {"question": victim.rstrip("?") + " ?"}, {"question": "What is the capital of Mongolia?"}]}]}]}))
    s = ingest(corpus, out, settings_for(decontaminate=[str(bench)]))
    assert s.contaminated_removed >= 1 and s.pairs_total == clean.pairs_total - s.contaminated_removed
    assert victim not in {r["messages"][1]["content"] for r in exported(out)}
    assert s.requests_sent == 0  # a filter at export: nothing is regenerated


def test_unusable_benchmark_file_fails_before_any_call(corpus, tmp_path, stub, settings_for):
    from qagen.pipeline.ingest import ingest as run

    bad = tmp_path / "bench.xml"
    bad.write_text("<q/>")
    with pytest.raises(ValueError, match="bench.xml"):
        run(corpus, tmp_path / "out", settings_for(decontaminate=[str(bad)]))
    assert stub.count() == 0
