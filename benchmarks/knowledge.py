"""Benchmark: does qagen's data teach a model the documents better than the obvious single-prompt data?

    python benchmarks/knowledge.py --teacher embedded --steps 60 --seeds 1 2    # benchmarks/heldout (committed)
    python benchmarks/knowledge.py --teacher bench ...          # Qwen2.5-Coder-0.5B (../shared/bench-teacher)
    python benchmarks/knowledge.py --squad PATH --articles 4 --paragraphs 3 ...   # SQuAD v1.1 dev, where you have it
    python benchmarks/knowledge.py --corpus DOCS --questions FILE ...            # your own documents and questions
    python benchmarks/knowledge.py --smoke                      # CI: a stub teacher, 1 article, 2 questions
    # on a GPU (not run here): a 7B teacher behind `vllm serve`, a 7B student
    python benchmarks/knowledge.py --teacher-url http://127.0.0.1:8000/v1 --teacher-model mistral-7b-instruct \
        --student /models/Mistral-7B-Instruct-v0.3 --template mistral-7b-lora --steps 300

Closed book, at a matched generation budget (the field's yardstick: YourBench, EntiGraph):
1. **Corpus**: by default ``benchmarks/heldout``: five State of the Union excerpts and four pages of technical
   documentation (Python, PostgreSQL, git), and their
   held-out questions, short verbatim-span answers in SQuAD's style (its README says how they were written).
   ``--squad PATH``: the first N articles of the SQuAD v1.1 dev set, the first P paragraphs of each, one
   markdown document per article, their human questions held out (sessions 5-8 used it; the PyPI sdist
   bigbench==1.0.0 that held it is no longer served, and its canary forbids committing it). ``--corpus DIR
   --questions FILE``: any documents and a question file ``qagen eval --questions`` reads. Generation never sees
   the questions.
2. **Datasets** from the same teacher: (a) ``qagen ingest`` with its defaults; (b) the single-prompt
   baseline peers and the LlamaIndex recipe use: one "set up 3 questions for an upcoming quiz" JSON call
   per chunk, sampled again with new seeds until it has spent as many teacher tokens as (a).
   Both get the same system message per document (qagen's export format), so only the pairs differ.
3. **Training**: the same student, the same axolotl recipe and the same number of optimizer steps for each
   dataset (``qagen train --max-steps``), once per training seed.
4. **Scoring**: closed-book answers of the base and each tuned model to the held-out questions: EM, F1 and
   contains, with paired-bootstrap 95 % intervals on (a) - (b) and (a) - base.
Prints the markdown for benchmarks/RESULTS.md and writes WORK/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "benchmarks/heldout"
FETCH = "pip download --no-deps --no-binary :all: bigbench==1.0.0 -d benchmarks/.cache/bigbench && " \
        "tar xzf benchmarks/.cache/bigbench/bigbench-1.0.0.tar.gz -C benchmarks/.cache/bigbench  " \
        "(on 2026-12-07 PyPI served only bigbench 0.0.1, which lacks it)"
TEACHER = ROOT.parent / "shared/bench-teacher/fetch_teacher.py"
# The LlamaIndex "generate_question_context_pairs" instruction, asked for JSON so it is parsed like qagen's.
BASELINE = ("Context information is below.\n\n---------------------\n{context}\n---------------------\n\n"
            "Given the context information and not prior knowledge, generate only questions based on the below "
            "query.\n\nYou are a Teacher/Professor. Your task is to setup {n} questions for an upcoming quiz/"
            "examination. The questions should be diverse in nature across the document. Restrict the questions "
            "to the context information provided. Answer each question from the context. Reply with JSON: "
            '{{"pairs": [{{"question": ..., "answer": ...}}]}}')


def squad_corpus(path: Path, articles: int, paragraphs: int, docs: Path) -> list[dict[str, object]]:
    """Write one markdown document per article; return its held-out questions (JSONL rows)."""
    if not path.exists():
        sys.exit(f"SQuAD dev set not found at {path}; fetch it (ignored cache, never committed):\n  {FETCH}")
    data = json.loads(path.read_text())["data"][:articles]
    docs.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for art in data:
        title = art["title"].replace("_", " ")
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") + ".md"
        paras = art["paragraphs"][:paragraphs]
        (docs / slug).write_text(f"# {title}\n\n" + "\n\n".join(p["context"] for p in paras) + "\n")
        for p in paras:
            for qa in p["qas"]:
                answers = list(dict.fromkeys(a["text"].strip() for a in qa["answers"]))
                rows.append({"id": qa["id"], "question": qa["question"], "answers": answers, "source": slug})
    return rows


def copied_corpus(corpus: Path, questions: Path, docs: Path) -> list[dict[str, object]]:
    """Copy the corpus's documents into WORK/docs (generation reads only those); return the question rows."""
    from qagen.corpus.questions import load_questions

    if not corpus.is_dir() or not questions.is_file():
        sys.exit(f"corpus folder {corpus} or question file {questions} not found")
    if docs.exists():
        shutil.rmtree(docs)
    shutil.copytree(corpus, docs)
    return [{"id": q.qid, "question": q.question, "answers": list(q.answers), "source": q.source,
             **({"doc_id": q.doc_id} if q.doc_id else {}), **({"kind": q.kind} if q.kind else {})}
            for q in load_questions(questions)]  # JSONL, CSV or SQuAD JSON; a bad file is an error naming its line


