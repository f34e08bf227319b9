"""``qagen export OUT --format FMT``: the exported pairs in the prompt formats axolotl loads (bagel's recipe).

Reads ``OUT/train.jsonl`` and ``OUT/eval.jsonl`` (rows of ``messages`` = system, user, assistant, plus
provenance), so it works on any qagen output folder, and writes ``OUT/formats/train.FMT.jsonl``,
``OUT/formats/eval.FMT.jsonl`` and ``OUT/formats/FMT.axolotl.yml`` (the ``datasets:`` stanza that loads
them). Every row keeps its provenance fields (pair_id, doc_id, chunk_id, group_id, perspective, source...).

=========  ==================================================  =============================================
format     row                                                 axolotl ``type``
=========  ==================================================  =============================================
messages   ``messages`` [{role, content}] (train.jsonl as is)  ``chat_template``
sharegpt   ``conversations`` [{from, value}]                   ``chat_template`` + field_messages/mappings
alpaca     ``instruction``, ``input``, ``output``, ``system``  ``alpaca`` (its own preamble; ``system`` kept)
vicuna     ``prompt`` (rendered), ``response``                 user-defined: ``{instruction}`` = prompt
chatml     ``prompt`` (rendered), ``response``                 user-defined
llama2     ``prompt`` (rendered), ``response``                 user-defined
all        the four rendered formats, each pair once in each   user-defined (one stanza for the whole mix)
=========  ==================================================  =============================================

axolotl 0.19 rejects ``type: sharegpt`` (a chat_template with ``from``/``value`` mappings reads it). The
rendered formats go through axolotl's user-defined prompt type with ``format: "{instruction}"``: the prompt is
masked (not trained on, as bagel does) and the tokenizer's own end-of-sequence token is appended to the
response, which a ``type: completion`` text could do only by training on the prompt too.

``all`` is bagel's mix: every pair in alpaca, vicuna, chatml and llama2, the pair's system message kept in
each (bagel puts it in alpaca's instruction). Where a pair has no system message bagel flips a coin on a
default one; here the coin is a hash of the pair id and the format, so the file is the same on every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qagen.core import ids
from qagen.core.errors import InputError
from qagen.output.atomic import atomic_writer

FORMATS = ("messages", "alpaca", "vicuna", "chatml", "llama2", "sharegpt", "all")
MIX = ("alpaca", "vicuna", "chatml", "llama2")  # bagel's four prompt formats, in the order `all` writes them
SPLITS = ("train", "eval")
FOLDER = "formats"

ALPACA_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
# bagel's defaults say "unbiased, uncensored"; a document QA set has no use for that wording.
DEFAULT_SYSTEM = "You are a helpful assistant."
DEFAULT_VICUNA_SYSTEM = "A chat between a user and a helpful assistant."
DEFAULT_SYSTEM_SHARE = 0.5  # bagel: random.random() <= 0.5


class FormatError(InputError):
    """An unknown format, or a dataset row that is not system/user/assistant messages."""


@dataclass(frozen=True)
class Turns:
    """One exported pair: its system message (None when the row has none), question and answer."""

    system: str | None
    question: str
    answer: str


@dataclass(frozen=True)
class FormatsResult:
    fmt: str
    paths: dict[str, Path]  # split -> written file (eval only when OUT/eval.jsonl exists)
    rows: dict[str, int]  # split -> rows written
    stanza_path: Path
    stanza: str


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise FormatError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def turns(row: dict[str, object], where: str = "row") -> Turns:
    """The system, user and assistant turns of a train.jsonl row (one question and its answer)."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise FormatError(f"{where}: no `messages` list of {{role, content}} (not a qagen train.jsonl row)")
    roles = [m.get("role") for m in messages]
    if roles not in (["system", "user", "assistant"], ["user", "assistant"]):
        raise FormatError(f"{where}: messages must be [system,] user, assistant; found {roles}")
    text = [str(m.get("content", "")) for m in messages]
    return Turns(text[0] if len(text) == 3 else None, text[-2], text[-1])


def provenance(row: dict[str, object]) -> dict[str, object]:
    """Everything a row carries besides its messages (pair_id, doc_id, chunk_id, ..., judge scores)."""
    return {k: v for k, v in row.items() if k != "messages"}


# --- rendering --------------------------------------------------------------
def render_prompt(fmt: str, system: str | None, question: str) -> str:
    """The prompt text of a rendered format, up to where the answer starts."""
    if fmt == "chatml":
        head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
        return f"{head}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    if fmt == "llama2":
        head = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if system else ""
        return f"[INST] {head}{question} [/INST]"
    if fmt == "vicuna":
        head = f"{system}\n" if system else ""
        return f"{head}USER: {question}\nASSISTANT:"
    if fmt == "alpaca":  # bagel's alpaca: no "### Input:" block, the system message opens the instruction
        head = f"{system}\n" if system else ""
        return f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{head}{question}\n\n### Response:\n"
    raise FormatError(f"{fmt!r} is not a rendered prompt format ({', '.join(MIX)})")


def render_response(fmt: str, answer: str) -> str:
    """The trained part; the tokenizer's end-of-sequence token follows it (axolotl appends it)."""
    return f"{answer}<|im_end|>" if fmt == "chatml" else answer


