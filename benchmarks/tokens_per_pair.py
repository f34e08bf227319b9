"""Tokens per exported pair, by perspective, from a finished run's state database (read-only).

    python benchmarks/tokens_per_pair.py OUT/qagen.sqlite [--run RUN_ID]

Per generating perspective: calls, prompt and completion tokens (as the
server reported them), pairs of that perspective in the exported dataset
(the run's ``exported`` verdicts, or its run pairs for runs without verdicts)
and tokens per exported pair. The other roles (critic, regenerator, judge)
are charged per exported pair overall.

Two savings are derived from the same rows:
- several pairs per call: one call per pair would pay each call's prompt once
  per pair it produced; the figure is the prompt tokens that avoids;
- prefix-first layout: for each chunk, the suite's requests share a prefix
  (system text + chunk) and differ only in the instruction at the end. With a
  prefix cache only the first request per chunk pays that prefix's prefill.
  The share is measured in characters of the stored requests and applied to
  the reported prompt tokens, so it is an estimate of the prefill saved, not
  a cache-hit counter.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from collections import defaultdict


def common_prefix(texts: list[str]) -> int:
    return len(os.path.commonprefix(texts)) if len(texts) > 1 else 0


def report(db: sqlite3.Connection, run_id: int) -> dict[str, object]:
    has_verdicts = db.execute("SELECT count(*) FROM sqlite_master WHERE name='verdicts'").fetchone()[0] and db.execute(
        "SELECT count(*) FROM verdicts WHERE run_id=?", (run_id,)).fetchone()[0]
    if has_verdicts:
        exported_sql = ("SELECT p.perspective, p.request_key FROM verdicts v JOIN pairs p ON p.pair_id=v.pair_id "
                        "WHERE v.run_id=? AND v.verdict='exported'")
    else:
        exported_sql = "SELECT p.perspective, p.request_key FROM run_pairs r JOIN pairs p USING(pair_id) WHERE r.run_id=?"
    exported: dict[str, int] = defaultdict(int)
    pairs_per_request: dict[str, int] = defaultdict(int)
    for perspective, key in db.execute(exported_sql, (run_id,)):
        exported[perspective] += 1
        pairs_per_request[key] += 1
    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    roles: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_chunk: dict[str, list[tuple[str, int]]] = defaultdict(list)  # user text before "Task:" -> (full text, tokens)
    saved_by_batching = 0.0
    for key, role, prompt_id, request, ptok, ctok in db.execute(
        "SELECT key, role, prompt_id, request, prompt_tokens, completion_tokens FROM requests"
    ):
        if role != "generator":
            roles[role]["calls"] += 1
            roles[role]["prompt_tokens"] += ptok
            roles[role]["completion_tokens"] += ctok
            continue
        row = per[prompt_id]
        row["calls"] += 1
        row["prompt_tokens"] += ptok
        row["completion_tokens"] += ctok
        saved_by_batching += ptok * max(0, pairs_per_request.get(key, 0) - 1)
        text = "\n".join(content for _, content in json.loads(request)["messages"])
        by_chunk[text.split("Task:")[0]].append((text, ptok))
    prefix_tokens = total_generator_prompt = 0.0
    for group in by_chunk.values():
        texts = [t for t, _ in group]
        shared = common_prefix(texts)
        for text, ptok in group:
            total_generator_prompt += ptok
            prefix_tokens += ptok * shared / max(1, len(text))
        # the first request of the group pays its prefix; the others hit the cache
        if group:
            first_text, first_ptok = group[0]
            prefix_tokens -= first_ptok * shared / max(1, len(first_text))
    rows = {}
    for prompt_id, row in sorted(per.items()):
        pairs = exported.get(prompt_id, 0)
        tokens = row["prompt_tokens"] + row["completion_tokens"]
        rows[prompt_id] = {"calls": int(row["calls"]), "prompt_tokens": int(row["prompt_tokens"]),
                           "completion_tokens": int(row["completion_tokens"]), "exported_pairs": pairs,
                           "tokens_per_pair": round(tokens / pairs, 1) if pairs else None}
    total_pairs = sum(exported.values())
    other = {role: {k: int(v) for k, v in r.items()} for role, r in roles.items()}
    other_tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in roles.values())
    gen_tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in per.values())
    return {
        "run_id": run_id, "exported_pairs": total_pairs, "by_perspective": rows, "other_roles": other,
        "generation_tokens_per_pair": round(gen_tokens / total_pairs, 1) if total_pairs else None,
        "all_tokens_per_pair": round((gen_tokens + other_tokens) / total_pairs, 1) if total_pairs else None,
        "prompt_tokens_saved_by_several_pairs_per_call": int(saved_by_batching),
        "generator_prompt_tokens": int(total_generator_prompt),
        "prefill_tokens_a_prefix_cache_can_skip": int(prefix_tokens),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db")
    parser.add_argument("--run", type=int)
    args = parser.parse_args()
    db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    run_id = args.run or db.execute("SELECT max(run_id) FROM runs WHERE command='ingest'").fetchone()[0]
    print(json.dumps(report(db, run_id), indent=2))


if __name__ == "__main__":
    main()
