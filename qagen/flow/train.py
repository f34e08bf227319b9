"""``qagen train``: render an axolotl config, validate it, and run ``axolotl train`` as a subprocess.

Templates live in ``axolotl_configs/`` (Jinja, StrictUndefined). Each rendered
config is checked twice before anything is launched:

1. by axolotl itself (``axolotl.utils.config.validate_config``, no GPU needed);
2. by us, for keys axolotl does not know: its dataset entries silently ignore a
   misspelled key (``feild_messages``), so training would run on the wrong field.

axolotl runs in its own process (``axolotl train CONFIG --launcher ...``): a
crash there never takes qagen's state with it, and its whole output goes to a
log file while we show steps, loss and ETA.

``--recipe cpt+sft`` trains twice, in order: continued pretraining on ``OUT/cpt.jsonl`` (a ``*-cpt`` template,
every weight), then the SFT template on ``train.jsonl`` with stage 1's folder as its base model. Each stage
is reused when its data and config trained before, so a re-run after a failed stage 2 starts at stage 2.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import jinja2
import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from qagen.core import ids
from qagen.core.errors import StageError
from qagen.flow.sizing import batch_shape, sized_sequence_len

if TYPE_CHECKING:
    from qagen.store import Store

log = logging.getLogger(__name__)

INSTALL_HINT = 'qagen setup --train   (axolotl 0.19.0 with the CPU build of torch==2.13.0; minutes, about 4 GB)'
EMBEDDED_TEMPLATE = "smollm2-cpu-lora"
CPU_TEMPLATE_PREFIX = "smollm2-cpu-"
DEFAULT_BASE_MODEL = "mistralai/Mistral-7B-Instruct-v0.3"
# cpt+sft: stage 1 trains on this file with one of these templates (CPU beside a CPU SFT template, else GPU),
# recorded as its own stage, so `qagen eval` (the last "train" run) finds stage 2's model.
CPT_DATA = "cpt.jsonl"
CPT_TEMPLATES = {True: "smollm2-cpu-cpt", False: "mistral-7b-cpt"}
CPT_STAGE = "train_cpt"
# Keys every dataset entry of ours may use. Checked against axolotl's own dataset
# schema too (see unknown_keys); this list is what our templates rely on.
LOG_TAIL_LINES = 40


class TrainError(StageError):
    """Training cannot start or did not finish; the message says why (with the log tail)."""


class TrainSettings(BaseSettings):
    """``qagen train`` options: flags > ``QAGEN_TRAIN_*`` environment > defaults."""

    model_config = SettingsConfigDict(env_prefix="QAGEN_TRAIN_", extra="ignore")

    template: str = EMBEDDED_TEMPLATE  # a name in axolotl_configs/ or a path to a .yml template
    base_model: str | None = None  # default: the converted embedded model, or Mistral-7B-Instruct for the GPU ones
    launcher: Literal["accelerate", "torchrun", "python"] = "accelerate"
    launcher_args: list[str] = Field(default_factory=list)  # after `--`, e.g. torchrun --nnodes/--rdzv-endpoint
    # Training length is sized from the dataset: epochs over train.jsonl (each pair seen this many times);
    # max_steps caps it (a CI smoke test, a time budget).
    epochs: float = Field(default=3.0, gt=0, le=100)
    max_steps: int | None = Field(default=None, ge=1)
    seed: int = Field(default=42, ge=0)  # the training seed (on a 135M student it alone moved F1 by ~2 points)
    sequence_len: int | None = Field(default=None, ge=64)
    chat_template: str = "tokenizer_default"
    # "sft": fine-tune on OUT/train.jsonl. "cpt+sft": first continued pretraining on OUT/cpt.jsonl (`qagen ingest
    # --cpt`: the chunks and their rewrites) with cpt_template, then `template` on train.jsonl from that model.
    recipe: Literal["sft", "cpt+sft"] = "sft"
    cpt_template: str | None = None  # default: smollm2-cpu-cpt beside a CPU template, else mistral-7b-cpt
    # CPU threads for torch (training and eval). Measured on the 2-core box under load: a 4x576x1536 matmul
    # takes 0.43 ms on 1 thread and 11 ms on 2 (OpenMP threads wait on each other while other work holds
    # a core), so one core is kept free, as for the embedded server.
    threads: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 2) - 1), ge=1)


def load_train_settings(**overrides: object) -> TrainSettings:
    return TrainSettings(**{k: v for k, v in overrides.items() if v is not None})


@dataclass
class TrainSummary:
    status: str = "ok"  # ok | failed | interrupted
    template: str = ""
    base_model: str = ""
    config_path: str = ""
    log_path: str = ""
    adapter_dir: str = ""
    dataset_key: str = ""
    steps: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    cached: bool = False  # this exact dataset + config was trained before; nothing ran
    recipe: str = "sft"  # sft | cpt+sft
    cpt: dict[str, object] = field(default_factory=dict)  # cpt+sft: stage 1's summary (this one is stage 2's)

    def loss_curve(self, points: int = 6) -> str:
        """A short text summary of the loss curve: first, a few points between, last, min."""
        if not self.losses:
            return "no loss logged"
        picks = sorted({round(i * (len(self.losses) - 1) / max(points - 1, 1)) for i in range(points)})
        curve = " -> ".join(f"{self.losses[i][1]:.3f}@{self.losses[i][0]}" for i in picks)
        return f"{curve} (min {min(v for _, v in self.losses):.3f})"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# --- templates ---------------------------------------------------------------
def templates_dir() -> Path:
    """Templates shipped in the wheel (``qagen/_axolotl_configs``) or, from a source tree, ``axolotl_configs/``."""
    packaged = resources.files("qagen").joinpath("_axolotl_configs")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "axolotl_configs"


def template_names() -> list[str]:
    return sorted(p.stem for p in templates_dir().glob("*.yml"))


def template_path(name: str) -> Path:
    given = Path(name)
    if given.suffix in (".yml", ".yaml") and given.exists():
        return given
    path = templates_dir() / f"{name}.yml"
    if not path.exists():
        raise TrainError(f"no axolotl template {name!r}; choose one of {', '.join(template_names())} or give a .yml path")
    return path


def render(template: Path, context: dict[str, object]) -> dict[str, object]:
    """Render a template. Values go in as JSON, which is valid YAML: paths with ':' or '#' stay intact."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    try:
        text = env.from_string(template.read_text()).render({k: json.dumps(v) for k, v in context.items()})
        cfg = yaml.safe_load(text)
    except (jinja2.TemplateError, yaml.YAMLError) as exc:
        raise TrainError(f"cannot render {template}: {exc}") from None
    if not isinstance(cfg, dict):
        raise TrainError(f"{template} does not render to a YAML mapping")
    return cfg


