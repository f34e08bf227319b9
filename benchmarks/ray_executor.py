"""The Ray Data executor against the local one: same corpus, same instant stub, same dataset?

    python benchmarks/ray_executor.py --docs 300 --workers 2

Runs ``qagen ingest`` through the real CLI twice on one corpus, each into a
fresh output folder: ``--executor local`` and ``--executor ray`` (a local Ray
instance started by qagen itself). Generation only (``--no-refine --no-judge
--ungrounded flag``), ``--transport aiohttp``. Reports wall time, requests/s
and whether train.jsonl/eval.jsonl are byte-identical. On one 2-core box this
measures Ray's overhead, not its scaling: the point of the executor is more
machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from overhead import instant_stub, write_corpus  # sibling benchmark module

FLAGS = ["--model", "stub-model", "--no-refine", "--no-judge", "--ungrounded", "flag", "--no-report",
         "--transport", "aiohttp", "--concurrency", "64", "--json"]


def run(docs: Path, out: Path, url: str, *extra: str) -> tuple[dict[str, object], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_") and k != "RAY_ADDRESS"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "qagen.cli", "ingest", str(docs), "--out", str(out),
                           "--base-url", url, *FLAGS, *extra], capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"ingest failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, instant_stub() as url:
        docs = Path(tmp) / "docs"
        write_corpus(docs, args.docs)
        outputs = {}
        for name, extra in (("local", []), ("ray", ["--executor", "ray", "--workers", str(args.workers)])):
            out = Path(tmp) / name
            summary, wall = run(docs, out, url, *extra)
            outputs[name] = [(out / f).read_bytes() for f in ("train.jsonl", "eval.jsonl")]
            rows.append({"executor": name, "wall_s": round(wall, 1), "sent": summary["requests_sent"],
                         "req_per_s": round(int(summary["requests_sent"]) / wall, 1),
                         "pairs": summary["pairs_total"]})
            print(rows[-1], file=sys.stderr, flush=True)
        identical = outputs["local"] == outputs["ray"]
    print(json.dumps({"docs": args.docs, "workers": args.workers, "rows": rows, "identical_dataset": identical,
                      "load_average_after": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
