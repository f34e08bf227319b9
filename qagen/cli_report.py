"""``qagen report`` and ``qagen export``: look at a run before training on it, and share it.

Thin wrappers over :mod:`qagen.report` and :mod:`qagen.card`; registered on the main app by
:func:`register` so cli.py stays one line longer, not one concept wider.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

err = Console(stderr=True)


def _open_store(out: Path):
    from .store import DB_NAME, Store

    if not (out / DB_NAME).is_file():
        raise ValueError(f"no qagen state database in {out} (expected {out / DB_NAME}); run `qagen ingest` first")
    return Store(out)


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


def report_cmd(
    out: Annotated[Path, typer.Argument(help="Output folder of `qagen ingest` (holds qagen.sqlite).")] = Path("qagen-out"),
    run: Annotated[int | None, typer.Option(help="Run id to report (default: the latest finished ingest run).")] = None,
    license: Annotated[str | None, typer.Option(help="Licence id for the dataset card (default: from the run's settings).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the written paths as one JSON object on stdout.")] = False,
) -> None:
    """Write OUT/report.html (what the run produced and threw away) and the dataset card OUT/README.md."""
    from .card import CardError, write_card
    from .report import ReportError, latest_run, write_report
    from .store import StoreError

    try:
        with _open_store(out) as store:
            run_id = run if run is not None else latest_run(store)
            report = write_report(store, run_id, out)
            card = write_card(store, run_id, out, license=license)
    except (ReportError, CardError, StoreError, ValueError) as exc:
        raise _fail(exc) from None
    if as_json:
        print(json.dumps({"run_id": run_id, "report": str(report), "card": str(card)}))
    else:
        err.print(f"report written to [bold]{report}[/bold]; dataset card [bold]{card}[/bold]")


def export_cmd(
    out: Annotated[Path, typer.Argument(help="Output folder of `qagen ingest`.")] = Path("qagen-out"),
    hf: Annotated[Path | None, typer.Option("--hf", help="Write a Hugging Face `datasets` folder (save_to_disk) here, with the card.")] = None,
    push: Annotated[str | None, typer.Option("--push", help="Push the --hf folder to this Hub dataset repo (needs HF_TOKEN).")] = None,
    run: Annotated[int | None, typer.Option(help="Run id (default: the latest finished ingest run).")] = None,
    license: Annotated[str | None, typer.Option(help="Licence id for the card (default: from the run's settings).")] = None,
) -> None:
    """Export a finished run's dataset in another format (today: a Hugging Face datasets folder)."""
    from .card import CardError, export_hf, push_hf
    from .report import ReportError, latest_run
    from .store import StoreError

    if hf is None:
        raise _fail(ValueError("say where to export: --hf DIR"))
    try:
        if push:
            from huggingface_hub import get_token

            if not get_token():  # fail before the export, not after it
                raise CardError("no Hugging Face token: set HF_TOKEN (or run `hf auth login`) to push")
        with _open_store(out) as store:
            run_id = run if run is not None else latest_run(store)
            folder = export_hf(store, run_id, out, hf, license=license)
        err.print(f"datasets folder written to [bold]{folder}[/bold] (load it with datasets.load_from_disk)")
        if push:
            try:
                url = push_hf(folder, push)
            except CardError:
                raise
            except Exception as exc:  # noqa: BLE001 - network/Hub errors come in many types; all mean "not pushed"
                raise CardError(f"push to {push} failed ({type(exc).__name__}: {exc}); {folder} is kept") from None
            err.print(f"pushed to [bold]{url}[/bold]")
    except ImportError:
        raise _fail(ValueError("the HF export needs the `datasets` package: pip install 'qagen[hf]'")) from None
    except (ReportError, CardError, StoreError, ValueError) as exc:
        raise _fail(exc) from None


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``export`` to the main command line."""
    app.command("report")(report_cmd)
    app.command("export")(export_cmd)
