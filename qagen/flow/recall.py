"""Training sized by recall: stop when the student's closed-book recall of its own training questions plateaus.

A fixed number of epochs fits one dataset and not the next: 39 pairs trained for 3 epochs (30 steps) scored F1 5.4
on a held-out set and 9.5 after 60 steps, while a dataset ten times larger needs ten times the steps for the same
exposure per pair (issue 26). So ``qagen train`` (``--stop recall``, the default) trains up to a cap (``--epochs``)
and, every ``every`` steps, asks the model a fixed sample of its own training questions closed book (greedy, the
system message it trains with), scores the replies against the training answers (SQuAD token F1), and stops once
that recall has not risen by ``min_delta`` for ``patience`` checks in a row, or has reached ``target``.

This module is the plain part: the sample (hash-picked, so the same train.jsonl gives the same sample), the
schedule, the plateau rule and the curve file; ``qagen/flow/recall_plugin.py`` runs it inside ``axolotl train`` as
a plugin (a Trainer callback).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qagen.core import ids

CONFIG = "recall.json"  # in the adapter folder: the plugin's settings and sample
CURVE = "recall.jsonl"  # in the adapter folder: one line per check
PLUGIN = "qagen.flow.recall_plugin.RecallStopPlugin"


@dataclass(frozen=True)
class RecallSettings:
    sample: int = 64  # training questions asked at each check
    every: int | None = None  # steps between checks (None: half an epoch, at least 10)
    patience: int = 2  # checks without a gain of min_delta before training stops
    min_delta: float = 0.02  # mean token F1
    target: float = 0.98  # recall this high stops at once
    max_new_tokens: int = 48


@dataclass
class RecallPlan:
    """What the plugin reads (``recall.json``): the schedule and the sample."""

    every: int
    patience: int
    min_delta: float
    target: float
    max_new_tokens: int
    questions: list[tuple[str, str, str]] = field(default_factory=list)  # (system, question, answer)

    def write(self, folder: Path) -> Path:
        path = folder / CONFIG
        path.write_text(json.dumps(asdict(self), ensure_ascii=False))
        return path

    @classmethod
    def read(cls, folder: Path) -> RecallPlan:
        data = json.loads((folder / CONFIG).read_text())
        data["questions"] = [tuple(q) for q in data["questions"]]
        return cls(**data)


def sample_questions(train_path: Path, n: int) -> list[tuple[str, str, str]]:
    """``n`` (system, question, answer) rows of train.jsonl, picked by a hash of each row: stable for a dataset."""
    rows: list[tuple[str, tuple[str, str, str]]] = []
    with train_path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                messages = json.loads(line).get("messages") or []
            except (json.JSONDecodeError, AttributeError):
                continue
            by_role = {m.get("role"): str(m.get("content", "")) for m in messages if isinstance(m, dict)}
            if by_role.get("user") and by_role.get("assistant"):
                row = (by_role.get("system", ""), by_role["user"], by_role["assistant"])
                rows.append((ids.hash_str("recall", *row), row))
    rows.sort()
    return [row for _, row in rows[:n]]


def plan(train_path: Path, rows_per_step: int, settings: RecallSettings) -> RecallPlan:
    """The checks for one training run: every half epoch by default (at least every 10 steps)."""
    questions = sample_questions(train_path, settings.sample)
    with train_path.open(encoding="utf-8") as fh:
        rows = sum(1 for line in fh if line.strip())
    every = settings.every or max(10, round(rows / max(rows_per_step, 1) / 2))
    return RecallPlan(every, settings.patience, settings.min_delta, settings.target, settings.max_new_tokens,
                      questions)


@dataclass
class Plateau:
    """The stopping rule over the checks' recall figures."""

    patience: int
    min_delta: float
    target: float
    best: float = -1.0
    stale: int = 0
    reason: str = ""

    def add(self, recall: float) -> bool:
        """Record one check; True when training should stop (and ``reason`` says why)."""
        if recall >= self.target:
            self.reason = f"recall {recall:.3f} reached {self.target}"
            return True
        if recall >= self.best + self.min_delta:
            self.best, self.stale = recall, 0
            return False
        self.best = max(self.best, recall)
        self.stale += 1
        if self.stale >= self.patience:
            self.reason = f"recall plateaued at {self.best:.3f} ({self.stale} checks without +{self.min_delta})"
            return True
        return False


def read_curve(folder: Path) -> list[dict[str, object]]:
    """The checks a training run made (step, recall, stop), as the plugin wrote them."""
    path = folder / CURVE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
