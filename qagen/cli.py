"""The ``qagen`` command line: thin wrappers over library functions.

Only this module prints. Progress and tables go to stderr; ``--json`` puts
the run summary on stdout as one JSON object, for CI.

Exit codes: 0 = success; 1 = the command failed, or finished only in part
(some LLM requests failed for good: re-run to retry them; no readable
documents; no pairs). Skipped input files alone do not fail a run unless
``--fail-on-skip`` is given: they are listed in the summary.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .config import load_settings
from .prompts import PromptError, load_prompts

if TYPE_CHECKING:
    from .pipeline import Summary

app = typer.Typer(help="Turn a folder of documents into question/answer fine-tuning data.", no_args_is_help=True)
prompts_app = typer.Typer(help="Inspect the prompt suite.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")

err = Console(stderr=True)
SUPPORTED = {".txt", ".text", ".md", ".markdown", ".rst", ".html", ".htm", ".pdf", ".docx"}


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )


def _sigterm_as_interrupt() -> None:
    """SIGTERM (CI cancelling a job, `kill`) stops like Ctrl-C: finished work is written, no orphans."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    # A shell without job control starts background jobs with SIGINT ignored; a
    # user's Ctrl-C or `kill -INT` should still stop qagen cleanly.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
        t.add_row(f"  pairs: {name}", str(n))
    t.add_row("pairs", f"{s.pairs_total} ({s.train_pairs} train, {s.eval_pairs} eval, held out by {s.split_by})")
    if s.refined:
        hist = ", ".join(f"{k} revisions: {v}" for k, v in s.revisions_histogram.items())
        t.add_row("refinement", f"{s.drafted} drafts; {hist}")
        t.add_row("  stopped", ", ".join(f"{k}: {v}" for k, v in s.stop_reasons.items()))
        t.add_row("dpo", f"{s.dpo_pairs} preference pairs in {s.dpo_path}")
    if s.contaminated_removed:
        t.add_row("decontaminated", f"{s.contaminated_removed} pairs dropped (question matched a benchmark question)")
    t.add_row("group", s.group_id[:10])
    t.add_row("train", s.train_path)
    t.add_row("eval", s.eval_path)
    t.add_row("state", s.state_db)
    for example in s.failure_examples:
        t.add_row("  failure", example)
    t.add_row("time", f"{s.seconds:.1f} s")
    return t


@app.command("ingest")
def ingest_cmd(
    docs: Annotated[Path, typer.Argument(help="Folder of documents (read recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (dataset + state).")] = Path("qagen-out"),
    base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible endpoint, e.g. http://host:8000/v1. Default: the embedded model.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name served at --base-url.")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="API key (better: set OPENAI_API_KEY or QAGEN_API_KEY).")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Requests in flight at once.")] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Folder of prompt files that add to or override the built-ins.")] = None,
    chunk_size: Annotated[Optional[int], typer.Option(help="Chunk size in tokens.")] = None,
    chunk_overlap: Annotated[Optional[int], typer.Option(help="Chunk overlap in tokens.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="tokenizer.json path or local HF tokenizer for token-exact chunking.")] = None,
    split_by: Annotated[Optional[str], typer.Option(help="Hold-out unit: auto, document, chunk or pair.")] = None,
    eval_fraction: Annotated[Optional[float], typer.Option(help="Share held out for eval.jsonl.")] = None,
    refine: Annotated[Optional[bool], typer.Option("--refine/--no-refine", help="Send each draft pair through the critic -> regenerator loop.")] = None,
    max_rounds: Annotated[Optional[int], typer.Option(help="Refinement: most critic rounds per pair (default 3).")] = None,
    min_rounds: Annotated[Optional[int], typer.Option(help="Refinement: force this many revisions even when the critic is satisfied.")] = None,
    decontaminate: Annotated[Optional[list[Path]], typer.Option(help="Benchmark/held-out question file (.json SQuAD, .jsonl, .txt, .csv); near matches are dropped. Repeatable.")] = None,
    fail_on_skip: Annotated[bool, typer.Option(help="Exit 1 if any input file was skipped.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Generate a Q/A dataset from DOCS into OUT (train.jsonl, eval.jsonl, qagen.sqlite)."""
    # Imported here: the pipeline pulls in openai, markitdown and langchain (~2 s),
    # which `qagen --help` and `qagen prompts list` do not need.
    from .embedded import EmbeddedError
    from .pipeline import IngestError, Interrupted, ingest
    from .store import StoreError

    _setup_logging(verbose)
    try:
        settings = load_settings(
            base_url=base_url, model=model, api_key=api_key, concurrency=concurrency, chunk_size=chunk_size,
            chunk_overlap=chunk_overlap, tokenizer=tokenizer, split_by=split_by, eval_fraction=eval_fraction,
            refine=refine, max_rounds=max_rounds, min_rounds=min_rounds,
            decontaminate=[str(p) for p in decontaminate] if decontaminate else None,
        )
        if settings.min_rounds > settings.max_rounds:
            raise ValueError("--min-rounds cannot exceed --max-rounds")
    except ValueError as exc:
        err.print(f"[red]error:[/red] invalid settings: {exc}")
        raise typer.Exit(1) from None
    _sigterm_as_interrupt()
    show_progress = err.is_terminal and not as_json
    try:
        if show_progress:
            columns = (TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
            with Progress(*columns, console=err, transient=False) as bar:
                summary = ingest(docs, out, settings, prompts_dir=prompts, progress=_RichProgress(bar, _count_files(docs) if docs.is_dir() else 0))  # type: ignore[arg-type]
        else:
            summary = ingest(docs, out, settings, prompts_dir=prompts)
    except (IngestError, PromptError, StoreError, EmbeddedError, ValueError) as exc:
        if as_json:
            print(json.dumps({"status": "failed", "error": str(exc)}))
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
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
        err.print(f"dataset written to [bold]{summary.train_path}[/bold] and [bold]{summary.eval_path}[/bold]")
    if summary.status != "ok" or (fail_on_skip and summary.documents_skipped):
        raise typer.Exit(1)


@prompts_app.command("list")
def prompts_list(
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Folder of prompt files that add to or override the built-ins.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the active prompt set."""
    try:
        ps = load_prompts(prompts)
    except PromptError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    rows = [
        {"id": p.id, "role": p.role, "scope": p.scope, "output": p.output, "enabled": p.enabled,
         "hash": p.hash[:10], "source": p.source, "description": p.description}
        for p in ps.all
    ]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    t = Table(title="qagen prompts")
    for col in ("id", "role", "scope", "output", "enabled", "hash", "source"):
        t.add_column(col)
    for r in rows:
        t.add_row(*(str(r[c]) for c in ("id", "role", "scope", "output", "enabled", "hash", "source")))
    Console().print(t)


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
