"""``qagen report`` and ``qagen export``: look at a run before training on it, and share it.

Thin wrappers over :mod:`qagen.output.report`, :mod:`qagen.output.card`, :mod:`qagen.output.formats` and
:mod:`qagen.output.contextual`; registered on the main app by
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
    fmt: Annotated[str | None, typer.Option("--format", help="Write OUT/formats/{train,eval}.FMT.jsonl and FMT.axolotl.yml: "
                                            "messages, alpaca, vicuna, chatml, llama2, sharegpt, or all (bagel's mix).")] = None,
    contextual: Annotated[bool, typer.Option("--contextual", help="Write OUT/contextual.jsonl: open-book examples "
                                             "(BEGININPUT blocks, cited answers) built from the pairs and their chunks.")] = False,
    distractor_share: Annotated[float, typer.Option(help="--contextual: share of examples with distractor blocks "
                                                    "from other documents.")] = 0.3,
    withheld_share: Annotated[float, typer.Option(help="--contextual: share whose answer's chunk is left out "
                                                  "(the answer says the context does not hold it).")] = 0.1,
    hf: Annotated[Path | None, typer.Option("--hf", help="Write a Hugging Face `datasets` folder (save_to_disk) here, with the card.")] = None,
    push: Annotated[str | None, typer.Option("--push", help="Push the --hf folder to this Hub dataset repo (needs HF_TOKEN).")] = None,
    run: Annotated[int | None, typer.Option(help="Run id (default: the latest finished ingest run).")] = None,
    license: Annotated[str | None, typer.Option(help="Licence id for the card (default: from the run's settings).")] = None,
) -> None:
    """Export a finished run's dataset in other shapes: prompt formats (--format), open-book examples
    (--contextual), a Hugging Face datasets folder (--hf)."""
    from qagen.core.errors import InputError
    from qagen.output.contextual import check_shares
    from qagen.output.formats import check_format

    if hf is None and fmt is None and not contextual:
        raise fail("say what to export: --format FMT, --contextual, or --hf DIR", False)
    try:  # bad values fail before anything is written
        if fmt is not None:
            check_format(fmt)
        if contextual:
            check_shares(distractor_share, withheld_share)
    except InputError as exc:
        raise fail(str(exc), False) from None
    if fmt is not None:
        _export_format(out, fmt)
    if contextual:
        _export_contextual(out, distractor_share, withheld_share)
    if hf is not None:
        _export_hf(out, hf, push, run, license)


def _export_format(out: Path, fmt: str) -> None:
    from qagen.output.formats import export_formats

    with errors(False):
        result = export_formats(out, fmt)
    for split, path in result.paths.items():
        err.print(f"{split}: {result.rows[split]} rows in [bold]{path}[/bold]")
    err.print(f"axolotl datasets stanza in [bold]{result.stanza_path}[/bold]:")
    print(result.stanza, end="")


def _export_contextual(out: Path, distractor_share: float, withheld_share: float) -> None:
    from qagen.output.contextual import export_contextual
    from qagen.store import Store

    require_out(out, False)
    with errors(False), Store(out) as store:
        result = export_contextual(store, out, distractor_share=distractor_share, withheld_share=withheld_share)
    modes = ", ".join(f"{n} {mode}" for mode, n in result.modes.items())
    err.print(f"{result.examples} open-book examples ({modes}) in [bold]{result.path}[/bold]")
    for why, n in result.skipped.items():
        err.print(f"  left out: {n} pairs, {why}")
    err.print(f"axolotl datasets stanza in [bold]{result.stanza_path}[/bold]:")
    print(result.stanza, end="")


def _export_hf(out: Path, hf: Path, push: str | None, run: int | None, license: str | None) -> None:
    from qagen.output.card import CardError, export_hf, push_hf
    from qagen.output.report import latest_run
    from qagen.store import Store

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
