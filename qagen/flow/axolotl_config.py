"""axolotl configs: the templates in ``axolotl_configs/``, rendering them, and checking a rendered config twice
before anything is launched (``qagen train``, ``qagen/flow/train.py``):

1. by axolotl itself (``axolotl.utils.config.validate_config``, no GPU needed);
2. by us, for keys axolotl does not know: its dataset entries silently ignore a misspelled key
   (``feild_messages``), so training would run on the wrong field.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

import jinja2
import yaml

from qagen.core.errors import StageError

INSTALL_HINT = 'qagen setup --train   (axolotl 0.19.0 with the CPU build of torch==2.13.0; minutes, about 4 GB)'


class TrainError(StageError):
    """Training cannot start or did not finish; the message says why (with the log tail)."""


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
