"""The axolotl plugin that stops training when recall plateaus (``qagen/flow/recall.py`` has the rule).

``qagen train`` names it in the rendered config (``plugins: [qagen.flow.recall_plugin.RecallStopPlugin]``) and writes
its settings and question sample to ``recall.json`` in the output folder. It runs inside ``axolotl train``'s process
only: this module imports axolotl and transformers at the top, and nothing in qagen imports it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

from qagen.evaluation.answer import generate_replies
from qagen.evaluation.scoring import f1
from qagen.flow.recall import CURVE, Plateau, RecallPlan

log = logging.getLogger(__name__)


class RecallCallback(TrainerCallback):
    def __init__(self, trainer: object, folder: Path):
        self.trainer, self.folder = trainer, folder
        self.plan = RecallPlan.read(folder)
        self.rule = Plateau(self.plan.patience, self.plan.min_delta, self.plan.target)
        (folder / CURVE).unlink(missing_ok=True)

    def _recall(self) -> float:
        trainer = self.trainer
        model, tokenizer = trainer.model, trainer.processing_class  # type: ignore[attr-defined]
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        was_training = model.training
        model.eval()
        try:
            replies = generate_replies(model, tokenizer, [(s, q) for s, q, _ in self.plan.questions],
                                       self.plan.max_new_tokens, batch=16)
        finally:
            tokenizer.padding_side = side
            if was_training:
                model.train()
        scores = [f1(reply, answer) for reply, (_, _, answer) in zip(replies, self.plan.questions, strict=True)]
        return sum(scores) / max(len(scores), 1)

    def on_step_end(self, args: object, state: object, control: object, **kwargs: object) -> object:
        step = int(state.global_step)  # type: ignore[attr-defined]
        if not self.plan.questions or step % self.plan.every:
            return control
        started = time.perf_counter()
        recall = self._recall()
        stop = self.rule.add(recall)
        line = {"step": step, "recall": round(recall, 4), "seconds": round(time.perf_counter() - started, 1),
                "stop": self.rule.reason if stop else ""}
        with (self.folder / CURVE).open("a") as fh:
            fh.write(json.dumps(line) + "\n")
        print(f"qagen recall check: step {step} recall {recall:.3f}" + (f" -> stop: {self.rule.reason}" if stop else ""),
              flush=True)
        if stop:
            control.should_training_stop = True  # type: ignore[attr-defined]
        return control


class RecallStopPlugin(BasePlugin):
    """Adds :class:`RecallCallback` to axolotl's trainer when the output folder holds a ``recall.json``."""

    def add_callbacks_post_trainer(self, cfg: object, trainer: object) -> list[object]:
        folder = Path(str(cfg.output_dir))  # type: ignore[attr-defined]
        if not (folder / "recall.json").exists():
            return []
        return [RecallCallback(trainer, folder)]