# --- validation --------------------------------------------------------------
def _axolotl_schema() -> tuple[set[str], set[str]]:
    """Top-level keys and dataset-entry keys that axolotl 0.19's pydantic schema knows."""
    logging.getLogger("torchao").setLevel(logging.ERROR)  # its optional CUDA kernels fail to load on CPU: noise
    try:
        from axolotl.utils.schemas.config import AxolotlInputConfig
        from axolotl.utils.schemas.datasets import (
            DPODataset,
            KTODataset,
            PretrainingDataset,
            SFTDataset,
            StepwiseSupervisedDataset,
        )
    except ImportError as exc:
        raise TrainError(f"axolotl is not installed ({exc.name}): {INSTALL_HINT}") from None
    top: set[str] = set()
    for name, info in AxolotlInputConfig.model_fields.items():
        top.add(name)
        if info.alias:
            top.add(info.alias)
    dataset: set[str] = set()
    for model in (SFTDataset, DPODataset, KTODataset, PretrainingDataset, StepwiseSupervisedDataset):
        dataset.update(model.model_fields)
    return top, dataset


def unknown_keys(cfg: dict[str, object]) -> list[str]:
    """Keys axolotl would silently ignore: at the top level and in each dataset entry."""
    top, dataset = _axolotl_schema()
    problems = [f"unknown top-level key {k!r}" for k in cfg if k not in top]
    for section in ("datasets", "test_datasets"):
        for i, entry in enumerate(cfg.get(section) or []):  # type: ignore[union-attr]
            if isinstance(entry, dict):
                problems += [f"unknown key {k!r} in {section}[{i}]" for k in entry if k not in dataset]
    return problems


def validate(cfg: dict[str, object]) -> dict[str, object]:
    """Our key check, then axolotl's own validation (pydantic; runs without a GPU). Returns axolotl's view."""
    problems = unknown_keys(cfg)
    if problems:
        raise TrainError("the axolotl config has keys axolotl would ignore: " + "; ".join(problems))
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault
    from pydantic import ValidationError

    try:
        checked = validate_config(DictDefault(cfg))
    except (ValidationError, ValueError) as exc:
        raise TrainError(f"axolotl rejected the config: {exc}") from None
    return dict(checked)


# --- launching ---------------------------------------------------------------
LOSS = re.compile(r"""['"]loss['"]:\s*['"]?([0-9.eE+-]+)""")
STEP = re.compile(r"(\d+)/(\d+) \[([0-9:]+)<([0-9:?]+)")


class TrainProgress:
    """What the CLI shows: steps of total, the last loss, and axolotl's ETA."""

    def update(self, step: int, total: int, loss: float | None, eta: str) -> None: ...

    def stage(self, name: str, detail: str) -> None: ...


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


