"""Tabulate the knowledge benchmark's ablation rows (issue 16) against its two datasets, paired per question.

    python benchmarks/ablation.py --work benchmarks/.cache/kb-gen [--seeds 1 2] [--against filters]

Reads WORK/results.json (``benchmarks/knowledge.py``: qagen's data and the single-prompt baseline, same student,
same steps) and every WORK/rows/NAME/recipe*.json (``benchmarks/recipe.py --row NAME [--seed S]``), and prints one
markdown row per trained model: pairs, teacher tokens, train wall time, closed-book F1 and contains, and the
paired-bootstrap 95 % intervals of its F1 minus knowledge.py's qagen row and minus its baseline row.

With several ``--seeds``, a row is shown only where it was trained with every one of them. Its F1 is then the mean
over the seeds (each seed's F1 is shown too), and the intervals pair questions on the seed-averaged scores: they
cover the question sample; the per-seed columns show what the seed alone moves. A row folder NAME-s2 counts as
NAME (``--row baseline-s2 --data baseline --seed 2`` is the baseline's second seed).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seeds", nargs="+", default=["1"], help="training seeds every row must have")
    ap.add_argument("--against", help="one more column: F1 minus this row's (a --row name)")
    args = ap.parse_args()
    print(table(args.work, [str(s) for s in args.seeds], args.against))


def _models(work: Path, res: dict, qids: list[str]) -> dict[str, dict[str, object]]:
    """Every trained model by row label: pairs, tokens, and per seed its wall time and per-question scores."""
    models: dict[str, dict[str, object]] = {}

    def add(name: str, pairs: int, tokens: int, seed: str, wall: float, f1: list[float], contains: list[float]) -> None:
        m = models.setdefault(name, {"pairs": pairs, "tokens": tokens, "seeds": {}})
        m["seeds"][seed] = {"wall": wall, "f1": f1, "contains": contains}  # type: ignore[index]

    template = res["args"].get("template", "")
    for data in ("qagen", "baseline"):
        for seed, sc in res["scores"][data].items():
            add(f"{data} ({template} {res['args'].get('steps')} steps)", res[data]["pairs"], res[data]["tokens"],
                seed, res["train"][data][seed]["wall_s"], [r["tuned"]["f1"] for r in sc["rows"]],
                [r["tuned"]["contains"] for r in sc["rows"]])
    for path in sorted(work.glob("rows/*/recipe*.json")):
        rec = json.loads(path.read_text())
        if rec.get("question_ids") != qids:
            continue  # an older recipe.json without per-question scores, or another question set
        a = rec["args"]
        name = re.sub(r"-s\d+$", "", path.parent.name)
        tokens = res["baseline"]["tokens"] if a.get("data") == "baseline" else rec["dataset"]["teacher_tokens"]
        for steps, row in rec["rows"].items():
            parts = (a.get("template"), a.get("train_flags"), f"{steps} steps")
            flags = " ".join(x for x in parts if x and x != "None")
            add(f"{name} ({flags})", rec["dataset"]["pairs"], tokens, str(a.get("seed", "1")), row["wall_s"],
                row["f1"], row["contains"])
    return models


def table(work: Path, seeds: list[str], against: str | None = None) -> str:
    from qagen.evaluation.scoring import paired_bootstrap

    res = json.loads((work / "results.json").read_text())
    first = res["scores"]["qagen"][next(iter(res["scores"]["qagen"]))]["rows"]
    qids = [r["qid"] for r in first]
    models = {name: m for name, m in _models(work, res, qids).items() if all(s in m["seeds"] for s in seeds)}

    def mean_over_seeds(m: dict, metric: str) -> list[float]:
        per = [m["seeds"][s][metric] for s in seeds]
        return [sum(xs) / len(xs) for xs in zip(*per, strict=True)]

    def pick(prefix: str) -> list[float] | None:
        return next((mean_over_seeds(m, "f1") for n, m in models.items() if n.split(" (")[0] == prefix), None)

    def iv(a: list[float], b: list[float] | None) -> str:
        if b is None:
            return "n/a"
        d = paired_bootstrap(a, b)
        return f"{100 * d.mean:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"

    def pct(xs: list[float]) -> str:
        return f"{100 * sum(xs) / len(xs):.1f}"

    refs = {"qagen": pick("qagen"), "baseline": pick("baseline")}
    extra = pick(against) if against else None
    several = len(seeds) > 1
    base = [r["base"]["f1"] for r in first]
    head = ["row", "pairs", "teacher tokens", "train wall s"] + (
        [f"F1 seed {s}" for s in seeds] if several else []) + [
        "F1" + (" (mean)" if several else ""), "contains", "F1 minus qagen row", "F1 minus baseline"] + (
        [f"F1 minus {against}"] if extra else [])
    lines = [f"{len(qids)} held-out questions, closed book; base model F1 {pct(base)}; seeds {', '.join(seeds)}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in models.items():
        f1 = mean_over_seeds(m, "f1")
        walls = "/".join(str(m["seeds"][s]["wall"]) for s in seeds)
        cells = [name, str(m["pairs"]), f"{m['tokens']:,}", walls]
        cells += [pct(m["seeds"][s]["f1"]) for s in seeds] if several else []
        cells += [pct(f1), pct(mean_over_seeds(m, "contains")), iv(f1, refs["qagen"]), iv(f1, refs["baseline"])]
        cells += [iv(f1, extra)] if extra else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
