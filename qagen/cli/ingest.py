"""``qagen ingest``: documents in, a dataset out, with progress bars and a summary table.

Exit codes: 0 = success; 1 = the command failed, or finished only in part
(some LLM requests failed for good: re-run to retry them; no readable
documents; no pairs). Skipped input files alone do not fail a run unless
``--fail-on-skip`` is given: they are listed in the summary. ``--json`` puts
the run summary on stdout as one JSON object, for CI.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from qagen.cli.common import (
    err,
    errors,
    settings_or_exit,
    setup_logging,
    sigterm_as_interrupt,
)
from qagen.cli.flags import ConfigOpt, ProfileOpt, SetOpt, daily_flags, setting_flags
from qagen.cli.settings import resolve
from qagen.cli.ticker import Ticker, TickerProgress

if TYPE_CHECKING:
    from qagen.pipeline.summary import Summary


def _count_files(root: Path) -> int:
    total = 0
    for _, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        total += sum(1 for f in files if not f.startswith("."))
    return total


class _RichProgress:
    def __init__(self, progress: Progress, total_files: int):
        self.p = progress
        self.docs = progress.add_task("documents", total=total_files)
        self.reqs = progress.add_task("requests", total=0)
        self.pairs = progress.add_task("pairs", total=None)

    def doc_read(self, path: str, n_chunks: int) -> None:
        self.p.advance(self.docs)

    def doc_skipped(self, path: str, reason: str) -> None:
        self.p.advance(self.docs)

    def requests_added(self, n: int) -> None:
        task = self.p.tasks[self.reqs]
        self.p.update(self.reqs, total=(task.total or 0) + n)

    def request_done(self, *, cached: bool, failed: bool) -> None:
        self.p.advance(self.reqs)

    def pairs_added(self, n: int) -> None:
        self.p.advance(self.pairs, n)


def _summary_table(s: Summary) -> Table:
    t = Table(title=f"qagen ingest: {s.status}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", f"{s.model} ({s.backend})")
    t.add_row("documents", f"{s.documents_read} read, {len(s.documents_skipped)} skipped")
    for skipped in s.documents_skipped[:20]:
        t.add_row("  skipped", f"{skipped['path']!r}: {skipped['reason']}")
    if len(s.documents_skipped) > 20:
        t.add_row("  skipped", f"... and {len(s.documents_skipped) - 20} more (see --json)")
    t.add_row("chunks", f"{s.chunks} (length in {s.chunk_unit})")
    t.add_row(
        "requests",
        f"{s.requests_sent} sent, {s.requests_cached} cached, {s.requests_failed} failed "
        f"({s.http_retries} HTTP retries, {s.corrective_retries} corrective retries, "
        f"{s.invalid_replies} still invalid, {s.length_cutoffs} hit max_tokens)",
    )
    t.add_row("tokens", f"{s.prompt_tokens} prompt + {s.completion_tokens} completion (sent this run)")
    for name, n in s.pairs_per_perspective.items():
        exported, y = s.exported_per_perspective.get(name, 0), s.yield_per_perspective.get(name)
        per_call = f" ({y} per call)" if y is not None else ""
        t.add_row(f"  pairs: {name}", f"{n} generated, {exported} exported{per_call}")
    t.add_row("pairs", f"{s.pairs_total} ({s.train_pairs} train, {s.eval_pairs} eval, held out by {s.split_by})")
    if s.suite:
        t.add_row("suite", s.suite + (" (quiz and facts sampled again instead of summaries, metadata, entities; "
                                      "--suite broad runs them all)" if s.suite == "knowledge" else ""))
    if s.profile and s.profile != "embedded":
        t.add_row("profile", f"{s.profile} (`qagen config show` lists every setting and where it came from)")
    if s.profile == "embedded":
        t.add_row("profile", "embedded model: the embedded suite (every question built by code from the fact ledger; "
                             "the 135M model's own drafts fail their checks), small chunks, no exam; --suite broad "
                             "runs its drafts, --refine asks one critic round")
    if s.steps:
        t.add_row("steps", "pairs through each per-pair step: " + ", ".join(f"{k} {v}" for k, v in s.steps.items())
                  + " (`qagen stages` lists them)")
    if s.refined:
        r = s.refine
        flagged = ", ".join(f"{k} {v}" for k, v in r["flagged"].items()) or "none"  # type: ignore[union-attr]
        rejected = ", ".join(f"{k} {v}" for k, v in r["rejected"].items()) or "none"  # type: ignore[union-attr]
        t.add_row("refinement", f"--refine {r['mode']}: {s.drafted} drafts; flagged by check: {flagged}")
        t.add_row("  repairs", f"{r['tried']} tried, {r['accepted']} accepted, rejected for failing: {rejected}; "
                               f"{r['loop_tokens']:,} teacher tokens in the loop")
        if r["critic_reviews"]:
            t.add_row("  critic", f"flagged {r['critic_flags']} of {r['critic_reviews']} pairs it reviewed"
                                  + (f"; {r['critic_off']}" if r["critic_off"] else ""))
        t.add_row("  stopped", ", ".join(f"{k}: {v}" for k, v in s.stop_reasons.items()))
        t.add_row("dpo", f"{s.dpo_pairs} preference pairs in {s.dpo_path}")
    if any(s.review.values()):
        r = s.review
        t.add_row("review", f"human decisions: {r['accepted']} accepted ({r['edited']} edited, {r['overrides']} "
                            f"overriding a check that dropped them), {r['rejected']} rejected"
                            + ("" if s.refined else f"; {s.dpo_pairs} preference pairs in {s.dpo_path}"))
    if s.judged:
        how = {"logprobs": "P(yes) from logprobs",
               "parsed": "parsed yes/no: the endpoint gave no logprobs"}.get(s.judge_method, s.judge_method)
        t.add_row("judge", f"{s.judge_passed} passed, {s.judge_rejected} rejected, {s.judge_failed} failed "
                           f"(threshold {s.judge_threshold}; {how})")
        if s.best_of > 1:
            t.add_row("best-of", f"{s.best_of} answers per question; a sample beat the draft {s.best_of_replaced} times")
    if s.filtered:
        by = ", ".join(f"{k} {v}" for k, v in s.filtered.items())
        saved = f"; {s.screened} caught before the judge (no judge call)" if s.judged else ""
        t.add_row("filters", f"{sum(s.filtered.values())} pairs thrown away by the deterministic filters ({by}){saved}")
    if s.facts:
        f = s.facts
        hist = ", ".join(f"{n} with {b}" for b, n in sorted(f["histogram"].items()))  # type: ignore[union-attr]
        per_doc = f["facts_per_document"]
        t.add_row("facts", f"{f['facts']} facts in {len(per_doc)} documents ({min(per_doc.values())}-"  # type: ignore[arg-type,union-attr]
                           f"{max(per_doc.values())} a document); exported rows per fact: {hist}")  # type: ignore[arg-type,union-attr]
        t.add_row("  covered", f"{f['exposed']} facts with >= 1 exported row, {f['at_k']} with >= k={f['k']}; "
                               f"{f['cloze_rows']} of the rows built by code")
        t.add_row("  tokens", f"{f['teacher_tokens']:,} teacher tokens: {f['tokens_per_exported_pair']} per exported "
                              f"pair, {f['tokens_per_model_pair']} per model-written pair, "
                              f"{f['tokens_per_covered_fact']} per covered fact")
    if s.grounding_checked:
        policy = "dropped" if s.ungrounded_policy == "drop" else "flagged"
        t.add_row("grounding", f"{s.grounded} of {s.grounding_checked} quotes found in their chunk; "
                               f"{s.ungrounded} ungrounded ({policy})")
    t.add_row("duplicates", f"{s.duplicates_removed} near-duplicate questions removed")
    if s.contaminated_removed:
        t.add_row("decontaminated", f"{s.contaminated_removed} pairs dropped (question matched a benchmark question)")
    verdicts = ", ".join(f"{k}: {v}" for k, v in s.verdicts.items())
    t.add_row("verdicts", f"{verdicts} (of {s.pairs_generated} pairs)")
    for verdict, example in s.verdict_examples.items():
        t.add_row(f"  e.g. {verdict}", example[:200])
    if s.chunks_without_pairs:
        t.add_row("empty chunks", f"{s.chunks_without_pairs} chunks ended with no pairs, e.g. "
                                  + "; ".join(s.chunks_without_pairs_examples[:3]))
    if s.error:
        t.add_row("error", s.error)
    t.add_row("group", s.group_id[:10])
    t.add_row("train", s.train_path)
    if s.exam_path:
        controls = s.verdicts.get("exam_control", 0)
        t.add_row("exam", f"{s.exam_questions} held-out questions in {s.exam_path} (never trained on)"
                  + (f", {controls} of them control questions the documents don't answer" if controls else ""))
    t.add_row("eval", s.eval_path)
    if s.contextual_rows:
        modes = ", ".join(f"{n} {m}" for m, n in s.contextual_modes.items() if n)
        t.add_row("open-book", f"{s.contextual_rows} rows added to train.jsonl ({modes})")
    if s.text_rows:
        t.add_row("text rows", f"{s.text_rows} pieces of the documents' text in {s.text_path} (`qagen train` mixes "
                               "them into the same run)")
    if s.cpt_path:
        t.add_row("cpt", f"{s.cpt_texts} texts in {s.cpt_path} (chunks + {s.rewrites} rewrites; {s.rewrites_dropped} "
                         "rewrites dropped: a number, name or date their chunk does not state)")
    t.add_row("state", s.state_db)
    if s.report_path:
        t.add_row("report", f"{s.report_path} (dataset card: {s.card_path})")
    for example in s.failure_examples:
        t.add_row("  failure", example)
    for warning in s.warnings:
        t.add_row("[yellow]warning[/yellow]", warning)
    t.add_row("time", f"{s.seconds:.1f} s")
    return t


EXAMPLES = 5  # exported pairs shown under the summary table, one line each


def _examples(paths: list[str], n: int = EXAMPLES) -> list[tuple[str, str]]:
    """Up to ``n`` exported (question, answer) pairs to show: identity pairs only when there is nothing else, the
    documents taken in turn so each shows up, in the files' order (deterministic)."""
    rows: list[tuple[str, str, str, str]] = []  # perspective, doc_id, question, answer
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    turns = {m["role"]: m["content"] for m in r.get("messages", [])}
                    if "user" in turns and "assistant" in turns:
                        rows.append((r.get("perspective", ""), r.get("doc_id", ""), turns["user"], turns["assistant"]))
        except (OSError, ValueError):
            continue
    shown = [r for r in rows if r[0] != "identity"] or rows
    # a plain question first ("What is ...?", "Which entry ...?"), then a short one; else the files' order
    shown.sort(key=lambda r: (_WH.match(_untitled(r[2])) is None, len(_untitled(r[2])) > 100))
    by_doc: dict[str, list[tuple[str, str, str, str]]] = {}
    for r in shown:
        by_doc.setdefault(r[1], []).append(r)
    picked: list[tuple[str, str]] = []
    while len(picked) < n and any(by_doc.values()):
        for queue in by_doc.values():
            if queue and len(picked) < n:
                _, _, q, a = queue.pop(0)
                picked.append((q, a))
    return picked


