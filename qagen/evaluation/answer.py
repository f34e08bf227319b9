"""Closed-book answers from a local model: the base model, a LoRA adapter on it, or a fully fine-tuned model.

Closed book: the model sees a system message (the one it was trained with,
which names the document) and the question, never the passage. Greedy
decoding, so the same model and question give the same answer. CPU is fine
(transformers + peft, the train extra).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qagen.core.errors import StageError
from qagen.llm.hfmodel import INSTALL_HINT, is_adapter

MAX_NEW_TOKENS = 64  # answers to held-out questions are short; a rambling model is scored as it is


class AnswerError(StageError):
    """The model could not be loaded or asked (the train extra missing, a bad model folder)."""


def _libs() -> tuple[object, object, object, object]:
    try:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise AnswerError(f"evaluating needs the train extra ({exc.name} missing): {INSTALL_HINT}") from None
    return torch, PeftModel, AutoModelForCausalLM, AutoTokenizer


def answer(
    base_model: str,
    prompts: Sequence[tuple[str, str]],
    *,
    tuned: str | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch: int = 8,
    threads: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Greedy answers to (system, question) prompts from ``base_model``, or from ``tuned`` on top of it.

    ``tuned`` is a LoRA adapter folder (loaded over the base with peft) or a full model folder (loaded alone).
    """
    torch, peft_model, auto_model, auto_tokenizer = _libs()
    if threads:
        torch.set_num_threads(threads)  # type: ignore[attr-defined]  # see TrainSettings.threads
    source = base_model if tuned is None or is_adapter(tuned) else tuned
    try:
        tokenizer = auto_tokenizer.from_pretrained(source)  # type: ignore[attr-defined]
        model = auto_model.from_pretrained(source, dtype=torch.float32)  # type: ignore[attr-defined]
        if tuned is not None and is_adapter(tuned):
            model = peft_model.from_pretrained(model, tuned)  # type: ignore[attr-defined]
    except OSError as exc:
        raise AnswerError(f"cannot load the model {tuned or base_model}: {exc}") from None
    tokenizer.padding_side = "left"  # decoder-only batch generation
    model.eval()
    return generate_replies(model, tokenizer, list(prompts), max_new_tokens, batch, on_batch)


def generate_replies(model: object, tokenizer: object, prompts: list[tuple[str, str]], max_new_tokens: int,
                     batch: int, on_batch: Callable[[int, int], None] | None = None) -> list[str]:
    """Greedy replies in the prompts' order. Batches are formed from prompts of similar length (a batch is
    left-padded to its longest prompt, so mixing a 60-token question with a 1,900-token open-book prompt would
    cost the short one the long one's time). Greedy: the same prompts give the same replies; padding in another
    batch can move a logit's last bits, and so, rarely, a token."""
    import torch

    texts = [
        tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            [{"role": "system", "content": system}, {"role": "user", "content": question}],
            tokenize=False, add_generation_prompt=True,
        )
        for system, question in prompts
    ]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch):
        picked = order[start : start + batch]
        enc = tokenizer([texts[i] for i in picked], return_tensors="pt", padding=True,  # type: ignore[operator]
                        add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,  # type: ignore[attr-defined]
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # type: ignore[attr-defined]
        new = out[:, enc["input_ids"].shape[1] :]
        for i, text in zip(picked, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):  # type: ignore[attr-defined]
            answers[i] = text.strip()
        if on_batch is not None:  # (answers done, answers asked): progress for a log
            on_batch(min(start + batch, len(order)), len(order))
    return answers