def launch(config_path: Path, log_path: Path, settings: TrainSettings, on_line: Callable[[str], None]) -> int:
    """Run ``axolotl train`` with all output going to ``log_path``; each line also goes to ``on_line``."""
    axolotl = shutil.which("axolotl", path=child_env()["PATH"])
    if axolotl is None:
        raise TrainError(f"the `axolotl` command is not installed: {INSTALL_HINT}")
    args = [axolotl, "train", str(config_path), "--launcher", settings.launcher]
    if settings.launcher_args:
        args += ["--", *settings.launcher_args]
    with log_path.open("wb") as logf:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(settings.threads),
                                start_new_session=True)
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


# --- the command -------------------------------------------------------------
def is_trained(output_dir: Path) -> bool:
    """A finished run left a LoRA adapter, or (full fine-tuning) a whole model's config and weights."""
    if (output_dir / "adapter_config.json").exists():
        return True
    return (output_dir / "config.json").exists() and any(output_dir.glob("*.safetensors"))


def dataset_key(train_path: Path, cfg: dict[str, object]) -> str:
    """What a trained adapter depends on: the dataset bytes and the rendered config."""
    return ids.hash_json({"data": ids.hash_json(train_path.read_text()), "config": cfg})


def _dataset(out_dir: Path, name: str) -> Path:
    path = out_dir / name
    if not path.exists() or path.stat().st_size == 0:
        if name == CPT_DATA:
            raise TrainError(f"--recipe cpt+sft trains on {path}, which is missing or empty: run `qagen ingest DOCS "
                             f"--out {out_dir} --cpt` first")
        raise TrainError(f"no dataset in {out_dir}: run `qagen ingest DOCS --out {out_dir}` first")
    return path


def cpt_template(settings: TrainSettings) -> str:
    """Stage 1's template: ``--cpt-template``, else the CPU one beside a CPU SFT template, else the GPU one."""
    if settings.cpt_template:
        return settings.cpt_template
    return CPT_TEMPLATES[template_path(settings.template).stem.startswith(CPU_TEMPLATE_PREFIX)]


def prepare(out_dir: Path, settings: TrainSettings, *, template: str | None = None, data: str = "train.jsonl",
            base_model: str | None = None, folder_prefix: str = "") -> tuple[dict[str, object], str, Path]:
    """Render and validate the config for OUT's dataset. Returns (config, key, adapter folder).

    By default the SFT stage: ``settings.template`` on train.jsonl. Stage 1 of ``cpt+sft`` passes its own
    template and ``cpt.jsonl``; stage 2 passes stage 1's folder as ``base_model``.
    """
    train_path = _dataset(out_dir, data)
    template_file = template_path(template or settings.template)
    embedded = template_file.stem.startswith(CPU_TEMPLATE_PREFIX)  # the embedded SmolLM2 recipes (LoRA, full, cpt)
    base_model = base_model or settings.base_model
    if base_model is None:
        if embedded:
            from qagen.flow.hfmodel import ModelError, ensure_hf_model

            try:
                base_model = str(ensure_hf_model(out_dir / "models" / "smollm2-135m-instruct"))
            except ModelError as exc:
                raise TrainError(str(exc)) from None
        else:
            base_model = DEFAULT_BASE_MODEL
    sequence_len = settings.sequence_len or sized_sequence_len(train_path, embedded)
    micro_batch, accumulate = batch_shape(sequence_len)
    context = {
        "base_model": base_model,
        "train_path": str(train_path.resolve()),
        "eval_path": str((out_dir / "eval.jsonl").resolve()),
        "prepared_path": str((out_dir / "adapters" / "prepared").resolve()),
        "output_dir": "",  # filled below, once the key is known
        "sequence_len": sequence_len,
        "micro_batch_size": micro_batch,
        "gradient_accumulation_steps": accumulate,
        "max_steps": settings.max_steps,
        "num_epochs": settings.epochs,
        "seed": settings.seed,
        "chat_template": settings.chat_template,
    }
    cfg = render(template_file, context)
    key = dataset_key(train_path, cfg)
    adapter_dir = (out_dir / "adapters" / f"{folder_prefix}{key[:12]}").resolve()
    cfg["output_dir"] = str(adapter_dir)
    validate(cfg)
    return cfg, key, adapter_dir


