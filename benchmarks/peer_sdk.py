"""Peer comparison: synthetic-data-kit vs qagen on the same corpus, against the same llama.cpp server.

One embedded llama.cpp server (SmolLM2-135M-Instruct Q4_1, ``--threads``
threads, ``--slots`` slots of 2,048 tokens) serves every phase, behind
``benchmarks/usage_proxy.py``, which logs each reply's ``usage``; both tools
talk to the proxy, so their requests and tokens are counted by the same code.

Phases, in this order:

1. ``synthetic-data-kit ingest DOCS`` as the issue asks (its directory ingest
   is not recursive and has no ``.md`` parser: what it did is recorded);
2. the workaround: DOCS flattened into one folder, ``.md`` copied as ``.txt``
   (its TXT parser reads it as is), then ``ingest`` of that folder;
3. ``synthetic-data-kit create PARSED --type qa`` (api-endpoint provider, its
   default generation settings: 25 pairs per document, temperature 0.7,
   max_tokens 4,096, no JSON schema);
4. ``qagen ingest DOCS --no-refine --no-judge`` (generation only);
5. ``qagen ingest DOCS --max-rounds 1`` (the loop as ``qagen ingest`` runs it
   on the embedded model: refine 1 round, judge, grounding, dedup), unless
   ``--skip-full``.

synthetic-data-kit is run from its own virtual environment (``--sdk``, default
``/tmp/sdk-venv/bin/synthetic-data-kit``): install it there, never into
qagen's::

    python3 -m venv /tmp/sdk-venv && /tmp/sdk-venv/bin/pip install synthetic-data-kit==0.0.5
    python benchmarks/peer_sdk.py --docs samples/docs --work /tmp/peer

Writes ``WORK/peer.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qagen.llm.embedded import MODEL_NAME, EmbeddedServer, ServerConfig, find_model


def usage_since(log: Path, line: int, replies: bool = False) -> tuple[dict[str, object], int]:
    """Requests and tokens the proxy logged after line ``line``; returns the new line count."""
    rows = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    new = rows[line:]
    finish: dict[str, int] = {}
    for r in new:
        finish[str(r["finish_reason"])] = finish.get(str(r["finish_reason"]), 0) + 1
    out: dict[str, object] = {
        "requests": len(new),
        "http_errors": sum(1 for r in new if r["status"] >= 400),
        "prompt_tokens": sum(r["prompt_tokens"] for r in new),
        "completion_tokens": sum(r["completion_tokens"] for r in new),
        "finish_reasons": finish,
        "server_busy_s": round(sum(r["end"] - r["start"] for r in new), 1),
    }
    if replies:  # what each reply began with: what the tool's parser was given
        out["replies"] = [{"completion_tokens": r["completion_tokens"], "finish_reason": r["finish_reason"],
                           "head": r.get("content_head", "")} for r in new]
    return out, len(rows)


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, object]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return {"cmd": " ".join(cmd), "rc": proc.returncode, "wall_s": round(time.perf_counter() - started, 1),
            "stdout": proc.stdout, "stderr": proc.stderr}


def sdk_config(sdk: str, work: Path, base_url: str) -> Path:
    """synthetic-data-kit's own default config.yaml with the api-endpoint provider pointed at base_url."""
    python = str(Path(sdk).parent / "python")
    package = subprocess.run([python, "-c", "import synthetic_data_kit, os; print(os.path.dirname(synthetic_data_kit.__file__))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    config = yaml.safe_load(Path(package, "config.yaml").read_text())
    config["llm"]["provider"] = "api-endpoint"
    config["api-endpoint"].update({"api_base": base_url, "api_key": "not-needed", "model": MODEL_NAME})
    for stage in ("parsed", "generated", "curated", "final"):
        config["paths"]["output"][stage] = str(work / "sdk" / stage)
    path = work / "sdk-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def count_sdk_pairs(generated: Path) -> dict[str, object]:
    files = sorted(generated.glob("*_qa_pairs.json"))
    returned = usable = 0
    per_file: dict[str, dict[str, int]] = {}
    examples: list[object] = []
    for f in files:
        pairs = json.loads(f.read_text()).get("qa_pairs") or []
        ok = [p for p in pairs if isinstance(p, dict) and str(p.get("question") or "").strip()
              and str(p.get("answer") or "").strip()]
        returned += len(pairs)
        usable += len(ok)
        per_file[f.name] = {"returned": len(pairs), "usable": len(ok)}
        examples.extend(ok[:2])
    return {"files": len(files), "pairs_returned": returned, "pairs_usable": usable, "per_file": per_file,
            "examples": examples[:4]}


def qagen_phase(docs: Path, out: Path, base_url: str, extra: list[str], log: Path, line: int) -> tuple[dict[str, object], int]:
    cmd = [str(Path(sys.executable).parent / "qagen"), "ingest", str(docs), "--out", str(out), "--base-url", base_url,
           "--model", MODEL_NAME, "--json", *extra]
    result = run(cmd, ROOT)
    usage, line = usage_since(log, line)
    try:
        summary = json.loads(result["stdout"])  # type: ignore[arg-type]
    except ValueError:
        summary = {}
    keep = ("status", "documents_read", "chunks", "requests_sent", "corrective_retries", "invalid_replies",
            "length_cutoffs", "prompt_tokens", "completion_tokens", "pairs_generated", "pairs_total", "train_pairs",
            "eval_pairs", "verdicts", "exported_per_perspective")
    return {"cmd": result["cmd"], "rc": result["rc"], "wall_s": result["wall_s"], "proxy": usage,
            "summary": {k: summary.get(k) for k in keep}, "stderr_tail": str(result["stderr"])[-1500:]}, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=Path, default=ROOT / "samples" / "docs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/peer"))
    parser.add_argument("--sdk", default="/tmp/sdk-venv/bin/synthetic-data-kit")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-full", action="store_true", help="skip qagen's full loop (refine + judge)")
    args = parser.parse_args()
    docs = args.docs.resolve()
    work = args.work.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = work / "usage.jsonl"

    server = EmbeddedServer(ServerConfig(str(find_model()), args.threads, args.slots, 2048))
    root = server.start().removesuffix("/v1")
    proxy = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "usage_proxy.py"), "--upstream", root,
                              "--log", str(log)], stdout=subprocess.PIPE, text=True)
    assert proxy.stdout is not None
    base_url = proxy.stdout.readline().strip() + "/v1"
    result: dict[str, object] = {"server": {"model": MODEL_NAME, "slots": args.slots, "threads": args.threads,
                                            "ctx_per_slot": 2048, "base_url": base_url},
                                 "load_before": os.getloadavg()}
    line = 0
    try:
        config = sdk_config(args.sdk, work, base_url)
        sdk_env = {**os.environ, "API_ENDPOINT_KEY": "not-needed"}
        sdk_dir = work / "sdk"
        sdk_dir.mkdir()
        # 1. as the issue asks: ingest the corpus folder
        as_is = run([args.sdk, "-c", str(config), "ingest", str(docs), "-o", str(sdk_dir / "parsed-as-is")], sdk_dir, sdk_env)
        produced = sorted(p.name for p in (sdk_dir / "parsed-as-is").glob("*")) if (sdk_dir / "parsed-as-is").exists() else []
        result["sdk_ingest_as_is"] = {"cmd": as_is["cmd"], "rc": as_is["rc"], "files_produced": produced,
                                      "output_tail": str(as_is["stdout"])[-800:] + str(as_is["stderr"])[-800:]}
        # 2. workaround: flatten, .md -> .txt
        flat = work / "flat"
        flat.mkdir()
        for f in sorted(docs.rglob("*")):
            if f.is_file():
                shutil.copy(f, flat / (f.stem + ".txt" if f.suffix.lower() in (".md", ".markdown", ".rst") else f.name))
        ingest = run([args.sdk, "-c", str(config), "ingest", str(flat), "-o", str(sdk_dir / "parsed")], sdk_dir, sdk_env)
        parsed = sorted((sdk_dir / "parsed").glob("*.txt"))
        result["sdk_ingest"] = {"cmd": ingest["cmd"], "rc": ingest["rc"], "wall_s": ingest["wall_s"],
                                "files": {p.name: p.stat().st_size for p in parsed}}
        # 3. create --type qa
        create = run([args.sdk, "-c", str(config), "create", str(sdk_dir / "parsed"), "--type", "qa",
                      "-o", str(sdk_dir / "generated"), "--verbose"], sdk_dir, sdk_env)
        usage, line = usage_since(log, line, replies=True)
        result["sdk_create"] = {"cmd": create["cmd"], "rc": create["rc"], "wall_s": create["wall_s"], "proxy": usage,
                                **count_sdk_pairs(sdk_dir / "generated"),
                                "output_tail": str(create["stdout"])[-3000:] + str(create["stderr"])[-1500:]}
        print(json.dumps({k: v for k, v in result["sdk_create"].items() if k != "output_tail"}), file=sys.stderr, flush=True)  # type: ignore[union-attr]
        (work / "peer.json").write_text(json.dumps(result, indent=2))  # so far: a killed run keeps its phases
        # 4-5. qagen
        result["qagen_generation"], line = qagen_phase(docs, work / "qagen-gen", base_url, ["--no-refine", "--no-judge"],
                                                        log, line)
        print(json.dumps(result["qagen_generation"]), file=sys.stderr, flush=True)
        (work / "peer.json").write_text(json.dumps(result, indent=2))
        if not args.skip_full:
            full = ["--refine", "full", "--judge", "--max-rounds", "1"]  # the loop is opt-in since 0.4.0
            result["qagen_full"], line = qagen_phase(docs, work / "qagen-full", base_url, full, log, line)
            print(json.dumps(result["qagen_full"]), file=sys.stderr, flush=True)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        server.stop()
    result["load_after"] = os.getloadavg()
    (work / "peer.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
