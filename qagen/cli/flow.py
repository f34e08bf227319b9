"""CLI for the train -> eval -> notify flow: ``qagen train``, ``qagen eval``, ``qagen notify``, ``qagen run``.

Thin wrappers over qagen.flow.train / evaluate / notify / flow; registered on the
main app by ``register(app)``. Heavy libraries (axolotl, torch, transformers)
are imported inside the library functions, never at import time.

Exit codes: 0 ok; 1 failed; 2 quality gate not met (``run --min-pairs``,
``--max-failure-rate``); 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qagen.cli.common import (
    JsonOpt,
    OutArg,
    VerboseOpt,
    err,
    errors,
    fail,
    require_out,
    settings_or_exit,
    setup_logging,
    sigterm_as_interrupt,
)
from qagen.cli.flags import (
    SETTINGS_EPILOG,
    ConfigOpt,
    ProfileOpt,
    SetOpt,
    settings_command,
)
from qagen.cli.ticker import Ticker, TickerProgress


def _say(line: str) -> None:
    err.print(line, highlight=False, markup=False)


OpenBookOpt = Annotated[bool, typer.Option("--open-book", help="Also ask each held-out question over input blocks, as the open-book training rows do: with its chunk, among other documents' chunks, and without it (the right reply then declines). Reports F1, cited source and declined shares, base vs tuned.")]


def train_cmd(
    out: OutArg,
    template: Annotated[str | None, typer.Option(help="axolotl template name in axolotl_configs/ or a .yml path (default smollm2-cpu-lora).")] = None,
    base_model: Annotated[str | None, typer.Option(help="Base model (HF folder or hub name). Default: the embedded SmolLM2 for the CPU template.")] = None,
    launcher: Annotated[str | None, typer.Option(help="accelerate (default), torchrun (multi-node) or python.")] = None,
    launcher_arg: Annotated[list[str] | None, typer.Option(help="Extra argument for the launcher (repeatable), e.g. --nnodes=2.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over train.jsonl: the cap with --stop recall (default 10), the length with --stop epochs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps (caps --epochs).")] = None,
    stop: Annotated[str | None, typer.Option(help="recall (default): stop when the model's closed-book recall of a sample of its own training questions stops rising; epochs: train exactly --epochs.")] = None,
    recall_sample: Annotated[int | None, typer.Option(help="With --stop recall: training questions asked at each check (default 64).")] = None,
    recall_every: Annotated[int | None, typer.Option(help="With --stop recall: steps between checks (default: half an epoch, at least 10).")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (default 42).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: the cores but one).")] = None,
    sequence_len: Annotated[int | None, typer.Option(help="Max tokens per example.")] = None,
    recipe: Annotated[str | None, typer.Option(help="sft (default): fine-tune on train.jsonl. cpt+sft: continued pretraining on OUT/cpt.jsonl (`qagen ingest --cpt`) first, then the SFT template from that model.")] = None,
    cpt_template: Annotated[str | None, typer.Option(help="With --recipe cpt+sft: stage 1's template (default smollm2-cpu-cpt beside a CPU template, else mistral-7b-cpt).")] = None,
    force: Annotated[bool, typer.Option(help="Train again even if this dataset + config was trained before, and train even when the last ingest of OUT did not finish ok.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Fine-tune on OUT/train.jsonl with axolotl: a LoRA by default (--template smollm2-cpu-full: every weight; --recipe cpt+sft: continued pretraining on OUT/cpt.jsonl first); validated first."""
    from qagen.cli.settings import resolve
    from qagen.flow.train import last_ingest_problem, train
    from qagen.store import Store

    setup_logging(verbose)
    require_out(out, as_json)
    given = {"template": template, "base_model": base_model, "launcher": launcher, "epochs": epochs,
             "max_steps": max_steps, "seed": seed, "sequence_len": sequence_len, "launcher_args": launcher_arg,
             "recipe": recipe, "cpt_template": cpt_template, "stop": stop, "recall_sample": recall_sample,
             "recall_every": recall_every, "threads": threads}
    flags = {f"train.{k}": v for k, v in given.items() if v is not None}
    ts = settings_or_exit(lambda: resolve(config=config, sets=set_ or (), flags=flags, owners=("train",)).train,
                          as_json)
    sigterm_as_interrupt()
    try:
        with errors(as_json), Store(out) as store:
            problem = last_ingest_problem(store)
            if problem and not force:
                raise fail(f"{problem}; run `qagen ingest` again, or pass --force to train on it anyway", as_json)
            if problem:
                err.print(f"[yellow]warning:[/yellow] {problem}; training on it anyway (--force)")
            with Ticker(_say) as ticker:
                summary = train(out, ts, store, progress=TickerProgress(ticker), force=force)
    except KeyboardInterrupt:
        raise fail("interrupted; the adapter was not finished", as_json, 130) from None
    if as_json:
        print(json.dumps({**summary.to_dict(), "loss_curve": summary.loss_curve()}))
        return
    note = " (reused: this dataset + config was trained before; --force to train again)" if summary.cached else ""
    if summary.cpt:
        first = summary.cpt
        reused = " (reused)" if first.get("cached") else ""
        err.print(f"stage 1, continued pretraining: {first.get('steps')} steps{reused}; model: {first.get('adapter_dir')}")
    err.print(f"trained {summary.steps} steps in {summary.seconds:.0f} s{note}; loss {summary.loss_curve()}")
    if summary.recall:
        curve = " -> ".join(f"{c['recall']:.2f}@{c['step']}" for c in summary.recall)
        err.print(f"recall of its own training questions: {curve}; stopped: {summary.stop}")
    err.print(f"adapter: [bold]{summary.adapter_dir}[/bold]   log: {summary.log_path}")