def cli(*args: str, timeout: float = 7200) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    proc = subprocess.run([sys.executable, "-m", "qagen.cli", *args, "--json"], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode not in (0, 1) or not lines:
        sys.exit(f"qagen {args[0]} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if result.get("status") == "failed":
        sys.exit(f"qagen {args[0]} failed: {result.get('error')}\n{proc.stderr[-2000:]}")
    return result


def tokens_in(out: Path) -> int:
    with sqlite3.connect(out / "qagen.sqlite") as db:
        return int(db.execute("SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM requests").fetchone()[0])


async def _baseline_round(client: object, model: str, chunks: list[tuple[object, object]], seed: int, n: int,
                          slots: int, temperature: float) -> tuple[list[tuple[object, object, str, str]], int]:
    gate = asyncio.Semaphore(slots)
    schema = {"type": "object", "properties": {"pairs": {"type": "array", "maxItems": n, "items": {
        "type": "object", "properties": {"question": {"type": "string", "maxLength": 200},
                                         "answer": {"type": "string", "maxLength": 300}},
        "required": ["question", "answer"]}}}, "required": ["pairs"]}

    async def one(doc: object, chunk: object) -> tuple[list[tuple[object, object, str, str]], int]:
        async with gate:
            reply = await client.chat.completions.create(  # type: ignore[attr-defined]
                model=model, messages=[{"role": "user", "content": BASELINE.format(context=chunk.text, n=n)}],
                temperature=temperature, seed=seed, max_tokens=600,
                response_format={"type": "json_schema", "json_schema": {"name": "quiz", "schema": schema}})
        used = (reply.usage.prompt_tokens + reply.usage.completion_tokens) if reply.usage else 0
        try:
            pairs = json.loads(reply.choices[0].message.content or "{}").get("pairs", [])
        except json.JSONDecodeError:
            return [], used
        return [(doc, chunk, str(p.get("question", "")).strip(), str(p.get("answer", "")).strip())
                for p in pairs if isinstance(p, dict)], used

    results = await asyncio.gather(*(one(d, c) for d, c in chunks))
    return [p for pairs, _ in results for p in pairs], sum(t for _, t in results)


def _round_seed(draw: int, round_: int) -> tuple[int, float]:
    """Draw 1 is the harness's historic sampling (round 0 greedy, then seeds 1, 2, ... at 0.7); draw D > 1 samples
    every round at 0.7 with seeds 1000 * (D - 1) + round, so two draws share no request."""
    if draw <= 1:
        return round_, (0.0 if round_ == 0 else 0.7)
    return 1000 * (draw - 1) + round_, 0.7


def _corpus_chunks(docs: Path, base_url: str, model: str) -> tuple[list[tuple[object, object]], str]:
    from qagen.config import load_settings
    from qagen.core import ids
    from qagen.corpus.chunker import Chunker
    from qagen.corpus.reader import iter_documents
    from qagen.pipeline.assemble import chunker_settings

    chunker = Chunker(chunker_settings(load_settings(base_url=base_url, model=model)))
    documents = [d for d in iter_documents(docs) if hasattr(d, "doc_id")]
    return [(d, c) for d in documents for c in chunker.chunk(d)], ids.group_id([d.doc_id for d in documents])


def baseline_pool(docs: Path, pool: Path, base_url: str, model: str, budget: int, slots: int, draw: int = 1,
                  max_rounds: int = 40) -> list[dict[str, object]]:
    """The single-prompt baseline's rounds for one generation draw, cached in ``pool`` (JSONL, one round a line:
    seed, tokens, pairs). Rounds are sampled until the pool's tokens reach ``budget``; a later, larger budget
    samples only the rounds it lacks, so every row of a draw shares the same rounds in the same order."""
    from openai import AsyncOpenAI

    rounds = [json.loads(line) for line in pool.read_text().splitlines()] if pool.exists() else []
    chunks, _group = _corpus_chunks(docs, base_url, model)
    by_chunk = {c.chunk_id: (d, c) for d, c in chunks}

    async def sample() -> None:
        client = AsyncOpenAI(base_url=base_url, api_key="not-needed", timeout=600)
        try:
            while len(rounds) < max_rounds and (not rounds or sum(r["tokens"] for r in rounds) < budget):
                seed, temperature = _round_seed(draw, len(rounds))
                pairs, used = await _baseline_round(client, model, chunks, seed, 3, slots, temperature)
                rounds.append({"seed": seed, "tokens": used,
                               "pairs": [[c.chunk_id, q, a] for _d, c, q, a in pairs]})
                with pool.open("a") as fh:
                    fh.write(json.dumps(rounds[-1], ensure_ascii=False) + "\n")
        finally:
            await client.close()

    pool.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(sample())
    assert all(cid in by_chunk for r in rounds for cid, _q, _a in r["pairs"]), "the pool was drawn on other documents"
    return rounds


def baseline_dataset(docs: Path, out: Path, base_url: str, model: str, budget: int, slots: int,
                     max_rounds: int = 40, draw: int = 1, pool: Path | None = None) -> dict[str, object]:
    """(b): quiz pairs per chunk, sampled with new seeds until the teacher tokens reach ``budget``."""
    from qagen.output.export import system_message
    from qagen.store import Store

    pool = pool or out.parent / f"baseline-pool-d{draw}.jsonl"
    rounds = baseline_pool(docs, pool, base_url, model, budget, slots, draw, max_rounds)
    chunks, group = _corpus_chunks(docs, base_url, model)
    by_chunk = {c.chunk_id: d for d, c in chunks}
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    spent, used_rounds = 0, 0
    for r in rounds:  # the pool's rounds in order, until the budget is spent (the same rule as sampling them)
        if used_rounds and spent >= budget:
            break
        spent, used_rounds = spent + int(r["tokens"]), used_rounds + 1
        for chunk_id, q, a in r["pairs"]:
            doc = by_chunk[chunk_id]
            if q and a and q.lower() not in seen:
                seen.add(q.lower())
                rows.append({"messages": [
                    {"role": "system", "content": system_message(doc.doc_id, group, doc.title)},
                    {"role": "user", "content": q}, {"role": "assistant", "content": a}],
                    "doc_id": doc.doc_id, "perspective": "baseline_quiz", "source": doc.path})
    out.mkdir(parents=True, exist_ok=True)
    Store(out).close()  # `qagen train` trains any OUT folder with a state database and a train.jsonl
    (out / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"pairs": len(rows), "tokens": spent, "rounds": used_rounds, "draw": draw}


def serve_teacher(args: argparse.Namespace) -> tuple[object | None, str, str]:
    """(server to stop, base URL, model name) for the chosen teacher."""
    if args.teacher_url:
        return None, args.teacher_url, args.teacher_model
    from qagen.llm.embedded import MODEL_NAME, EmbeddedServer, ServerConfig, find_model

    if args.teacher == "embedded":
        path, name = str(find_model()), MODEL_NAME
    elif args.teacher == "bench":
        path = subprocess.run([sys.executable, str(TEACHER)], capture_output=True, text=True, check=True
                              ).stdout.strip().splitlines()[-1]
        name = "qwen2.5-coder-0.5b-instruct-q4_k_m"
    else:
        path, name = args.teacher, Path(args.teacher).stem
    server = EmbeddedServer(ServerConfig(path, args.threads, args.slots, 2048))
    return server, server.start(), name


def train(out: Path, args: argparse.Namespace, seed: int, mode: str) -> dict[str, object]:
    """One training run. ``steps``: exactly ``--steps`` optimizer steps (equal training compute for every dataset);
    ``recipe``: qagen's own default recipe, as a user runs it (``qagen train`` sized by recall, within its cap)."""
    flags = ["--template", args.template, "--seed", str(seed), "--threads", str(args.threads)]
    if mode == "steps":
        flags += ["--stop", "epochs", "--epochs", "100", "--max-steps", str(args.steps)]
    else:
        flags += [*args.recipe_flags.split()]
    if args.student:
        flags += ["--base-model", args.student]
    started = time.perf_counter()
    result = cli("train", str(out), *flags)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="embedded", help="embedded, bench, or a .gguf path (served by xllamacpp)")
    ap.add_argument("--teacher-url", help="an OpenAI-compatible endpoint instead (vllm serve, ...)")
    ap.add_argument("--teacher-model", default="")
    ap.add_argument("--student", help="HF folder of the student (default: the embedded SmolLM2, converted)")
    ap.add_argument("--template", default="smollm2-cpu-lora")
    ap.add_argument("--articles", type=int, default=4)
    ap.add_argument("--paragraphs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=120, help="optimizer steps of the matched-steps training")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1], help="training seeds")
    ap.add_argument("--draws", type=int, nargs="+", default=[1], help="generation draws (qagen ingest --seed D-1; "
                    "the baseline's pool of draw D)")
    ap.add_argument("--modes", nargs="+", default=["steps", "recipe"], choices=["steps", "recipe"],
                    help="steps: --steps optimizer steps for every dataset; recipe: qagen train's default recipe")
    ap.add_argument("--recipe-flags", default="", help="extra `qagen train` flags for the recipe runs")
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ingest-flags", default="", help="extra flags for (a)'s qagen ingest, e.g. '--no-refine'")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/.cache/knowledge")
    ap.add_argument("--squad", type=Path, help="the SQuAD v1.1 dev JSON: its first --articles articles instead")
    ap.add_argument("--corpus", type=Path, default=HELDOUT / "docs", help="documents (without --squad)")
    ap.add_argument("--questions", type=Path, default=HELDOUT / "questions.jsonl", help="their held-out questions")
    ap.add_argument("--smoke", action="store_true", help="CI plumbing check: a stub teacher, 1 article, 2 questions")
    args = ap.parse_args()
    results = run(args)
    print(markdown(results))


def coverage_share(rows: list[dict[str, object]], train_path: Path, paths: dict[str, str]) -> dict[str, float]:
    """The share of held-out questions whose gold answer is a training answer of the same document: ``exact`` (a
    gold answer is a train.jsonl answer, SQuAD-normalised) and ``contained`` (a gold answer occurs inside one)."""
    from qagen.evaluation.scoring import normalize_answer

    answers: dict[str, set[str]] = {}
    with train_path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if "messages" not in row:
                continue
            reply = next((m["content"] for m in row["messages"] if m["role"] == "assistant"), "")
            answers.setdefault(str(row.get("doc_id", "")), set()).add(normalize_answer(reply))
    exact = contained = 0
    for q in rows:
        have = answers.get(paths.get(str(q["source"]), ""), set())
        golds = [normalize_answer(str(a)) for a in q["answers"]]  # type: ignore[union-attr]
        exact += any(g in have for g in golds if g)
        contained += any(f" {g} " in f" {a} " for g in golds if g for a in have)
    n = max(len(rows), 1)
    return {"exact": round(exact / n, 3), "contained": round(contained / n, 3)}


def _model_pairs(train_path: Path) -> int:
    with train_path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if json.loads(line).get("perspective") not in ("cloze", "identity"))


def run(args: argparse.Namespace) -> dict[str, object]:
    from qagen.corpus.questions import load_questions
    from qagen.evaluation.answer import answer
    from qagen.evaluation.knowledge import DocRef, match_questions, score
    from qagen.evaluation.scoring import paired_bootstrap
    from qagen.store import Store

    work: Path = args.work
    docs, qfile = work / "docs", work / "questions.jsonl"
    stub = None
    if args.smoke:
        from qagen.testing import StubServer

        stub = StubServer().start()
        args.teacher_url, args.teacher_model = stub.base_url, "stub"
        rows = _smoke_corpus(docs)
    elif args.squad:
        rows = squad_corpus(args.squad, args.articles, args.paragraphs, docs)
    else:
        rows = copied_corpus(args.corpus, args.questions, docs)
    qfile.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    questions = load_questions(qfile)
    server, base_url, model = serve_teacher(args)
    draws: dict[str, dict[str, object]] = {}
    timing: dict[str, float] = {}
    try:
        for draw in args.draws:
            t = time.perf_counter()
            a_out = work / f"d{draw}" / "qagen"
            # --no-exam: the held-out questions are the benchmark's; the exam's calls would only add to (a)'s tokens,
            # and so to the baseline's budget. --eval-fraction 0: every pair trains, as the baseline's do.
            a = cli("ingest", str(docs), "--out", str(a_out), "--base-url", base_url, "--model", model,
                    "--eval-fraction", "0", "--no-report", "--no-exam", "--seed", str(draw - 1),
                    *args.ingest_flags.split())
            timing[f"generate_qagen_d{draw}_s"] = round(time.perf_counter() - t, 1)
            budget = int(a.get("teacher_tokens") or 0) or tokens_in(a_out)
            t = time.perf_counter()
            b = baseline_dataset(docs, work / f"d{draw}" / "baseline", base_url, model, budget, args.slots,
                                 draw=draw, pool=work / f"baseline-pool-d{draw}.jsonl")
            timing[f"generate_baseline_d{draw}_s"] = round(time.perf_counter() - t, 1)
            with Store(a_out) as store:
                run_id = store.latest_finished_run("ingest")
                docs_ref = [DocRef(*d) for d in store.run_documents(run_id)] if run_id else []
            paths = {d.path: d.doc_id for d in docs_ref}
            draws[str(draw)] = {
                "qagen": {"pairs": a["pairs_total"], "tokens": budget, "requests": a["requests_sent"],
                          "model_pairs": _model_pairs(a_out / "train.jsonl"), "facts": a.get("facts") or {},
                          "exported_per_perspective": a.get("exported_per_perspective") or {},
                          "coverage": coverage_share(rows, a_out / "train.jsonl", paths)},
                "baseline": {**b, "model_pairs": b["pairs"],
                             "coverage": coverage_share(rows, work / f"d{draw}" / "baseline" / "train.jsonl", paths)},
            }
            draws[str(draw)]["group_id"] = a["group_id"]
            draws[str(draw)]["docs"] = [d.__dict__ for d in docs_ref]
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
        if stub is not None:
            stub.stop()
    first = draws[str(args.draws[0])]
    docs_ref = [DocRef(**d) for d in first["docs"]]  # type: ignore[arg-type,union-attr]
    items, unmatched = match_questions(questions, docs_ref, str(first["group_id"]))
    prompts = [(it.system, it.question) for it in items]
    runs: dict[str, dict[str, dict[str, dict[str, object]]]] = {}
    base_answers: list[str] | None = None
    student = ""
    for mode in args.modes:
        for draw in args.draws:
            for seed in args.seeds:
                for name in ("qagen", "baseline"):
                    tr = train(work / f"d{draw}" / name, args, seed, mode)
                    student = student or str(tr["base_model"])
                    if base_answers is None:
                        t = time.perf_counter()
                        base_answers = answer(student, prompts, threads=args.threads)
                        timing["answer_base_s"] = round(time.perf_counter() - t, 1)
                    tuned = answer(student, prompts, tuned=str(tr["adapter_dir"]), threads=args.threads)
                    report = score(items, base_answers, tuned, questions_from=str(qfile), base_model=student,
                                   tuned=str(tr["adapter_dir"]), unmatched=unmatched)
                    runs.setdefault(mode, {}).setdefault(name, {})[f"d{draw}s{seed}"] = {
                        "train": {k: tr.get(k) for k in ("steps", "wall_s", "seconds", "adapter_dir", "stop", "recall")},
                        "overall": report.overall,
                        "rows": [row.__dict__ | {"base": row.base.__dict__, "tuned": row.tuned.__dict__}
                                 for row in report.rows]}
                    (work / f"results-{'-'.join(args.modes)}.partial.json").write_text(json.dumps(runs, default=str))
    comparisons: dict[str, dict[str, dict[str, object]]] = {}
    for mode, by_name in runs.items():
        for metric in ("f1", "em", "contains"):
            mean = {name: _per_question_mean(by_run, metric) for name, by_run in by_name.items()}
            base = [float(r["base"][metric]) for r in next(iter(by_name["qagen"].values()))["rows"]]  # type: ignore[index]
            comparisons.setdefault(mode, {})[metric] = {
                "qagen_minus_baseline": paired_bootstrap(mean["qagen"], mean["baseline"]).__dict__,
                "qagen_minus_base": paired_bootstrap(mean["qagen"], base).__dict__,
                "baseline_minus_base": paired_bootstrap(mean["baseline"], base).__dict__,
                "qagen": sum(mean["qagen"]) / len(mean["qagen"]), "baseline": sum(mean["baseline"]) / len(mean["baseline"]),
                "base": sum(base) / len(base), "runs": sorted(by_name["qagen"]),
            }
    results = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "teacher": model, "student": student, "questions": len(items), "unmatched": len(unmatched),
        "draws": draws, "timing": timing, "runs": runs, "comparisons": comparisons,
    }
    for name in ("results.json", f"results-{'-'.join(args.modes)}.json"):  # the last run, and the last of its modes
        (work / name).write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
    return results


