"""qagen: turn a folder of documents into question/answer fine-tuning data.

The library API is what the CLI wraps, importable from here (lazily, so
``import qagen`` and ``qagen --help`` stay fast)::

    from qagen import ingest, load_settings
    summary = ingest(Path("docs"), Path("qagen-out"), load_settings())

The package reads like the pipeline (imports run one way, down; checked by
``lint-imports``): ``cli`` -> ``flow`` (run, train, notify) -> ``pipeline`` (ingest, executors) /
``review`` / ``evaluation`` (``qagen eval``) -> ``generate`` / ``curate`` / ``output`` ->
``store`` / ``prompting`` -> ``llm`` / ``corpus`` -> ``core`` / ``config``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from qagen.core.version import VERSION as __version__

if TYPE_CHECKING:
    from qagen.config import load_settings
    from qagen.evaluation.evaluate import evaluate
    from qagen.flow.run import run
    from qagen.flow.train import train
    from qagen.output.card import export_hf as export
    from qagen.output.report import write_report
    from qagen.pipeline.ingest import ingest
    from qagen.prompting.prompts import load_prompts

_API = {
    "ingest": ("qagen.pipeline.ingest", "ingest"),
    "run": ("qagen.flow.run", "run"),
    "train": ("qagen.flow.train", "train"),
    "evaluate": ("qagen.evaluation.evaluate", "evaluate"),
    "write_report": ("qagen.output.report", "write_report"),
    "export": ("qagen.output.card", "export_hf"),
    "load_settings": ("qagen.config", "load_settings"),
    "load_prompts": ("qagen.prompting.prompts", "load_prompts"),
}

__all__ = ["__version__", "evaluate", "export", "ingest", "load_prompts", "load_settings", "run", "train",
           "write_report"]


def __getattr__(name: str) -> object:
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'qagen' has no attribute {name!r}") from None
    return getattr(import_module(module), attr)
