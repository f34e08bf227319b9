"""The sequence length ``qagen train`` renders into its template when ``--sequence-len`` is not given."""

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