def train(
    out_dir: Path,
    settings: TrainSettings,
    store: object,
    *,
    progress: TrainProgress | None = None,
    force: bool = False,
) -> TrainSummary:
    """Train on OUT/train.jsonl (``--recipe cpt+sft``: on OUT/cpt.jsonl first); a finished identical run (same
    data + config) is reused, stage by stage."""
    from qagen.store import Store

    assert isinstance(store, Store)
    progress = progress or TrainProgress()
    if settings.recipe == "sft":
        cfg, key, adapter_dir = prepare(out_dir, settings)
        return _run_stage(out_dir, settings, store, "train", settings.template, cfg, key, adapter_dir, progress, force)
    # cpt+sft. Continued pretraining on the chunks and their rewrites, then the SFT template on the QA pairs from
    # that model (EntiGraph, arXiv 2409.07431; Augmentoolkit: raw chunks and representation variations, then QA).
    # Both configs are checked before anything trains; stage 2's key holds stage 1's folder (and so its key).
    _dataset(out_dir, "train.jsonl")
    _dataset(out_dir, CPT_DATA)
    first_template = cpt_template(settings)
    cpt_cfg, cpt_key, cpt_dir = prepare(out_dir, settings, template=first_template, data=CPT_DATA,
                                        folder_prefix="cpt-")
    cfg, key, adapter_dir = prepare(out_dir, settings, base_model=str(cpt_dir))
    progress.stage("train", f"stage 1 of 2: continued pretraining on {CPT_DATA} ({first_template})")
    first = _run_stage(out_dir, settings, store, CPT_STAGE, first_template, cpt_cfg, cpt_key, cpt_dir, progress, force)
    progress.stage("train", f"stage 2 of 2: {settings.template} on train.jsonl from the stage 1 model")
    second = _run_stage(out_dir, settings, store, "train", settings.template, cfg, key, adapter_dir, progress, force,
                        cpt=first.to_dict())
    second.cpt = first.to_dict()  # as this run found it (trained now or reused)
    return second


def _run_stage(out_dir: Path, settings: TrainSettings, store: Store, stage: str, template: str,
               cfg: dict[str, object], key: str, adapter_dir: Path, progress: TrainProgress, force: bool,
               cpt: dict[str, object] | None = None) -> TrainSummary:
    """One ``axolotl train`` (``stage``: "train", or "train_cpt" for stage 1 of cpt+sft), unless the store says
    this key finished and its folder holds the result. Recorded as a run and a stage of that name."""
    started = time.perf_counter()
    summary = TrainSummary(template=template, base_model=str(cfg["base_model"]), dataset_key=key,
                           adapter_dir=str(adapter_dir), config_path=str(adapter_dir / "axolotl.yml"),
                           log_path=str(adapter_dir / "train.log"), recipe=settings.recipe, cpt=cpt or {})
    done = store.stage_result(stage, key)
    if done is not None and not force and is_trained(adapter_dir):
        cached = TrainSummary(**{**done, "losses": [tuple(p) for p in done.get("losses", [])]})  # type: ignore[arg-type]
        cached.cached = True
        return cached
    run_id = store.start_run(stage, {**settings.model_dump(), "out": str(out_dir), "adapter_dir": str(adapter_dir)})
    adapter_dir.mkdir(parents=True, exist_ok=True)
    Path(summary.config_path).write_text(yaml.safe_dump(cfg, sort_keys=False))

    bar = {"total": 0, "eta": ""}

    def on_line(line: str) -> None:
        # HF Trainer logs a dict with 'loss' after each logging step; tqdm's bar gives step/total and ETA.
        if m := LOSS.search(line):
            summary.losses.append((summary.steps, float(m.group(1))))
            progress.update(summary.steps, int(bar["total"]), summary.losses[-1][1], str(bar["eta"]))
        elif (m := STEP.search(line)) and int(m.group(1)) > 0:
            step, total = int(m.group(1)), int(m.group(2))
            if total >= (int(cfg.get("max_steps") or 0) or total):  # the training bar, not a dataset map() bar
                summary.steps, bar["total"], bar["eta"] = step, total, m.group(4)

    try:
        code = launch(Path(summary.config_path), Path(summary.log_path), settings, on_line)
    except KeyboardInterrupt:
        summary.status, summary.seconds = "interrupted", round(time.perf_counter() - started, 1)
        store.finish_run(run_id, "interrupted", summary.to_dict())
        raise
    summary.seconds = round(time.perf_counter() - started, 1)
    if code != 0 or not is_trained(adapter_dir):
        summary.status = "failed"
        store.finish_run(run_id, "failed", summary.to_dict())
        store.record_stage(run_id, stage, key, "failed", summary.to_dict())
        why = f"exit code {code}" if code != 0 else "no adapter was written"
        raise TrainError(f"axolotl train failed ({why}); full log: {summary.log_path}\n--- last lines ---\n"
                         f"{tail(Path(summary.log_path))}")
    store.finish_run(run_id, "ok", summary.to_dict())
    store.record_stage(run_id, stage, key, "done", summary.to_dict())
    return summary
