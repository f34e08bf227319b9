"""``qagen doctor``: check what the flow needs before running it (the checks are in ``qagen.cli.doctor_checks``).

One line per item on stderr: OK with a detail, FAIL with a one-line fix, WARN for a failure the requested
flow (``--for ingest`` default, ``train``, ``run``) does not need, SKIP for what is not configured.
Exit 0 when everything that flow needs is OK, 1 otherwise; ``--json``: one object on stdout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape

from qagen.cli.common import JsonOpt, err, settings_or_exit

if TYPE_CHECKING:
    from qagen.cli.doctor_checks import Check
    from qagen.config import Settings
    from qagen.flow.notify import NotifySettings
    from qagen.flow.train import TrainSettings

Purpose = Literal["ingest", "train", "run"]
ITEMS = ("llm", "training", "email", "out")
STYLE = {"ok": "[green]OK  [/green]", "fail": "[red]FAIL[/red]", "warn": "[yellow]WARN[/yellow]",
         "skip": "[dim]SKIP[/dim]"}
NEEDS = {"ingest": "the LLM and the output folder", "train": "axolotl + torch and the output folder",
         "run": "the LLM, axolotl + torch, the output folder, and email when configured"}


@dataclass(frozen=True)
class Report:
    purpose: Purpose
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, object]:
        return {"status": "ok" if self.ok else "failed", "for": self.purpose,
                "checks": [c.to_dict() for c in self.checks]}


def graded(check: Check, required: bool) -> Check:
    """A failure the requested flow does not need is only a warning."""
    if not required and check.status == "fail":
        return replace(check, status="warn", required=False)
    return replace(check, required=required)


def diagnose(purpose: Purpose, settings: Settings, train: TrainSettings, ns: NotifySettings, out: Path, *,
             only: tuple[str, ...] = ITEMS, timeout: float = 5.0) -> Report:
    """Run the checks in ``only`` (at once: the slow import checks overlap the network ones), in ITEMS order."""
    from concurrent.futures import ThreadPoolExecutor

    from qagen.cli.doctor_checks import (
        check_email,
        check_llm,
        check_out,
        check_training,
        email_configured,
    )

    needs = {"llm": purpose in ("ingest", "run"), "training": purpose in ("train", "run"),
             "email": purpose == "run" and email_configured(ns), "out": True}
    jobs = {"llm": lambda: check_llm(settings, timeout), "training": lambda: check_training(train),
            "email": lambda: check_email(ns, timeout), "out": lambda: check_out(out)}
    wanted = [name for name in ITEMS if name in only]
    with ThreadPoolExecutor(max_workers=len(wanted) or 1) as pool:
        futures = {name: pool.submit(jobs[name]) for name in wanted}
        checks = tuple(graded(futures[name].result(), needs[name]) for name in wanted)
    return Report(purpose, checks)


def _items(given: list[str] | None) -> list[str] | None:
    unknown = [name for name in given or () if name not in ITEMS]
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)} is not one of {', '.join(ITEMS)}")
    return given


def doctor_cmd(
    purpose: Annotated[Literal["ingest", "train", "run"], typer.Option("--for", help="What you are about to run: ingest, train or run (ingest -> train -> eval -> email).")] = "ingest",
    out: Annotated[Path, typer.Option("--out", "-o", help="The output folder the flow will write.")] = Path("qagen-out"),
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (or QAGEN_BASE_URL). Default: the embedded model.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name served at --base-url (or QAGEN_MODEL).")] = None,
    backend: Annotated[str | None, typer.Option(help="http (default) or vllm.")] = None,
    template: Annotated[str | None, typer.Option(help="axolotl template the training will use (default smollm2-cpu-lora).")] = None,
    base_model: Annotated[str | None, typer.Option(help="Base model to fine-tune (default: per template).")] = None,
    email: Annotated[str | None, typer.Option(help="Who gets the emails (or QAGEN_EMAIL); checks the SMTP server.")] = None,
    smtp_host: Annotated[str | None, typer.Option(help="SMTP server (or QAGEN_SMTP_HOST; default localhost).")] = None,
    smtp_port: Annotated[int | None, typer.Option(help="SMTP port (or QAGEN_SMTP_PORT).")] = None,
    smtp_user: Annotated[str | None, typer.Option(help="SMTP login; the password only from QAGEN_SMTP_PASSWORD.")] = None,
    smtp_tls: Annotated[str | None, typer.Option(help="auto, starttls, ssl or none.")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", callback=_items, help="Check only this item (repeatable): llm, training, email, out.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the LLM endpoint and the SMTP server.", min=0.1)] = 5.0,
    as_json: JsonOpt = False,
) -> None:
    """Check the LLM, axolotl/torch, email and the output folder; exit 1 when what --for needs is not ready."""
    from qagen.config import load_settings
    from qagen.flow.notify import load_notify_settings
    from qagen.flow.train import load_train_settings

    settings = settings_or_exit(lambda: load_settings(base_url=base_url, model=model, backend=backend), as_json)
    ts = settings_or_exit(lambda: load_train_settings(template=template, base_model=base_model), as_json)
    ns = settings_or_exit(lambda: load_notify_settings(
        email=email, smtp_host=smtp_host, smtp_port=smtp_port, smtp_user=smtp_user, smtp_tls=smtp_tls), as_json)
    report = diagnose(purpose, settings, ts, ns, out, only=tuple(only or ITEMS), timeout=timeout)
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        width = max((len(c.name) for c in report.checks), default=0)
        for c in report.checks:
            fix = f" [bold]-> fix:[/bold] {escape(c.fix)}" if c.fix and c.status in ("fail", "warn") else ""
            note = "" if c.required or c.status != "warn" else " [dim](not needed for this flow)[/dim]"
            err.print(f"{STYLE[c.status]} {c.name:<{width}}  {escape(c.detail)}{fix}{note}", highlight=False,
                      soft_wrap=True)
        failed = [c.name for c in report.checks if c.status == "fail"]
        verdict = (f"[green]ready for {purpose}[/green]" if not failed else
                   f"[red]not ready for {purpose}[/red]: fix {', '.join(failed)}")
        scope = f"checked only {', '.join(only)}" if only else f"{purpose} needs {NEEDS[purpose]}"
        err.print(f"doctor: {verdict} ({scope})", highlight=False, soft_wrap=True)
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``qagen doctor`` to the main app."""
    app.command("doctor")(doctor_cmd)
