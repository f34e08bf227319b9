"""Finish issue 29's embedded-teacher knowledge row: train the cached baseline dataset (60 steps, seed 1, the same
flags as benchmarks/knowledge.py's steps mode), answer the 276 held-out questions with it, and compare with the
qagen row and the base answers that the interrupted run saved (results-steps.partial.json), paired by question."""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks")); sys.path.insert(0, str(ROOT))
import knowledge as kb

from qagen.corpus.questions import load_questions
from qagen.evaluation.answer import answer
from qagen.evaluation.knowledge import DocRef, match_questions, score
from qagen.evaluation.scoring import paired_bootstrap
from qagen.store import Store

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--work", type=Path, required=True, help="the knowledge.py --work folder of the interrupted run")
ap.add_argument("--steps", type=int, default=60)
ap.add_argument("--threads", type=int, default=2)
cli_args = ap.parse_args()
work = cli_args.work
partial = json.loads((work / "results-steps.partial.json").read_text())
qrows = partial["steps"]["qagen"]["d1s1"]["rows"]
args = argparse.Namespace(template="smollm2-cpu-lora", threads=cli_args.threads, steps=cli_args.steps, student=None,
                          recipe_flags="")
t = time.perf_counter()
tr = kb.train(work / "d1" / "baseline", args, 1, "steps")
print("trained", tr.get("steps"), round(time.perf_counter() - t), "s", flush=True)
questions = load_questions(work / "questions.jsonl")
with Store(work / "d1" / "qagen") as store:
    run_id = store.latest_finished_run("ingest")
    docs_ref = [DocRef(*d) for d in store.run_documents(run_id)]
    group = store.run_record(run_id).summary["group_id"]
items, unmatched = match_questions(questions, docs_ref, str(group))
assert [it.question for it in items] == [r["question"] for r in qrows], "question order differs"
prompts = [(it.system, it.question) for it in items]
t = time.perf_counter()
tuned = answer(str(tr["base_model"]), prompts, tuned=str(tr["adapter_dir"]), threads=cli_args.threads)
print("answered", round(time.perf_counter() - t), "s", flush=True)
base_answers = [r["base_answer"] for r in qrows]
rep = score(items, base_answers, tuned, questions_from=str(work / "questions.jsonl"), base_model=str(tr["base_model"]),
            tuned=str(tr["adapter_dir"]), unmatched=unmatched)
out = {"baseline_train": {k: tr.get(k) for k in ("steps", "wall_s", "seconds", "stop")}, "baseline_overall": rep.overall}
for metric in ("f1", "em", "contains"):
    q = [float(r["tuned"][metric]) for r in qrows]
    b = [float(r.tuned.__dict__[metric]) for r in rep.rows]
    base = [float(r["base"][metric]) for r in qrows]
    out[metric] = {"qagen": sum(q) / len(q), "baseline": sum(b) / len(b), "base": sum(base) / len(base),
                   "qagen_minus_baseline": paired_bootstrap(q, b).__dict__,
                   "baseline_minus_base": paired_bootstrap(b, base).__dict__}
(work / "finish29.json").write_text(json.dumps(out, indent=1, default=str))
print(json.dumps({m: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out[m].items()} for m in ("f1", "em", "contains")}, default=str))