def eval_cmd(
    out: OutArg,
    questions: Annotated[Path | None, typer.Option(help="Your held-out questions: .jsonl or .csv (question, answer(s), optional source or doc_id) or SQuAD .json. Default: the run's exam (OUT/exam.jsonl).")] = None,
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter or fully tuned model folder (default: the last one `qagen train` made).")] = None,
    base_model: Annotated[str | None, typer.Option(help="Base model HF folder (default: the adapter's base).")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N held-out questions.")] = None,
    open_book: OpenBookOpt = False,
    base_url: Annotated[str | None, typer.Option(help="Judge endpoint (OpenAI-compatible). Default: the embedded model.")] = None,
    model: Annotated[str | None, typer.Option(help="Judge model name at --base-url.")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Closed book, base vs tuned: held-out questions (EM, F1, contains, 95 % CIs) and the eval.jsonl format check;
    --open-book: the same questions over input blocks too."""
    from qagen.config import load_settings
    from qagen.corpus.questions import load_questions
    from qagen.evaluation.evaluate import EvalError, evaluate, reference_of
    from qagen.flow.train import load_train_settings
    from qagen.store import Store

    setup_logging(verbose)
    require_out(out, as_json)
    if questions is not None:
        with errors(as_json):
            load_questions(questions)  # a malformed file is reported now, naming the line, before any model loads
    settings = settings_or_exit(lambda: load_settings(base_url=base_url, model=model), as_json)
    with errors(as_json), Store(out) as store:
        last = store.last_run_summary("train") or {}
        adapter_dir = str(adapter or last.get("adapter_dir") or "")
        base = base_model or str(last.get("base_model") or "")
        if not adapter_dir or not base:
            raise EvalError(f"no trained adapter recorded in {out}: run `qagen train {out}` or pass --adapter and --base-model")
        threads = load_train_settings().threads
        reference = None if base_model or adapter else reference_of(last)  # the recorded run's own base, if cpt+sft
        with Ticker(_say) as ticker:
            progress = TickerProgress(ticker)
            report = evaluate(out, store, settings, base_model=base, adapter_dir=adapter_dir, limit=limit,
                              threads=threads, questions=questions, open_book=open_book, reference_model=reference,
                              progress=lambda line: progress.stage("eval", line), count=progress.count)
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    err.print(report.table(), highlight=False)
    err.print(f"judge: {report.judge}; report: {out / 'eval_report.json'} ({report.seconds:.0f} s)")


def notify_cmd(
    out: OutArg,
    smtp_host: Annotated[str | None, typer.Option(help="SMTP server (or QAGEN_SMTP_HOST).")] = None,
    smtp_port: Annotated[int | None, typer.Option(help="SMTP port (or QAGEN_SMTP_PORT).")] = None,
    smtp_user: Annotated[str | None, typer.Option(help="SMTP login; the password only from QAGEN_SMTP_PASSWORD.")] = None,
    smtp_tls: Annotated[str | None, typer.Option(help="auto, starttls, ssl or none.")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Send again every email that could not be delivered (they are kept as pending in OUT)."""
    from qagen.flow.notify import load_notify_settings, resend_pending
    from qagen.store import Store

    setup_logging(verbose)
    require_out(out, as_json)
    ns = settings_or_exit(lambda: load_notify_settings(
        smtp_host=smtp_host, smtp_port=smtp_port, smtp_user=smtp_user, smtp_tls=smtp_tls), as_json)
    with errors(as_json), Store(out) as store:
        result = resend_pending(store, ns)
    if as_json:
        print(json.dumps({"sent": result.sent, "pending": result.pending, "errors": list(result.errors)}))
    else:
        err.print(f"{result.sent} sent, {result.pending} still pending" + (f": {result.errors[0]}" if result.errors else ""))
    if result.pending:
        raise typer.Exit(1)


def run_cmd(
    ctx: typer.Context,
    docs: Annotated[Path, typer.Argument(help="Folder of documents (read recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output + state folder (restore it from a CI cache).")] = Path("qagen-out"),
    base_url: Annotated[list[str] | None, typer.Option(help="OpenAI-compatible endpoint for generation and judge (repeat it to balance load). Default: the embedded model.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name served at --base-url.")] = None,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    suite: Annotated[str | None, typer.Option(help="Perspective suite, as for `qagen ingest`.")] = None,
    email: Annotated[str | None, typer.Option(help="Who gets the start/finish/failure emails (or QAGEN_EMAIL).")] = None,
    min_pairs: Annotated[int, typer.Option(help="Quality gate: fewer pairs -> exit 2, no training.")] = 1,
    max_failure_rate: Annotated[float, typer.Option(help="Quality gate: share of failed LLM requests above this -> exit 2.")] = 0.1,
    questions: Annotated[Path | None, typer.Option(help="Your held-out questions for the knowledge score (.jsonl, .csv, SQuAD .json); default: the run's exam.jsonl.")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Evaluate only the first N held-out questions.")] = None,
    open_book: OpenBookOpt = False,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Folder of prompt files.")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """ingest -> train -> eval -> email, resumable: re-run the same command to continue after a crash (CI mode: --json).
    It takes every setting `qagen ingest` and `qagen train` take."""
    from qagen.cli.flags import daily_flags, setting_flags
    from qagen.cli.settings import resolve
    from qagen.flow.run import Gate, run

    setup_logging(verbose)
    flags = {**setting_flags(ctx), **daily_flags(base_url=base_url, model=model, suite=suite)}
    if email is not None:
        flags["notify.email"] = email
    resolved = settings_or_exit(lambda: resolve(docs=docs, config=config, profile=profile, sets=set_ or (),
                                                flags=flags, owners=("settings", "train", "notify")), as_json)
    settings, ts, ns = resolved.settings, resolved.train, resolved.notify
    gate = settings_or_exit(lambda: Gate(min_pairs=min_pairs, max_failure_rate=max_failure_rate), as_json)
    sigterm_as_interrupt()
    with errors(as_json):
        if questions is not None:
            from qagen.corpus.questions import load_questions

            load_questions(questions)  # a malformed file stops the run before anything is generated
        with Ticker(_say) as ticker:
            result = run(docs, out, settings, ts, ns, gate=gate, eval_limit=eval_limit, prompts_dir=prompts,
                         questions=questions, open_book=open_book, progress=TickerProgress(ticker))
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, default=str))
    else:
        _print_result(result)
    raise typer.Exit(result.exit_code)


def _print_result(result: object) -> None:
    from qagen.flow.run import FlowResult

    assert isinstance(result, FlowResult)
    colour = "green" if result.exit_code == 0 else "red"
    t = Table(title=f"qagen run: [{colour}]{result.status}[/{colour}] (exit {result.exit_code})", show_header=False,
              title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    if result.error:
        t.add_row("error", result.error)
    if result.ingest:
        t.add_row("pairs", f"{result.ingest.pairs_total} ({result.ingest.train_pairs} train, "
                           f"{result.ingest.eval_pairs} eval)")
    if result.train:
        t.add_row("train", f"{result.train.steps} steps; loss {result.train.loss_curve()}")
        t.add_row("adapter", result.train.adapter_dir)
    t.add_row("durations", ", ".join(f"{k} {v:.0f} s" for k, v in result.durations.items()))
    t.add_row("emails", f"{result.emails_sent} sent, {result.emails_pending} pending")
    err.print(t)
    if result.eval_table:
        err.print(result.eval_table, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the flow commands to the main ``qagen`` app."""
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("notify")(notify_cmd)
    app.command("run", cls=settings_command("settings", "train", "notify"), epilog=SETTINGS_EPILOG)(run_cmd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `qagen run|train|eval|notify`")