def mix_system(pair_id: str, fmt: str, system: str | None) -> str | None:
    """The system message a pair gets in the `all` mix: its own, else a default for half the pairs (by hash)."""
    if system:
        return system
    if int(ids.hash_str("format-system", pair_id, fmt)[:8], 16) / 0x1_0000_0000 < DEFAULT_SYSTEM_SHARE:
        return DEFAULT_VICUNA_SYSTEM if fmt == "vicuna" else DEFAULT_SYSTEM
    return None


def convert(row: dict[str, object], fmt: str, where: str = "row") -> list[dict[str, object]]:
    """A train.jsonl row in ``fmt``: one row (four for ``all``), provenance fields kept."""
    if fmt == "messages":
        turns(row, where)  # the shape is checked like every other format's
        return [row]
    t = turns(row, where)
    rest = provenance(row)
    if fmt == "sharegpt":
        conv = [{"from": "system", "value": t.system}] if t.system is not None else []
        conv += [{"from": "human", "value": t.question}, {"from": "gpt", "value": t.answer}]
        return [{"conversations": conv, **rest}]
    if fmt == "alpaca":
        system = {"system": t.system} if t.system is not None else {}
        return [{"instruction": t.question, "input": "", "output": t.answer, **system, **rest}]
    if fmt == "all":
        pair_id = str(row.get("pair_id", ""))
        return [{"prompt": render_prompt(f, mix_system(pair_id, f, t.system), t.question),
                 "response": render_response(f, t.answer), "format": f, **rest} for f in MIX]
    check_format(fmt)
    return [{"prompt": render_prompt(fmt, t.system, t.question), "response": render_response(fmt, t.answer), **rest}]


# --- the axolotl stanza -----------------------------------------------------
def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON strings are YAML: paths with ': #' stay intact


def dataset_entry(fmt: str, path: Path, *, test: bool = False, indent: str = "  ") -> str:
    """One YAML list item loading ``path`` (a file in ``fmt``) in axolotl 0.19."""
    lines = [f"- path: {_q(str(path.resolve()))}", "  ds_type: json"]
    if test:
        lines.append("  split: train")
    if fmt in ("messages", "sharegpt"):
        field, role, content = ("messages", "role", "content") if fmt == "messages" else ("conversations", "from", "value")
        lines += ["  type: chat_template", f"  field_messages: {field}", "  message_property_mappings:",
                  f"    role: {role}", f"    content: {content}", '  roles_to_train: ["assistant"]']
    elif fmt == "alpaca":
        lines.append("  type: alpaca")
    else:  # the rendered formats: the prompt as it is (masked), the response trained, then the tokenizer's EOS
        lines += ["  type:", '    field_instruction: prompt', '    field_output: response',
                  '    field_input: input', '    field_system: system', '    system_prompt: ""',
                  '    system_format: "{system}"', '    format: "{instruction}"', '    no_input_format: "{instruction}"']
    return "\n".join(indent + line for line in lines)


STANZA_NOTES = {
    "messages": "# rendered by the model's own chat template (chat_template: tokenizer_default)",
    "sharegpt": "# axolotl rejects `type: sharegpt`; a chat_template reads the from/value turns",
    "alpaca": "# alpaca's own preamble; `system` is kept in the rows but not read by `type: alpaca`\n"
              "# (`type: alpaca_w_system.load_instruct` puts it first, as `### System:`)",
}


def stanza(fmt: str, train_path: Path, eval_path: Path | None = None) -> str:
    """The ``datasets:`` (and, with an eval file, ``test_datasets:``) YAML for an axolotl config."""
    note = STANZA_NOTES.get(fmt, "# the prompt is rendered already and masked; the response is trained, then EOS")
    text = (f"# qagen export --format {fmt}: put this in your axolotl config in place of its datasets\n{note}\n"
            f"datasets:\n{dataset_entry(fmt, train_path)}\n")
    if eval_path is not None:
        text += f"test_datasets:\n{dataset_entry(fmt, eval_path, test=True)}\n"
    return text


# --- the export -------------------------------------------------------------
def read_rows(path: Path) -> Iterator[tuple[str, dict[str, object]]]:
    """(``file:line``, row) of a JSONL file, streamed; a line that is not a JSON object is an error."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise FormatError(f"{where}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise FormatError(f"{where}: not a JSON object")
            yield where, row


def export_formats(out_dir: Path, fmt: str) -> FormatsResult:
    """Write OUT/formats/{train,eval}.FMT.jsonl and FMT.axolotl.yml from OUT/train.jsonl and OUT/eval.jsonl."""
    check_format(fmt)
    source = out_dir / "train.jsonl"
    if not source.is_file():
        raise FormatError(f"no dataset in {out_dir} ({source} is missing): run `qagen ingest DOCS --out {out_dir}` first")
    folder = out_dir / FOLDER
    paths: dict[str, Path] = {}
    rows: dict[str, int] = {}
    for split in SPLITS:
        src = out_dir / f"{split}.jsonl"
        if not src.is_file():
            continue
        dest = folder / f"{split}.{fmt}.jsonl"
        count = 0
        with atomic_writer(dest) as fh:
            for where, row in read_rows(src):
                for line in convert(row, fmt, where):
                    fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                    count += 1
        paths[split], rows[split] = dest, count
    text = stanza(fmt, paths["train"], paths["eval"] if rows.get("eval") else None)
    stanza_path = folder / f"{fmt}.axolotl.yml"
    with atomic_writer(stanza_path) as fh:
        fh.write(text)
    return FormatsResult(fmt, paths, rows, stanza_path, text)
