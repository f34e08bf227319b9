"""The sequence length and batch shape ``qagen train`` renders into the CPU templates."""

from __future__ import annotations

import json
from pathlib import Path

# The templates' sequence length when --sequence-len is not given (axolotl drops longer rows): QA pairs are short.
# Open-book rows (`qagen ingest --contextual-share`) hold one to three chunks, so a train.jsonl with any is sized to
# its longest row instead (characters / 3 as tokens, plus room for the chat template), within the cap.
SEQUENCE_LEN = {True: 512, False: 2048}  # embedded CPU templates | the rest
SEQUENCE_CAP = {True: 2048, False: 4096}


def sized_sequence_len(train_path: Path, embedded: bool) -> int:
    """The default sequence length, or, where train.jsonl holds open-book rows, one that fits its longest row."""
    longest = 0
    with train_path.open(encoding="utf-8") as fh:
        for line in fh:
            if '"contextual"' not in line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # axolotl's preprocess reports a bad row; sizing is not the place
            if not isinstance(row, dict) or not row.get("contextual"):
                continue
            chars = sum(len(str(m.get("content", ""))) for m in row.get("messages", []) if isinstance(m, dict))
            longest = max(longest, chars // 3 + 64)
    default = SEQUENCE_LEN[embedded]
    if longest <= default:
        return default
    return min(SEQUENCE_CAP[embedded], -(-longest // 256) * 256)


ROWS_PER_STEP = 4  # the CPU templates' batch: 4 rows per optimizer step


def batch_shape(sequence_len: int) -> tuple[int, int]:
    """(micro_batch_size, gradient_accumulation_steps) for the CPU templates: 4 x 1 for short rows; past 512 tokens
    1 x 4, the same 4 rows per step with a quarter of the activations (and no padding to the longest of 4).
    Full fine-tuning 4 rows of up to 2048 tokens at once used over 20 GB (killed by the OOM killer on 24 GB)."""
    return (ROWS_PER_STEP, 1) if sequence_len <= SEQUENCE_LEN[True] else (1, ROWS_PER_STEP)