def _per_question_mean(by_run: dict[str, dict[str, object]], metric: str) -> list[float]:
    """Each question's score averaged over the runs (draws x seeds) of one dataset: the paired unit."""
    columns = [[float(r["tuned"][metric]) for r in run["rows"]] for run in by_run.values()]  # type: ignore[index,union-attr]
    return [sum(vals) / len(vals) for vals in zip(*columns, strict=True)]


def _smoke_corpus(docs: Path) -> list[dict[str, object]]:
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "bridge.md").write_text("# The Eastbay bridge\n\nThe Eastbay council voted on 3 May 2021 to close the "
                                    "old bridge. Repairs were estimated at 4 million euros by the engineer Ana "
                                    "Ruiz.\n")
    return [{"id": "q1", "question": "Who estimated the cost of the Eastbay bridge repairs?",
             "answers": ["Ana Ruiz", "the engineer Ana Ruiz"], "source": "bridge.md"},
            {"id": "q2", "question": "When did the Eastbay council vote to close the old bridge?",
             "answers": ["3 May 2021"], "source": "bridge.md"}]


def markdown(results: dict[str, object]) -> str:
    def pts(x: float) -> str:
        return f"{100 * x:+.1f}" if x == x else "n/a"

    lines = [f"teacher: {results['teacher']}; student: {Path(str(results['student'])).name}; "
             f"{results['questions']} held-out questions", "",
             "| draw | dataset | pairs (model-written) | teacher tokens | tokens / pair | answers covered: exact, contained |",
             "|---|---|---|---|---|---|"]
    for draw, d in results["draws"].items():  # type: ignore[union-attr]
        for name in ("qagen", "baseline"):
            info = d[name]
            per = info["tokens"] / max(info["pairs"], 1)
            lines.append(f"| {draw} | {name} | {info['pairs']} ({info['model_pairs']}) | {info['tokens']:,} | "
                         f"{per:.0f} | {info['coverage']['exact']:.2f}, {info['coverage']['contained']:.2f} |")
    lines += ["", "| training | dataset | run | steps | train s | stop | F1 | EM | contains |",
              "|---|---|---|---|---|---|---|---|---|"]
    for mode, by_name in results["runs"].items():  # type: ignore[union-attr]
        for name, by_run in by_name.items():
            for key, run in by_run.items():
                o, tr = run["overall"], run["train"]
                lines.append(f"| {mode} | {name} | {key} | {tr.get('steps')} | {tr.get('wall_s')} | {tr.get('stop') or ''} | "
                             f"{100 * o['tuned_f1']:.1f} | {100 * o['tuned_em']:.1f} | {100 * o['tuned_contains']:.1f} |")
    lines += ["", "| training | metric | qagen | baseline | base | qagen minus baseline [95 % CI] (half-width) | "
              "qagen minus base |", "|---|---|---|---|---|---|---|"]
    for mode, by_metric in results["comparisons"].items():  # type: ignore[union-attr]
        for metric, c in by_metric.items():
            d, b = c["qagen_minus_baseline"], c["qagen_minus_base"]
            half = (d["high"] - d["low"]) / 2
            lines.append(f"| {mode} | {metric} | {100 * c['qagen']:.1f} | {100 * c['baseline']:.1f} | "
                         f"{100 * c['base']:.1f} | {pts(d['mean'])} [{pts(d['low'])}, {pts(d['high'])}] "
                         f"({100 * half:.1f}) | {pts(b['mean'])} [{pts(b['low'])}, {pts(b['high'])}] |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
