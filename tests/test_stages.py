"""The stages as lists (issue 30): the per-pair steps, the writers, and `qagen stages` printing what a run does."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from qagen.cli.app import app
from qagen.config import load_settings
from qagen.core.progress import NullProgress
from qagen.pipeline.assemble import build_stages, pair_step_plan
from qagen.pipeline.finish import WRITERS
from qagen.pipeline.ingest import ingest
from qagen.prompting.prompts import load_prompts
from qagen.store import Store
from qagen.testing.fake_llm import FakeLLM

SERVED = {"base_url": "http://127.0.0.1:9/v1", "model": "m"}


@pytest.mark.parametrize("given", [
    {}, {"judge": True}, {"judge": True, "best_of": 3}, {"refine": "repair"},
    {"refine": "full", "judge": True, "best_of": 2}, {"base_url": None, "model": None},
])
def test_the_plan_is_the_steps_a_run_builds(tmp_path, given):
    settings = load_settings(**{**SERVED, **given}) if given.get("base_url", 1) else load_settings()
    prompts = load_prompts(None, settings.refine_style, settings.prompt_switches, settings.perspective_suite)
    with Store(tmp_path / "out") as store:
        stages = build_stages(store, FakeLLM(), "m", prompts, settings, store.start_run("ingest", {}), NullProgress())
        assert [s.name for s in stages.generator.steps] == [name for name, _ in pair_step_plan(settings)]


def test_each_step_counts_the_pairs_it_saw(corpus, tmp_path, settings_for):
    summary = ingest(corpus, tmp_path / "out", settings_for(judge=True, refine="repair", suite="broad"))
    assert set(summary.steps) == {"refine", "judge"}
    # every drafted pair meets the repair step; the judge sees what the repair step passes on (one pair each)
    assert summary.steps["refine"] == summary.steps["judge"] > 0
    assert summary.steps["refine"] <= summary.pairs_generated


def test_a_writer_that_is_off_removes_its_earlier_file(corpus, tmp_path, settings_for):
    out = tmp_path / "out"
    first = ingest(corpus, out, settings_for(exam=True, cpt=True, suite="broad"))
    assert (out / "exam.jsonl").exists() and (out / "cpt.jsonl").exists() and first.status == "ok"
    ingest(corpus, out, settings_for(exam=False, cpt=False, suite="broad"))
    assert not (out / "exam.jsonl").exists() and not (out / "cpt.jsonl").exists()
    assert {w.file for w in WRITERS} >= {"exam.jsonl", "cpt.jsonl", "dpo.jsonl", "text.jsonl"}


def test_qagen_stages_prints_what_the_settings_turn_on(tmp_path):
    def stages(*args: str) -> dict[str, dict[str, str]]:
        result = CliRunner().invoke(app, ["stages", *args, "--json"])
        assert result.exit_code == 0, result.output
        return {s["stage"]: {step["name"]: step["what"] for step in s["steps"]} for s in json.loads(result.stdout)}

    embedded = stages()
    assert embedded["generate"]["suite"].startswith("embedded") and "600 tokens" in embedded["chunk"]["splitter"]
    assert list(embedded["per-pair steps"]) == ["judge"] and "exam.jsonl" not in embedded["writers"]
    served = stages("--base-url", "http://x/v1", "--refine", "repair", "--cpt", "--set", "curation.dedup=false")
    assert served["generate"]["suite"].startswith("ledger") and "cloze" in served["generate"]["fact ledger"]
    assert list(served["per-pair steps"]) == ["refine"] and "dedup" not in served["curate"]
    assert {"exam.jsonl", "cpt.jsonl", "dpo.jsonl"} <= set(served["writers"])
