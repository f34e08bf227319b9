"""Tabulate the knowledge benchmark's ablation rows (issue 16) against its two datasets, paired per question.

    python benchmarks/ablation.py --work benchmarks/.cache/kb-gen [--seed 1]

Reads WORK/results.json (``benchmarks/knowledge.py``: qagen's data and the single-prompt baseline, same student,
same steps) and every WORK/rows/NAME/recipe.json (``benchmarks/recipe.py --row NAME``), and prints one markdown
row per trained model: pairs, teacher tokens, train wall time, closed-book F1 and contains, and the paired-
bootstrap 95 % intervals of its F1 minus knowledge.py's qagen row and minus its baseline row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seed", default="1", help="knowledge.py's training seed to compare with")
    ap.add_argument("--against", help="one more column: F1 minus this row's (a --row name)")
    args = ap.parse_args()
    print(table(args.work, args.seed, args.against))


def table(work: Path, seed: str, against: str | None = None) -> str:
    from qagen.flow.scoring import paired_bootstrap

    res = json.loads((work / "results.json").read_text())
    qids = [r["qid"] for r in res["scores"]["qagen"][seed]["rows"]]

    def vec(name: str, metric: str) -> list[float]:
        return [r["tuned"][metric] for r in res["scores"][name][seed]["rows"]]

    ref = {"qagen": vec("qagen", "f1"), "baseline": vec("baseline", "f1")}
    models = [("qagen (knowledge.py)", res["qagen"]["pairs"], res["qagen"]["tokens"],
               res["train"]["qagen"][seed]["wall_s"], vec("qagen", "f1"), vec("qagen", "contains")),
              ("baseline (knowledge.py)", res["baseline"]["pairs"], res["baseline"]["tokens"],
               res["train"]["baseline"][seed]["wall_s"], vec("baseline", "f1"), vec("baseline", "contains"))]
    for path in sorted(work.glob("rows/*/recipe.json")):
        rec = json.loads(path.read_text())
        if rec.get("question_ids") != qids:
            continue  # an older recipe.json without per-question scores, or another question set
        for steps, row in rec["rows"].items():
            flags = " ".join(x for x in (rec["args"].get("template"), rec["args"].get("train_flags"),
                                         f"{steps} steps") if x and x != "None")
            tokens = res["baseline"]["tokens"] if rec["args"].get("data") == "baseline" else rec["dataset"]["teacher_tokens"]
            models.append((f"{path.parent.name} ({flags})", rec["dataset"]["pairs"], tokens, row["wall_s"], row["f1"],
                           row["contains"]))
    base = [r["base"]["f1"] for r in res["scores"]["qagen"][seed]["rows"]]

    def iv(a: list[float], b: list[float]) -> str:
        d = paired_bootstrap(a, b)
        return f"{100 * d.mean:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"

    extra = next((m[4] for m in models if m[0].split(" (")[0] == against), None) if against else None
    lines = [f"{len(qids)} held-out questions, closed book; base model F1 {100 * sum(base) / len(base):.1f}", "",
             "| row | pairs | teacher tokens | train wall s | F1 | contains | F1 minus qagen row | F1 minus baseline |"
             + (f" F1 minus {against} |" if extra else ""), "|---|---|---|---|---|---|---|---|" + ("---|" if extra else "")]
    for name, pairs, tokens, wall, f1, contains in models:
        lines.append(f"| {name} | {pairs} | {tokens:,} | {wall} | {100 * sum(f1) / len(f1):.1f} | "
                     f"{100 * sum(contains) / len(contains):.1f} | {iv(f1, ref['qagen'])} | {iv(f1, ref['baseline'])} |"
                     + (f" {iv(f1, extra)} |" if extra else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