_WH = re.compile(r"(what|which|who|when|where|why|how)\b", re.IGNORECASE)


def _untitled(question: str) -> str:
    """The question without the document's title, which every code-built question opens with."""
    q = re.sub(r'^In "[^"]{1,300}": ', "", question)
    return q[:1].upper() + q[1:]


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 3, 1)].rstrip() + "..."


def _print_examples(summary: Summary) -> None:
    """A few of the exported pairs, one line each, and where report.html shows them all."""
    examples = _examples([p for p in (summary.train_path, summary.eval_path) if p])
    if examples:
        width = max(err.width, 60)
        err.print(f"{len(examples)} of the {summary.pairs_total} exported pairs:", highlight=False)
        for q, a in examples:
            q = _untitled(q)
            answer = _one_line(a, max(width // 3, 20))
            line = f"  Q: {_one_line(q, width - len(answer) - 10)}  A: {answer}"
            err.print(line, markup=False, highlight=False, no_wrap=True, overflow="ellipsis")
    if summary.report_path:
        err.print(f"all of them, with what was dropped and why: [bold]{summary.report_path}[/bold]", highlight=False)


def ingest_cmd(
    ctx: typer.Context,
    docs: Annotated[Path, typer.Argument(help="Folder of documents (read recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (dataset + state).")] = Path("qagen-out"),
    base_url: Annotated[list[str] | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://host:8000/v1. Repeat it to balance load over several servers (with failover). Default: the embedded model.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name served at --base-url (with --backend vllm: the model vLLM loads).")] = None,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    suite: Annotated[str | None, typer.Option(help="Perspective suite (prompts/suites.yaml; `qagen prompts list --suite NAME` shows one): ledger (the default for a served model: a question built by code on every fact of the fact ledger, plus about, title questions and identity), ledger-questions (plus the teacher's answer-first questions, for a strong teacher), knowledge, broad, or embedded (the default on the embedded model).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight at once (per endpoint when several).")] = None,
    refine: Annotated[str | None, typer.Option("--refine", help="The repair loop: off (default), repair (pairs that fail a check are rewritten with the evidence; a rewrite is kept only if it passes every check) or full (the model critic also reviews pairs that pass).")] = None,
    judge: Annotated[bool | None, typer.Option("--judge/--no-judge", help="Score each pair with yes/no judge checks. Default: on for the embedded model, off for a served one.")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Folder of prompt files that add to or override the built-ins.")] = None,
    api_key: Annotated[str | None, typer.Option(hidden=True, help="API key (better: OPENAI_API_KEY or QAGEN_API_KEY).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Generate a Q/A dataset from DOCS into OUT (train.jsonl, eval.jsonl, qagen.sqlite)."""
    # Imported here: the pipeline pulls in openai, markitdown and langchain (~2 s),
    # which `qagen --help` and `qagen prompts list` do not need.
    from qagen.pipeline.ingest import ingest
    from qagen.pipeline.summary import Interrupted

    setup_logging(verbose)
    flags = {**setting_flags(ctx), **daily_flags(base_url=base_url, model=model, suite=suite, concurrency=concurrency,
                                                 refine=refine, judge=judge)}
    resolved = settings_or_exit(lambda: resolve(docs=docs, config=config, profile=profile, sets=set_ or (),
                                                flags=flags, api_key=api_key), as_json)
    settings = resolved.settings
    sigterm_as_interrupt()
    show_progress = err.is_terminal and not as_json
    try:
        with errors(as_json):
            if show_progress:
                columns = (TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn())
                with Progress(*columns, console=err, transient=False) as bar:
                    total = _count_files(docs) if docs.is_dir() else 0
                    summary = ingest(docs, out, settings, prompts_dir=prompts, progress=_RichProgress(bar, total))
            else:  # a CI log: a plain line every few seconds (qagen/cli/ticker.py)
                with Ticker(lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True)) as ticker:
                    total = _count_files(docs) if docs.is_dir() else 0
                    ticker.stage("ingest", f"{docs} -> {out}", unit="requests")
                    summary = ingest(docs, out, settings, prompts_dir=prompts, progress=TickerProgress(ticker, total))
    except Interrupted as stop:
        if as_json:
            print(json.dumps(stop.summary.to_dict(), ensure_ascii=False))
        err.print(
            f"[yellow]interrupted:[/yellow] {stop.summary.pairs_total} finished pairs written to "
            f"{stop.summary.train_path}; run the same command again to finish."
        )
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted:[/yellow] finished requests are saved; run the same command again to resume.")
        raise typer.Exit(130) from None
    if as_json:
        print(json.dumps(summary.to_dict(), ensure_ascii=False))
    else:
        err.print(_summary_table(summary))
        if summary.unchanged:
            err.print("nothing changed since the last run (documents, settings, prompts): the dataset was kept")
        if summary.status == "failed":
            err.print(f"[red]the run failed[/red]: nothing in {summary.out_dir} was replaced")
        else:
            err.print(f"dataset written to [bold]{summary.train_path}[/bold] and [bold]{summary.eval_path}[/bold]")
            _print_examples(summary)
    if summary.status != "ok" or (settings.fail_on_skip and summary.documents_skipped):
        raise typer.Exit(1)
