"""Benchmark: the same training data, two recipes: which one remembers the documents better?

    python benchmarks/recipe.py --work benchmarks/.cache/knowledge-lora \
        --reference benchmarks/.cache/knowledge-after/qagen/adapters/051a29aed5a6 --reference-wall 630 \
        --template smollm2-cpu-lora --steps 60 90
    # continued pretraining first: re-ingest with --cpt (the QA requests come from the cache; the bench teacher
    # writes the rewrites), then the two-stage recipe with the reference's template
    python benchmarks/recipe.py --work benchmarks/.cache/knowledge-cpt --reference ... --reference-wall 630 \
        --ingest-flags "--no-refine --no-judge --cpt" --template smollm2-cpu-full --train-flags "--recipe cpt+sft"

It reuses a knowledge-benchmark work folder (``benchmarks/knowledge.py``: WORK/questions.jsonl holds the SQuAD
articles' human questions, WORK/qagen the qagen run) and a model already trained on it (``--reference``, e.g.
the full fine-tune of ``knowledge.py --template smollm2-cpu-full``, with its training wall time). It trains
``--template`` on the same train.jsonl with the same seed for each ``--steps`` (``qagen train --max-steps``;
pick one that matches the reference's wall time, from a first run's seconds per step), answers the questions
closed book, and gives F1 with paired-bootstrap intervals against the reference and the base model.
``--ingest-flags``: first run ``qagen ingest`` again on WORK/docs into WORK/qagen with the bench teacher and these
flags (as knowledge.py ran it: --eval-fraction 0 --no-report --no-exam), e.g. to add --cpt's rewrites; its new
teacher tokens are reported. Prints markdown for benchmarks/RESULTS.md and writes WORK/recipe.json.

Ablation rows (issue 16) leave WORK/qagen as it is: ``--row NAME`` works on a copy, WORK/rows/NAME/qagen (made
once, with the whole request cache, so a re-ingest asks the teacher only what the copy's flags add), and writes
WORK/rows/NAME/recipe.json (``--seed 2``: recipe-s2.json beside it). ``--fresh`` starts the row from an empty
folder instead, so its teacher tokens are all its own: a suite variant at a matched budget. ``--data baseline``
trains on knowledge.py's single-prompt dataset (WORK/baseline) instead, and ``--data rows/NAME/qagen`` on another
row's. ``--drop-perspectives metadata,entities`` removes those perspectives' rows from the copy's train.jsonl
before training (what the same generation teaches without them); ``--screen`` applies qagen's filters to it:

    python benchmarks/recipe.py --work W --row judge --reference REF --template smollm2-cpu-full \
        --ingest-flags "--no-refine"            # the judge on, the critic loop off
    python benchmarks/recipe.py --work W --row no-metadata --reference REF --template smollm2-cpu-full \
        --drop-perspectives metadata
    python benchmarks/recipe.py --work W --row lora-baseline --data baseline --reference BASELINE_FULL \
        --template smollm2-cpu-lora --steps 90          # LoRA vs full on the fact-dense baseline data
    python benchmarks/recipe.py --work W --row knowledge --fresh --reference REF --template smollm2-cpu-full \
        --ingest-flags "--no-refine --no-judge --suite knowledge"   # another suite
    # a value that is one flag needs the = form: --ingest-flags=--no-refine
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knowledge import cli as qagen
from knowledge import tokens_in


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--reference", required=True, help="a model trained on WORK/qagen's train.jsonl")
    ap.add_argument("--reference-wall", type=float, default=0.0, help="its training wall time, seconds")
    ap.add_argument("--template", default="smollm2-cpu-lora")
    ap.add_argument("--steps", type=int, nargs="+", default=[60])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--train-flags", default="", help="more flags for qagen train, e.g. '--recipe cpt+sft'")
    ap.add_argument("--ingest-flags", default=None, help="re-ingest WORK/docs with the bench teacher first")
    ap.add_argument("--data", default="qagen",
                    help="the dataset folder in WORK to train on: qagen, baseline, or a row's (rows/NAME/qagen)")
    ap.add_argument("--row", help="work on a copy of WORK/qagen in WORK/rows/ROW (an ablation row)")
    ap.add_argument("--fresh", action="store_true",
                    help="with --row: start the row from an empty folder, not a copy of WORK/qagen with its request "
                         "cache, so its teacher tokens are its own (a suite variant at a matched budget)")
    ap.add_argument("--drop-perspectives", default="", help="comma-separated perspectives to remove from train.jsonl")
    ap.add_argument("--screen", action="store_true",
                    help="apply qagen's deterministic filters to train.jsonl's rows (as quiz pairs), e.g. the baseline's")
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(markdown(run(args)))


def run(args: argparse.Namespace) -> dict[str, object]:
    from qagen.core import ids
    from qagen.corpus.questions import load_questions
    from qagen.evaluation.knowledge import DocRef, match_questions, score
    from qagen.evaluation.scoring import paired_bootstrap
    from qagen.store import Store

    if args.fresh and (args.ingest_flags is None or not args.row):
        sys.exit("--fresh needs --row and --ingest-flags: the row's data is generated from nothing")
    reingestable = args.data != "baseline" and (args.work / args.data / "qagen.sqlite").exists()
    if args.ingest_flags is not None and not reingestable:
        sys.exit("--ingest-flags re-ingests a qagen output folder (WORK/qagen or a row's); --data " + args.data
                 + " is not one")
    out, home = args.work / args.data, args.work
    if args.row:
        home = args.work / "rows" / args.row
        if not (home / args.data).exists():
            home.mkdir(parents=True, exist_ok=True)
            if args.fresh:
                (home / args.data).mkdir()
            else:
                shutil.copytree(out, home / args.data, ignore=shutil.ignore_patterns("adapters", "prepared*", "*.lock"))
        out = home / args.data
    ingest: dict[str, object] = {}
    if args.ingest_flags is not None:
        ingest = reingest(args, out)
    dropped = drop_perspectives(out / "train.jsonl", args.drop_perspectives)
    if args.screen:
        dropped |= screen_rows(out / "train.jsonl", args.work / "docs")
    with Store(args.work / "qagen") as store:  # the documents the questions are tied to: the qagen run's
        docs = [DocRef(*d) for d in store.run_documents(store.latest_finished_run("ingest"))]
    items, unmatched = match_questions(load_questions(args.work / "questions.jsonl"), docs,
                                       ids.group_id([d.doc_id for d in docs]))
    prompts = [(it.system, it.question) for it in items]
    trained = {}
    for steps in args.steps:
        t = time.perf_counter()
        tr = qagen("train", str(out), "--template", args.template, "--max-steps", str(steps), "--epochs", "100",
                   "--seed", str(args.seed), *args.train_flags.split())
        trained[steps] = tr | {"wall_s": round(time.perf_counter() - t, 1)}
    student = str(next(iter(trained.values()))["base_model"])
    base = cached_answers(args.work, student, prompts, None, args.threads)
    reference = cached_answers(args.work, student, prompts, args.reference, args.threads)
    ref_report = score(items, base, reference, questions_from="squad", base_model=student, tuned=args.reference,
                       unmatched=unmatched)
    rows = {}
    for steps, tr in trained.items():
        tuned = cached_answers(args.work, student, prompts, str(tr["adapter_dir"]), args.threads)
        rep = score(items, base, tuned, questions_from="squad", base_model=student, tuned=str(tr["adapter_dir"]),
                    unmatched=unmatched)
        mine = [r.tuned.f1 for r in rep.rows]
        rows[steps] = {"train_s": tr.get("seconds"), "wall_s": tr["wall_s"], "adapter_dir": tr["adapter_dir"],
                       "overall": rep.overall, "f1": mine, "contains": [r.tuned.contains for r in rep.rows],
                       "minus_reference": paired_bootstrap(mine, [r.tuned.f1 for r in ref_report.rows]).__dict__,
                       "minus_base": paired_bootstrap(mine, [r.base.f1 for r in rep.rows]).__dict__}
    pairs = sum(1 for line in (out / "train.jsonl").read_text().splitlines() if line.strip())
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "questions": len(items), "student": student,
               "ingest": ingest, "dataset": {"pairs": pairs, "dropped": dropped, "teacher_tokens": tokens_in(out)},
               "reference": {"overall": ref_report.overall, "wall_s": args.reference_wall,
                             "f1": [r.tuned.f1 for r in ref_report.rows]},
               "question_ids": [it.qid for it in items], "rows": rows}
    name = "recipe.json" if args.seed == 1 else f"recipe-s{args.seed}.json"  # a second seed sits beside the first
    (home / name).write_text(json.dumps(results, indent=1, default=str))
    return results


def cached_answers(work: Path, student: str, prompts: list[tuple[str, str]], tuned: str | None,
                   threads: int) -> list[str]:
    """Greedy closed-book answers, kept in WORK/answers by model and questions: the base model's and the
    reference's are the same for every row, so each is computed once (a model folder is never rewritten: its
    name is the hash of its training inputs)."""
    from qagen.core import ids
    from qagen.evaluation.answer import answer

    # the student by its files (each row's copy converts it into its own folder), a tuned model by its path
    files = sorted((f.name, f.stat().st_size) for f in Path(student).iterdir() if f.is_file())
    key = ids.hash_str("answers", json.dumps(files), tuned or "", json.dumps(prompts))
    path = work / "answers" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    answers = answer(student, prompts, tuned=tuned, threads=threads)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(answers))
    return answers


def screen_rows(train: Path, docs: Path) -> dict[str, int]:
    """Drop the rows qagen's deterministic filters would drop, judging each as a quiz pair of its document (the
    document's text as the passage); return the verdicts' counts."""
    from qagen.corpus.reader import iter_documents
    from qagen.curate.filters import FilterSettings, PairView, screen
    from qagen.prompting.prompts import load_prompts

    quiz, settings = load_prompts().by_id("quiz"), FilterSettings()
    by_id = {d.doc_id: d for d in iter_documents(docs) if hasattr(d, "doc_id")}

    def verdict(row: dict) -> str | None:
        doc, msgs = by_id.get(row.get("doc_id", "")), row["messages"]
        hit = screen(PairView(msgs[1]["content"], msgs[2]["content"], quiz, doc.title if doc else "",
                              doc.text if doc else ""), settings)
        return hit[0] if hit else None

    return _drop_rows(train, verdict)


def drop_perspectives(train: Path, names: str) -> dict[str, int]:
    """Remove the rows of these perspectives from train.jsonl; return how many of each went."""
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    if not wanted:
        return {}
    return _drop_rows(train, lambda row: row.get("perspective") if row.get("perspective") in wanted else None)


def _drop_rows(train: Path, reason: Callable[[dict], str | None]) -> dict[str, int]:
    """Rewrite train.jsonl without the rows ``reason`` names a reason for; return the count of each reason."""
    kept, gone = [], Counter()
    for line in train.read_text(encoding="utf-8").splitlines():
        why = reason(json.loads(line)) if line.strip() else None
        if why is not None:
            gone[why] += 1
        elif line.strip():
            kept.append(line)
    train.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return dict(gone)


def reingest(args: argparse.Namespace, out: Path) -> dict[str, object]:
    """qagen ingest WORK/docs again with the bench teacher (served here) and --ingest-flags."""
    from knowledge import serve_teacher

    before = tokens_in(out) if (out / "qagen.sqlite").exists() else 0
    server, base_url, model = serve_teacher(argparse.Namespace(teacher="bench", teacher_url=None, teacher_model="",
                                                               threads=args.threads, slots=args.slots))
    try:
        t = time.perf_counter()
        summary = qagen("ingest", str(args.work / "docs"), "--out", str(out), "--base-url", base_url, "--model", model,
                        "--eval-fraction", "0", "--no-report", "--no-exam", *args.ingest_flags.split())
    finally:
        server.stop()  # type: ignore[union-attr]
    return {"wall_s": round(time.perf_counter() - t, 1), "new_teacher_tokens": tokens_in(out) - before,
            "teacher_tokens": tokens_in(out), "requests_sent": summary.get("requests_sent"),
            "pairs": summary.get("pairs_total"), "cpt_texts": summary.get("cpt_texts"),
            "rewrites": summary.get("rewrites"), "rewrites_dropped": summary.get("rewrites_dropped")}


def markdown(results: dict[str, object]) -> str:
    def pts(x: object) -> str:
        return f"{100 * float(x):.1f}"  # type: ignore[arg-type]

    ref = results["reference"]
    lines = [(f"{results['questions']} questions, closed book; reference F1 {pts(ref['overall']['tuned_f1'])} "  # type: ignore[index]
             f"(trained in {ref['wall_s']} s), base {pts(ref['overall']['base_f1'])}"), "",  # type: ignore[index]
             "| template, steps | train wall s | F1 | EM | minus reference [95% CI] | minus base [95% CI] |",
             "|---|---|---|---|---|---|"]
    for steps, r in results["rows"].items():  # type: ignore[union-attr]
        d, b = r["minus_reference"], r["minus_base"]
        a = results["args"]  # type: ignore[index]
        label = " ".join(x for x in (a["row"], a["template"], a["train_flags"]) if x and x != "None")  # type: ignore[index]
        lines.append(f"| {label}, {steps} | {r['wall_s']} | {pts(r['overall']['tuned_f1'])} | "  # type: ignore[index]
                     f"{pts(r['overall']['tuned_em'])} | {pts(d['mean'])} [{pts(d['low'])}, {pts(d['high'])}] | "
                     f"{pts(b['mean'])} [{pts(b['low'])}, {pts(b['high'])}] |")
    lines += ["", f"dataset: {results['dataset']}"]
    if results.get("ingest"):
        lines += ["", f"re-ingest: {results['ingest']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
