"""``qagen train``: render an axolotl config, validate it, and run ``axolotl train`` as a subprocess.

Templates live in ``axolotl_configs/`` (Jinja, StrictUndefined). Each rendered
config is checked twice before anything is launched:

1. by axolotl itself (``axolotl.utils.config.validate_config``, no GPU needed);
2. by us, for keys axolotl does not know: its dataset entries silently ignore a
   misspelled key (``feild_messages``), so training would run on the wrong field.

axolotl runs in its own process (``axolotl train CONFIG --launcher ...``, ``qagen/flow/axolotl_process.py``):
a crash there never takes qagen's state with it, and its whole output goes to a
log file while we show steps, loss and ETA.

``--recipe cpt+sft`` trains twice, in order: continued pretraining on ``OUT/cpt.jsonl`` (a ``*-cpt`` template,
every weight), then the SFT template on ``train.jsonl`` with stage 1's folder as its base model. Each stage
is reused when its data and config trained before, so a re-run after a failed stage 2 starts at stage 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from qagen.core import ids
from qagen.flow import recall
from qagen.flow.axolotl_config import TrainError, render, template_path, validate
from qagen.flow.axolotl_process import launch, tail
from qagen.flow.sizing import batch_shape, sized_sequence_len
from qagen.llm.hfmodel import is_trained
from qagen.output.cpt import TEXT_ROWS

if TYPE_CHECKING:
    from qagen.store import Store

EMBEDDED_TEMPLATE = "smollm2-cpu-lora"
CPU_TEMPLATE_PREFIX = "smollm2-cpu-"
DEFAULT_BASE_MODEL = "mistralai/Mistral-7B-Instruct-v0.3"
# cpt+sft: stage 1 trains on this file with one of these templates (CPU beside a CPU SFT template, else GPU),
# recorded as its own stage, so `qagen eval` (the last "train" run) finds stage 2's model.
CPT_DATA = "cpt.jsonl"
CPT_TEMPLATES = {True: "smollm2-cpu-cpt", False: "mistral-7b-cpt"}
CPT_STAGE = "train_cpt"


class TrainSettings(BaseSettings):
    """``qagen train`` options: flags > ``QAGEN_TRAIN_*`` environment > defaults."""

    model_config = SettingsConfigDict(env_prefix="QAGEN_TRAIN_", extra="ignore")

    template: str = EMBEDDED_TEMPLATE  # a name in axolotl_configs/ or a path to a .yml template
    base_model: str | None = None  # default: the converted embedded model, or Mistral-7B-Instruct for the GPU ones
    launcher: Literal["accelerate", "torchrun", "python"] = "accelerate"
    launcher_args: list[str] = Field(default_factory=list)  # after `--`, e.g. torchrun --nnodes/--rdzv-endpoint
    # Training length. "recall" (the default): train until the student's closed-book recall of a sample of its own
    # training questions plateaus (qagen/flow/recall.py), at most ``epochs`` epochs; "epochs": exactly ``epochs``.
    # max_steps caps either (a CI smoke test, a time budget).
    stop: Literal["recall", "epochs"] = "recall"
    epochs: float = Field(default=10.0, gt=0, le=100)
    max_steps: int | None = Field(default=None, ge=1)
    recall_sample: int = Field(default=64, ge=1, le=4096)  # training questions asked at each recall check
    recall_every: int | None = Field(default=None, ge=1)  # steps between checks (default: half an epoch, >= 10)
    recall_patience: int = Field(default=2, ge=1, le=100)  # checks without a gain before stopping
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
    stop: str = ""  # why training ended: "recall plateaued at ...", "the epoch cap", "max steps"
    recall: list[dict[str, object]] = field(default_factory=list)  # the recall checks (step, recall), --stop recall
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


# --- launching ---------------------------------------------------------------
LOSS = re.compile(r"""['"]loss['"]:\s*['"]?([0-9.eE+-]+)""")
STEP = re.compile(r"(\d+)/(\d+) \[([0-9:]+)<([0-9:?]+)")


class TrainProgress:
    """What the CLI shows: steps of total, the last loss, and axolotl's ETA."""

    def update(self, step: int, total: int, loss: float | None, eta: str) -> None: ...

    def stage(self, name: str, detail: str) -> None: ...


# --- the command -------------------------------------------------------------
def dataset_key(train_path: Path, cfg: dict[str, object], extra: dict[str, object] | None = None) -> str:
    """What a trained adapter depends on: the dataset bytes, the rendered config, and ``extra`` (the text rows'
    bytes, the recall plan)."""
    return ids.hash_json({"data": ids.hash_json(train_path.read_text()), "config": cfg, **(extra or {})})


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
            from qagen.llm.hfmodel import ModelError, ensure_hf_model

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
    extra: dict[str, object] = {}
    text_path = out_dir / TEXT_ROWS
    if data == "train.jsonl" and text_path.exists() and text_path.stat().st_size:
        # `qagen ingest --text-rows`: the documents' own text as completion rows, in the same run as the pairs
        cfg.setdefault("datasets", []).append(  # type: ignore[union-attr]
            {"path": str(text_path.resolve()), "ds_type": "json", "type": "completion", "field": "text"})
        extra["text_rows"] = ids.hash_json(text_path.read_text())
    plan = None
    if settings.stop == "recall" and data == "train.jsonl":
        cfg["plugins"] = [*cfg.get("plugins", []), recall.PLUGIN]  # type: ignore[misc]
        rows_per_step = micro_batch * accumulate
        plan = recall.plan(train_path, rows_per_step, recall.RecallSettings(
            sample=settings.recall_sample, every=settings.recall_every, patience=settings.recall_patience))
        extra["recall"] = ids.hash_json(dataclasses.asdict(plan))
    key = dataset_key(train_path, cfg, extra)
    adapter_dir = (out_dir / "adapters" / f"{folder_prefix}{key[:12]}").resolve()
    cfg["output_dir"] = str(adapter_dir)
    validate(cfg)
    if plan is not None:
        adapter_dir.mkdir(parents=True, exist_ok=True)
        plan.write(adapter_dir)
    return cfg, key, adapter_dir


def last_ingest_problem(store: object) -> str | None:
    """Why OUT's dataset should not be trained on yet (its last ingest did not finish ok), or None."""
    from qagen.store import Store

    assert isinstance(store, Store)
    last = store.last_status("ingest")
    if last is None or last[0] == "ok":
        return None
    status, error = last
    what = {"running": "has not finished", "killed": "was killed (or ran out of disk space) before it finished",
            "partial": "finished only in part"}.get(status, status)
    return f"the last `qagen ingest` of this folder {what}" + (f" ({error})" if error else "")


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
    summary.recall = recall.read_curve(adapter_dir)
    last = summary.recall[-1] if summary.recall else {}
    summary.stop = str(last.get("stop") or "") or (
        "max steps" if settings.max_steps and summary.steps >= settings.max_steps else "the epoch cap")
    store.finish_run(run_id, "ok", summary.to_dict())
    store.record_stage(run_id, stage, key, "done", summary.to_dict())
    return summary
