"""``qagen report`` and ``qagen export``: look at a run before training on it, and share it.

Thin wrappers over :mod:`qagen.output.report` and :mod:`qagen.output.card`; registered on the main app by
:func:`register`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from qagen.cli.common import err, errors, fail, require_out


def report_cmd(
    out: Annotated[Path, typer.Argument(help="Output folder of `qagen ingest` (holds qagen.sqlite).")] = Path("qagen-out"),
    run: Annotated[int | None, typer.Option(help="Run id to report (default: the latest finished ingest run).")] = None,
    license: Annotated[str | None, typer.Option(help="Licence id for the dataset card (default: from the run's settings).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the written paths as one JSON object on stdout.")] = False,
) -> None:
    """Write OUT/report.html (what the run produced and threw away) and the dataset card OUT/README.md."""
    from qagen.output.card import write_card
    from qagen.output.report import latest_run, write_report
    from qagen.store import Store

    require_out(out, as_json)
    with errors(as_json), Store(out) as store:
        run_id = run if run is not None else latest_run(store)
        report = write_report(store, run_id, out)
        card = write_card(store, run_id, out, license=license)
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
    from qagen.output.card import CardError, export_hf, push_hf
    from qagen.output.report import latest_run
    from qagen.store import Store

    if hf is None:
        raise fail("say where to export: --hf DIR", False)
    require_out(out, False)
    try:
        if push:
            from huggingface_hub import get_token

            if not get_token():  # fail before the export, not after it
                raise CardError("no Hugging Face token: set HF_TOKEN (or run `hf auth login`) to push")
        with errors(False), Store(out) as store:
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
        raise fail("the HF export needs the `datasets` package: pip install 'qagen[hf]'", False) from None
    except CardError as exc:
        raise fail(str(exc), False) from None


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``export`` to the main command line."""
    app.command("report")(report_cmd)
    app.command("export")(export_cmd)
