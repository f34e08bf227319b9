"""The ``qagen`` command line: the app and its command groups, each a thin wrapper over a library call.

Only the CLI prints: progress and tables go to stderr, ``--json`` results to
stdout. ``qagen.cli.common`` maps errors to exit codes in one place.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qagen.cli.common import errors
from qagen.cli.config import register as register_config_command
from qagen.cli.doctor import register as register_doctor_command
from qagen.cli.flags import SETTINGS_EPILOG, settings_command
from qagen.cli.flow import register as register_flow_commands
from qagen.cli.ingest import ingest_cmd
from qagen.cli.report import register as register_report_commands
from qagen.cli.review import register as register_review_command
from qagen.cli.setup import register as register_setup_command
from qagen.cli.stages import register as register_stages_command
from qagen.core.version import VERSION
from qagen.prompting.prompts import load_prompts, suite_description

app = typer.Typer(help="Turn a folder of documents into question/answer fine-tuning data.", no_args_is_help=True)
prompts_app = typer.Typer(help="Inspect the prompt suite.", no_args_is_help=True)
app.command("ingest", cls=settings_command("settings"), epilog=SETTINGS_EPILOG)(ingest_cmd)
app.add_typer(prompts_app, name="prompts")
register_config_command(app)  # config show: every setting, its value and where it came from (qagen/cli/config.py)
register_flow_commands(app)  # train, eval, notify, run (qagen/cli/flow.py)
register_report_commands(app)  # report, export (qagen/cli/report.py)
register_doctor_command(app)  # doctor (qagen/cli/doctor.py)
register_review_command(app)  # review: look at the pairs, fix and rate them (qagen/cli/review.py)
register_setup_command(app)  # setup: the embedded model (qagen/cli/setup.py)
register_stages_command(app)  # stages: the pipeline a run would execute (qagen/cli/stages.py)


def _print_version(value: bool) -> None:
    if value:
        print(f"qagen {VERSION}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print qagen's version and exit.")] = False,
) -> None:
    pass


@prompts_app.command("list")
def prompts_list(
    prompts: Annotated[Path | None, typer.Option("--prompts", help="Folder of prompt files that add to or override the built-ins.")] = None,
    suite: Annotated[str | None, typer.Option(help="Perspective suite (prompts/suites.yaml), as for qagen ingest (default: as qagen ingest picks it: ledger for a served model, embedded on the embedded one).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the active prompt set."""
    from qagen.config import load_settings

    with errors(as_json):
        suite = suite or load_settings().perspective_suite  # as `qagen ingest` would pick it (QAGEN_BASE_URL: served)
        ps = load_prompts(prompts, suite=suite)
    rows = [
        {"id": p.id, "role": p.role, "scope": p.scope, "output": p.output, "enabled": p.enabled,
         "samples": p.samples, "hash": p.hash[:10], "source": p.source, "description": p.description}
        for p in ps.all
    ]
    about = suite_description(suite)
    if as_json:
        print(json.dumps(rows, ensure_ascii=False))
        return
    t = Table(title=f"qagen prompts (suite: {suite})")
    columns = ("id", "role", "scope", "output", "enabled", "samples", "hash", "source")
    for col in columns:
        t.add_column(col)
    for r in rows:
        t.add_row(*(str(r[c]) for c in columns))
    Console().print(t)
    if about:
        Console().print(f"[bold]suite {suite}[/bold]: {about}")


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
