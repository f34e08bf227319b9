"""The test lanes: CI (QAGEN_CI=1) fails when a test it installs everything for is skipped, instead of passing
quietly with the browser, the embedded model or axolotl missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = '''
import pytest

def test_needs_the_browser():
    pytest.skip("Chromium and chromedriver are not installed")

def test_needs_a_gpu():
    pytest.skip("this machine has no GPU")
'''


def _run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "QAGEN_CI"}
    if ci:
        env["QAGEN_CI"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "--rootdir", str(tmp_path),
                           "-c", os.devnull, str(probe)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_ci_fails_on_a_skip_it_does_not_expect(tmp_path: Path):
    strict = _run(tmp_path, ci=True)
    assert strict.returncode == 1, strict.stdout
    assert "1 failed, 1 skipped" in strict.stdout and "CI expects this test to run" in strict.stdout
    local = _run(tmp_path, ci=False)  # on a developer's machine a missing browser is a skip
    assert local.returncode == 0 and "2 skipped" in local.stdout
