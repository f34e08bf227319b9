"""What every command shares: the stderr console, logging, SIGTERM, the output-folder check, and the one
place a ``QagenError`` becomes an exit code.

Exit codes: 0 ok; 1 the command failed (or finished only in part); 2 a
quality gate was not met (``qagen run``); 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from qagen.core.errors import FailFast, QagenError

err = Console(stderr=True)

T = TypeVar("T")

OutArg = Annotated[Path, typer.Argument(help="The output folder of `qagen ingest` (dataset + qagen.sqlite).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v")]


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )


def sigterm_as_interrupt() -> None:
    """SIGTERM (CI cancelling a job, `kill`) stops like Ctrl-C: finished work is written, no orphans."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    # A shell without job control starts background jobs with SIGINT ignored; a
    # user's Ctrl-C or `kill -INT` should still stop qagen cleanly.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def fail(message: str, as_json: bool, code: int = 1) -> typer.Exit:
    """Say why on stderr (and as JSON on stdout with ``--json``); the caller raises the returned Exit."""
    if as_json:
        print(json.dumps({"status": "failed", "error": message}))
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)  # escaped: "qagen[vllm]" is not markup
    return typer.Exit(code)


def require_out(out: Path, as_json: bool) -> None:
    """OUT must hold a state database (``qagen ingest`` made it)."""
    from qagen.store import DB_NAME

    if not (out / DB_NAME).is_file():
        raise fail(f"no qagen state database in {out} (expected {out / DB_NAME}): run `qagen ingest DOCS --out {out}` "
                   "first", as_json)


@contextmanager
def errors(as_json: bool, *, invalid: str = "") -> Iterator[None]:
    """The one error handler: a ``QagenError`` (or an invalid setting) exits with its code and a clear line.

    ``invalid`` prefixes a ``ValueError`` message (pydantic's, for settings).
    """
    try:
        yield
    except FailFast as alarm:
        if as_json:
            print(json.dumps({"status": "failed", "error": str(alarm), "stage": alarm.stage, "rate": alarm.rate}))
        err.print(f"[red]error:[/red] {alarm.stage} stage: {escape(str(alarm))}", highlight=False)
        err.print("Everything finished so far is kept in the state store; fix the cause and re-run.")
        raise typer.Exit(alarm.exit_code) from None
    except QagenError as exc:
        raise fail(str(exc), as_json, exc.exit_code) from None
    except ValueError as exc:  # settings validation (pydantic), bad values passed to a library call
        raise fail(f"{invalid}{exc}", as_json) from None


def settings_or_exit(make: Callable[[], T], as_json: bool) -> T:
    """Build settings from options and the environment; an invalid value exits 1 naming it."""
    with errors(as_json, invalid="invalid settings: "):
        return make()
    raise AssertionError("unreachable")  # pragma: no cover
