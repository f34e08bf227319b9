"""Benchmark (issue 27): what the repair loop does to the same drafts, and what it costs.

    python benchmarks/repair.py --teacher bench --work benchmarks/.cache/repair \
        [--suite ledger-questions] [--ingest-flags "--facts-k 2"] [--critic PATH.gguf] [--cache DIR/qagen.sqlite]

With the real CLI, on benchmarks/heldout's documents (or --corpus), each step in its own folder that starts from a
copy of the generation-only folder's state database, so the drafts come from the cache and every step repairs the
same drafts:
1. ``gen``: generation only (``--refine off``);
2. ``repair``: ``--refine repair``: pairs that fail a check are rewritten with the evidence; a rewrite is kept
   only if it passes every check;
3. ``full``: ``--refine full``: the model critic also reviews the pairs that pass the checks (switched off if it
   flags over 90 % of its first 50).
``--critic PATH.gguf`` serves a second model for the critic and the regenerator (e.g. the 1.5B bench teacher).
``--cache DB`` seeds the generation-only folder with an earlier run's state database (its drafts, so no teacher
tokens are spent drafting again). Prints markdown for benchmarks/RESULTS.md and writes WORK/repair.json.

No training here: exported pairs, what the loop flagged, tried, accepted and rejected, and the teacher tokens of
each step. Closed-book F1 of a step's dataset: ``benchmarks/knowledge.py --ingest-flags "--refine repair"``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import knowledge  # noqa: E402  (cli, serve_teacher, copied_corpus, the held-out corpus)

STEPS = {"gen": ("--refine", "off"), "repair": ("--refine", "repair"), "full": ("--refine", "full")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="bench", help="embedded, bench, or a .gguf path (served by xllamacpp)")
    ap.add_argument("--teacher-url", help="an OpenAI-compatible endpoint instead")
    ap.add_argument("--teacher-model", default="")
    ap.add_argument("--critic", help="a .gguf served as the critic and the regenerator (default: the teacher)")
    ap.add_argument("--suite", default="ledger-questions")
    ap.add_argument("--ingest-flags", default="", help="extra qagen ingest flags for every step")
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    ap.add_argument("--cache", type=Path, help="an earlier run's qagen.sqlite to start generation from")
    ap.add_argument("--corpus", type=Path, default=knowledge.HELDOUT / "docs")
    ap.add_argument("--questions", type=Path, default=knowledge.HELDOUT / "questions.jsonl")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=knowledge.ROOT / "benchmarks/.cache/repair")
    args = ap.parse_args()
    args.teacher_url = args.teacher_url or None

    work: Path = args.work
    docs = work / "docs"
    knowledge.copied_corpus(args.corpus, args.questions, docs)
    gen = work / "gen"
    if args.cache and not (gen / "qagen.sqlite").exists():
        gen.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.cache, gen / "qagen.sqlite")
    server, base_url, model = knowledge.serve_teacher(args)
    critic_server = None
    role_flags: list[str] = []
    if args.critic:
        from qagen.llm.embedded import EmbeddedServer, ServerConfig

        critic_server = EmbeddedServer(ServerConfig(args.critic, args.threads, args.slots, 2048))
        url, name = critic_server.start(), Path(args.critic).stem
        role_flags = ["--critic-base-url", url, "--critic-model", name,
                      "--regenerator-base-url", url, "--regenerator-model", name]
    results: dict[str, dict[str, object]] = {}
    try:
        for step in args.steps:
            out = work / step
            if step != "gen" and not out.exists():
                out.mkdir(parents=True)
                shutil.copy(gen / "qagen.sqlite", out / "qagen.sqlite")  # the same drafts, from the cache
            started = time.perf_counter()
            summary = knowledge.cli("ingest", str(docs), "--out", str(out), "--base-url", base_url, "--model", model,
                                    "--suite", args.suite, "--eval-fraction", "0", "--no-report", "--no-exam",
                                    *STEPS[step], *(role_flags if step != "gen" else []), *args.ingest_flags.split())
            results[step] = {"wall_s": round(time.perf_counter() - started, 1), **summary}
    finally:
        for s in (server, critic_server):
            if s is not None:
                s.stop()  # type: ignore[attr-defined]
    out = {"teacher": model, "critic": Path(args.critic).stem if args.critic else model, "suite": args.suite,
           "ingest_flags": args.ingest_flags, "steps": results}
    (work / "repair.json").write_text(json.dumps(out, indent=1, default=str))
    print(markdown(out))


def markdown(out: dict[str, object]) -> str:
    steps: dict[str, dict[str, object]] = out["steps"]  # type: ignore[assignment]
    gen = steps.get("gen", {})
    gen_tokens = int(gen.get("teacher_tokens") or 0)
    gen_pairs = int(gen.get("pairs_total") or 0)
    lines = [f"teacher: {out['teacher']}; critic and regenerator: {out['critic']}; suite {out['suite']} "
             f"{out['ingest_flags']}".rstrip(), "",
             "| step | exported pairs | vs gen | teacher tokens (all) | vs gen | loop tokens | flagged (by check) | "
             "repairs tried / accepted / rejected (failed checks) | rounds (histogram) | critic reviews / flags | critic off | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for step, s in steps.items():
        r = s.get("refine") or {}
        pairs, tokens = int(s.get("pairs_total") or 0), int(s.get("teacher_tokens") or 0)
        loop = r.get("loop_tokens", "")
        tried, accepted = int(r.get("tried") or 0), int(r.get("accepted") or 0)
        rejected = ", ".join(f"{k} {v}" for k, v in sorted((r.get("rejected") or {}).items(), key=lambda kv: -kv[1]))
        flagged = ", ".join(f"{k} {v}" for k, v in sorted((r.get("flagged") or {}).items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| {step} | {pairs} | {pairs / gen_pairs if gen_pairs else float('nan'):.2f}x | {tokens:,} | "
            f"{tokens / gen_tokens if gen_tokens else float('nan'):.2f}x | {loop} | {flagged} | "
            f"{tried} / {accepted} / {tried - accepted} ({rejected}) | {r.get('rounds', '')} | "
            f"{r.get('critic_reviews', '')} / {r.get('critic_flags', '')} | {r.get('critic_off', '') or ''} | "
            f"{s['wall_s']} |")
    per = {step: s.get("exported_per_perspective") or {} for step, s in steps.items()}
    names = sorted({p for d in per.values() for p in d})
    lines += ["", "| perspective | " + " | ".join(per) + " |", "|---|" + "---|" * len(per)]
    lines += [f"| {p} | " + " | ".join(str(per[s].get(p, 0)) for s in per) + " |" for p in names]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
