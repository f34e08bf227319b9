"""Benchmark: open book and closed book, base vs a closed-book fine-tune vs one with open-book rows mixed in.

    python benchmarks/openbook.py --work benchmarks/.cache/knowledge-openbook \
        --closed benchmarks/.cache/knowledge-after/qagen/adapters/051a29aed5a6 \
        --mixed benchmarks/.cache/knowledge-openbook/qagen/adapters/<key> --every 2

It reuses a knowledge-benchmark work folder (``benchmarks/knowledge.py``: the SQuAD articles, their human
questions in WORK/questions.jsonl, and qagen's run in WORK/qagen) and two models trained from the same student
with the same recipe and steps: ``--closed`` on train.jsonl as ingest wrote it, ``--mixed`` on train.jsonl
with ``--contextual-share`` rows added (``qagen.output.contextual.mix_into_train``, what ``qagen ingest
--contextual-share`` runs).

1. **Open book** (``qagen.evaluation.openbook``, what ``qagen eval --open-book`` runs): every ``--every``-th question
   over its chunk, among other articles' chunks, and without it. F1, cited, declined; paired bootstrap
   intervals on each tuned model minus base and on mixed minus closed.
2. **Closed book** on all the questions: does mixing open-book rows in cost the closed-book score?
Prints markdown for benchmarks/RESULTS.md and writes WORK/openbook.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--closed", required=True, help="the model tuned on closed-book rows only")
    ap.add_argument("--mixed", required=True, help="the model tuned with open-book rows mixed in")
    ap.add_argument("--student", help="the base model folder (default: WORK/qagen/models/smollm2-135m-instruct)")
    ap.add_argument("--every", type=int, default=1, help="open book: every k-th question (prompts are long)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(markdown(run(args)))


def run(args: argparse.Namespace) -> dict[str, object]:
    from qagen.core import ids
    from qagen.corpus.questions import load_questions
    from qagen.evaluation import openbook
    from qagen.evaluation.answer import answer
    from qagen.evaluation.knowledge import DocRef, match_questions, score
    from qagen.evaluation.scoring import paired_bootstrap
    from qagen.store import Store

    out = args.work / "qagen"
    student = args.student or str(out / "models" / "smollm2-135m-instruct")
    with Store(out) as store:
        run_id = store.latest_finished_run("ingest")
        docs = [DocRef(*d) for d in store.run_documents(run_id)]
        group = ids.group_id([d.doc_id for d in docs])
        items, unmatched = match_questions(load_questions(args.work / "questions.jsonl"), docs, group)
        ob_items, unplaced = openbook.build(store, run_id, items[:: args.every])
    models = {"base": None, "closed": args.closed, "mixed": args.mixed}
    timing: dict[str, float] = {}
    open_answers: dict[str, list[str]] = {}
    closed_answers: dict[str, list[str]] = {}
    prompts = openbook.prompts(ob_items)
    for name, tuned in models.items():
        t = time.perf_counter()
        open_answers[name] = answer(student, prompts, tuned=tuned, threads=args.threads,
                                    max_new_tokens=openbook.MAX_NEW_TOKENS)
        timing[f"open_{name}_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        closed_answers[name] = answer(student, [(it.system, it.question) for it in items], tuned=tuned,
                                      threads=args.threads)
        timing[f"closed_{name}_s"] = round(time.perf_counter() - t, 1)
    reports = {name: openbook.score(ob_items, open_answers["base"], open_answers[name], unplaced)
               for name in ("closed", "mixed")}
    # mixed minus closed, per mode: F1 where the chunk is given, declined where it is withheld
    versus = {}
    for mode in openbook.MODES:
        rows = [(c, m) for c, m in zip(reports["closed"].rows, reports["mixed"].rows, strict=True) if c.mode == mode]
        metric = "declined" if mode == openbook.WITHHELD else "f1"
        iv = paired_bootstrap([float(getattr(m, f"tuned_{metric}")) for _, m in rows],
                              [float(getattr(c, f"tuned_{metric}")) for c, _ in rows])
        cited = paired_bootstrap([float(m.tuned_cited) for _, m in rows], [float(c.tuned_cited) for c, _ in rows])
        versus[mode] = {"metric": metric, "delta": iv.__dict__, "cited_delta": cited.__dict__}
    closed_book = {name: score(items, closed_answers["base"], closed_answers[name], questions_from="squad",
                               base_model=student, tuned=str(models[name]), unmatched=unmatched)
                   for name in ("closed", "mixed")}
    ta = [r.tuned.f1 for r in closed_book["mixed"].rows]
    tb = [r.tuned.f1 for r in closed_book["closed"].rows]
    results = {
        "args": {k: str(v) for k, v in vars(args).items()}, "student": student,
        "questions": len(items), "open_book_questions": reports["closed"].questions, "unplaced": len(unplaced),
        "open_book": {name: {k: v for k, v in r.to_dict().items() if k != "rows"} for name, r in reports.items()},
        "open_book_rows": [r.__dict__ | {"mixed_answer": m.tuned_answer, "mixed_f1": m.tuned_f1,
                                         "mixed_declined": m.tuned_declined, "mixed_cited": m.tuned_cited}
                           for r, m in zip(reports["closed"].rows, reports["mixed"].rows, strict=True)],
        "mixed_minus_closed": versus,
        "closed_book": {name: r.overall for name, r in closed_book.items()},
        "closed_book_mixed_minus_closed": paired_bootstrap(ta, tb).__dict__,
        "timing": timing,
    }
    (args.work / "openbook.json").write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
    return results


def markdown(results: dict[str, object]) -> str:
    def pts(x: object) -> str:
        return f"{100 * float(x):.1f}"  # type: ignore[arg-type]

    def ci(iv: dict[str, float]) -> str:
        return f"{pts(iv['mean'])} [{pts(iv['low'])}, {pts(iv['high'])}]"

    ob = results["open_book"]
    lines = [f"Open book, {results['open_book_questions']} questions x 3 modes ({results['unplaced']} unplaced):", "",
             ("| mode | n | base | closed-tuned | mixed-tuned | closed - base | mixed - base | mixed - closed | "
             "cited: base / closed / mixed |"), "|---|---|---|---|---|---|---|---|---|"]
    for mode in ("answer", "distractors", "withheld"):
        c, m = ob["closed"]["modes"].get(mode), ob["mixed"]["modes"].get(mode)  # type: ignore[index]
        if not c:
            continue
        metric = c["delta_of"]
        v = results["mixed_minus_closed"][mode]  # type: ignore[index]
        lines.append(
            f"| {mode} ({'declined' if metric == 'declined' else 'F1'}) | {c['count']} | {pts(c[f'base_{metric}'])} | "
            f"{pts(c[f'tuned_{metric}'])} | {pts(m[f'tuned_{metric}'])} | "
            f"{pts(c['delta'])} [{pts(c['delta_low'])}, {pts(c['delta_high'])}] | "
            f"{pts(m['delta'])} [{pts(m['delta_low'])}, {pts(m['delta_high'])}] | {ci(v['delta'])} | "
            f"{pts(c['base_cited'])} / {pts(c['tuned_cited'])} / {pts(m['tuned_cited'])} |")
    cb = results["closed_book"]
    lines += ["", (f"Closed book, {results['questions']} questions: F1 base {pts(cb['closed']['base_f1'])}, "  # type: ignore[index]
              f"closed-tuned {pts(cb['closed']['tuned_f1'])}, mixed-tuned {pts(cb['mixed']['tuned_f1'])}; "  # type: ignore[index]
              f"mixed - closed {ci(results['closed_book_mixed_minus_closed'])}"),  # type: ignore[arg-type]
              "", f"timing: {results['timing']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
