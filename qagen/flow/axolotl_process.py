"""``axolotl train`` as a child process: its environment, its own process group, its output to a log file.

axolotl runs in its own process (``axolotl train CONFIG --launcher ...``): a crash there never takes qagen's state
with it. Its process group is recorded beside the log (``.trainer.pid``), so a run resumed after qagen was killed
stops the trainer it left behind before starting another into the same folder; an interrupted qagen stops the
group politely (SIGINT, then SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from qagen.flow.axolotl_config import INSTALL_HINT, TrainError

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40


class LaunchSettings(Protocol):
    """What a launch needs of ``TrainSettings``."""

    @property
    def launcher(self) -> str: ...

    @property
    def launcher_args(self) -> list[str]: ...

    @property
    def threads(self) -> int: ...


def child_env(threads: int | None = None) -> dict[str, str]:
    """The environment for ``axolotl train``.

    Trap: ``axolotl train`` starts ``accelerate`` (or ``torchrun``) from PATH, so
    the venv's bin goes first even when qagen was started without activating it.
    No hub here: everything offline, no telemetry.
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1",
               DO_NOT_TRACK="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    if threads and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


TRAINER_PID = ".trainer.pid"  # the running trainer's process group, beside its log


def launch(config_path: Path, log_path: Path, settings: LaunchSettings, on_line: Callable[[str], None]) -> int:
    """Run ``axolotl train`` with all output going to ``log_path``; each line also goes to ``on_line``."""
    axolotl = shutil.which("axolotl", path=child_env()["PATH"])
    if axolotl is None:
        raise TrainError(f"the `axolotl` command is not installed: {INSTALL_HINT}")
    args = [axolotl, "train", str(config_path), "--launcher", settings.launcher]
    if settings.launcher_args:
        args += ["--", *settings.launcher_args]
    pidfile = log_path.parent / TRAINER_PID
    reap_orphan(pidfile)
    with log_path.open("wb") as logf:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(settings.threads),
                                start_new_session=True)
        pidfile.write_text(str(proc.pid))  # its own process group: a kill -9 of qagen leaves it running
        assert proc.stdout is not None
        try:
            buffer = b""
            while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
                logf.write(chunk)
                logf.flush()
                buffer += chunk
                *lines, buffer = re.split(rb"[\r\n]", buffer)  # tqdm redraws with \r
                for line in lines:
                    if line.strip():
                        on_line(line.decode(errors="replace"))
            return proc.wait()
        except BaseException:
            _stop(proc)
            raise
        finally:
            if proc.poll() is not None:
                pidfile.unlink(missing_ok=True)


def reap_orphan(pidfile: Path) -> None:
    """Stop the trainer a killed qagen left behind in this folder (we hold OUT's lock, so no live qagen owns it),
    so that the resumed run does not train beside it into the same folder."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        pidfile.unlink(missing_ok=True)
        return
    if b"axolotl" in cmdline or b"accelerate" in cmdline:
        log.warning("stopping the trainer (process group %d) that a killed run left behind", pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.2)
    pidfile.unlink(missing_ok=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the whole launcher group (accelerate + its workers), politely first."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    kept = [line for line in re.split(r"[\r\n]", text) if line.strip()]
    return "\n".join(kept[-lines:])
