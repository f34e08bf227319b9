"""`qagen export OUT --format FMT`: one known pair in every format, byte for byte; the stanzas; axolotl loads them."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qagen.output.formats import (
    FORMATS,
    FormatError,
    convert,
    export_formats,
    mix_system,
    stanza,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "output"
QAGEN = [sys.executable, "-m", "qagen.cli"]

# One exported pair, as train.jsonl holds it (a non-ASCII answer: files are UTF-8, not \u escapes).
TRAIN_LINE = (
    '{"messages": [{"role": "system", "content": "You know document 3f2a9c01be (Notes)."}, '
    '{"role": "user", "content": "Who calls the builders?"}, {"role": "assistant", "content": "Ana Souza — by May."}], '
    '"pair_id": "p1", "doc_id": "d1", "chunk_id": "c1", "group_id": "g1", "perspective": "quiz", "model": "m", '
    '"source": "notes.txt", "judge": {"supported": 0.9}}'
)
PROV = ('"pair_id": "p1", "doc_id": "d1", "chunk_id": "c1", "group_id": "g1", "perspective": "quiz", "model": "m", '
        '"source": "notes.txt", "judge": {"supported": 0.9}')

# Hand-written: what each format's file holds for that pair.
EXPECTED = {
    "messages": TRAIN_LINE + "\n",
    "alpaca": '{"instruction": "Who calls the builders?", "input": "", "output": "Ana Souza — by May.", '
              '"system": "You know document 3f2a9c01be (Notes).", ' + PROV + "}\n",
    "vicuna": r'{"prompt": "You know document 3f2a9c01be (Notes).\nUSER: Who calls the builders?\nASSISTANT:", '
              r'"response": "Ana Souza — by May.", ' + PROV + "}\n",
    "chatml": r'{"prompt": "<|im_start|>system\nYou know document 3f2a9c01be (Notes).<|im_end|>\n<|im_start|>user\n'
              r'Who calls the builders?<|im_end|>\n<|im_start|>assistant\n", "response": "Ana Souza — by May.<|im_end|>", '
              + PROV + "}\n",
    "llama2": r'{"prompt": "[INST] <<SYS>>\nYou know document 3f2a9c01be (Notes).\n<</SYS>>\n\nWho calls the builders? '
              r'[/INST]", "response": "Ana Souza — by May.", ' + PROV + "}\n",
    "sharegpt": '{"conversations": [{"from": "system", "value": "You know document 3f2a9c01be (Notes)."}, '
                '{"from": "human", "value": "Who calls the builders?"}, {"from": "gpt", "value": "Ana Souza — by May."}], '
                + PROV + "}\n",
    "all": (
        r'{"prompt": "Below is an instruction that describes a task. Write a response that appropriately completes the '
        r'request.\n\n### Instruction:\nYou know document 3f2a9c01be (Notes).\nWho calls the builders?\n\n### Response:\n", '
        r'"response": "Ana Souza — by May.", "format": "alpaca", ' + PROV + "}\n"
        r'{"prompt": "You know document 3f2a9c01be (Notes).\nUSER: Who calls the builders?\nASSISTANT:", '
        r'"response": "Ana Souza — by May.", "format": "vicuna", ' + PROV + "}\n"
        r'{"prompt": "<|im_start|>system\nYou know document 3f2a9c01be (Notes).<|im_end|>\n<|im_start|>user\n'
        r'Who calls the builders?<|im_end|>\n<|im_start|>assistant\n", "response": "Ana Souza — by May.<|im_end|>", '
        r'"format": "chatml", ' + PROV + "}\n"
        r'{"prompt": "[INST] <<SYS>>\nYou know document 3f2a9c01be (Notes).\n<</SYS>>\n\nWho calls the builders? '
        r'[/INST]", "response": "Ana Souza — by May.", "format": "llama2", ' + PROV + "}\n"
    ),
}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out: #1"  # a colon, a hash and a space: the stanza's YAML must keep the path whole
    folder.mkdir()
    (folder / "train.jsonl").write_text(TRAIN_LINE + "\n", encoding="utf-8")
    (folder / "eval.jsonl").write_text("", encoding="utf-8")
    return folder


def qagen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*QAGEN, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)


def test_the_formats_are_the_ones_documented():
    assert FORMATS == ("messages", "alpaca", "vicuna", "chatml", "llama2", "sharegpt", "all")
    assert set(EXPECTED) == set(FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_pair_in_every_format_byte_for_byte(out, fmt):
    result = export_formats(out, fmt)
    assert (out / "formats" / f"train.{fmt}.jsonl").read_bytes() == EXPECTED[fmt].encode("utf-8")
    assert result.rows == {"train": 4 if fmt == "all" else 1, "eval": 0}
    assert (out / "formats" / f"eval.{fmt}.jsonl").read_bytes() == b""
    assert (out / "formats" / f"{fmt}.axolotl.yml").read_text() == result.stanza
    again = (out / "formats" / f"train.{fmt}.jsonl").read_bytes()
    export_formats(out, fmt)
    assert (out / "formats" / f"train.{fmt}.jsonl").read_bytes() == again  # re-runs write the same bytes


def test_the_mix_gives_a_pair_without_system_message_a_default_by_hash():
    row = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}], "pair_id": "p6"}
    prompts = {r["format"]: r["prompt"] for r in convert(row, "all")}
    # p6's hashes: a default for alpaca, vicuna and chatml, none for llama2 (bagel flips a coin here)
    assert prompts == {
        "alpaca": "Below is an instruction that describes a task. Write a response that appropriately completes the "
                  "request.\n\n### Instruction:\nYou are a helpful assistant.\nQ?\n\n### Response:\n",
        "vicuna": "A chat between a user and a helpful assistant.\nUSER: Q?\nASSISTANT:",
        "chatml": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n"
                  "<|im_start|>assistant\n",
        "llama2": "[INST] Q? [/INST]",
    }
    # about half of the pairs get one, per format; a pair's own system message always wins
    for fmt in ("alpaca", "vicuna", "chatml", "llama2"):
        share = sum(mix_system(f"p{i}", fmt, None) is not None for i in range(1000)) / 1000
        assert 0.45 < share < 0.55
        assert mix_system("p6", fmt, "own") == "own"
    # the standalone formats keep a missing system message missing
    assert convert(row, "sharegpt")[0]["conversations"] == [{"from": "human", "value": "Q?"},
                                                            {"from": "gpt", "value": "A."}]
    assert "system" not in convert(row, "alpaca")[0]


def test_rows_that_are_not_one_exchange_are_refused(out):
    (out / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "Q"}, {"role": "user", "content": "Q"}]}\n')
    with pytest.raises(FormatError, match=r"train.jsonl:1: messages must be \[system,\] user, assistant"):
        export_formats(out, "chatml")
    with pytest.raises(FormatError, match="unknown format 'jsonl': choose one of messages, alpaca"):
        export_formats(out, "jsonl")


def test_stanza_text_and_yaml(out):
    train, evals = out / "formats" / "train.chatml.jsonl", out / "formats" / "eval.chatml.jsonl"
    text = stanza("chatml", train, evals)
    entry = (
        '    ds_type: json\n{split}    type:\n      field_instruction: prompt\n      field_output: response\n'
        '      field_input: input\n      field_system: system\n      system_prompt: ""\n'
        '      system_format: "{{system}}"\n      format: "{{instruction}}"\n      no_input_format: "{{instruction}}"\n'
    )
    assert text == (
        "# qagen export --format chatml: put this in your axolotl config in place of its datasets\n"
        "# the prompt is rendered already and masked; the response is trained, then EOS\n"
        f'datasets:\n  - path: "{train.resolve()}"\n' + entry.format(split="")
        + f'test_datasets:\n  - path: "{evals.resolve()}"\n' + entry.format(split="    split: train\n")
    )
    parsed = yaml.safe_load(text)
    assert parsed["datasets"][0]["path"] == str(train.resolve())  # survived the ": #" in the folder name
    assert parsed["datasets"][0]["type"]["format"] == "{instruction}"
    sharegpt = yaml.safe_load(stanza("sharegpt", train))
    assert sharegpt == {"datasets": [{"path": str(train.resolve()), "ds_type": "json", "type": "chat_template",
                                      "field_messages": "conversations",
                                      "message_property_mappings": {"role": "from", "content": "value"},
                                      "roles_to_train": ["assistant"]}]}
    assert yaml.safe_load(stanza("alpaca", train))["datasets"][0]["type"] == "alpaca"


def test_cli_writes_the_files_and_prints_the_stanza(out):
    result = qagen("export", str(out), "--format", "llama2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (out / "formats" / "llama2.axolotl.yml").read_text()
    assert "datasets:\n  - path:" in result.stdout and "train: 1 rows" in result.stderr
    assert (out / "formats" / "train.llama2.jsonl").read_bytes() == EXPECTED["llama2"].encode("utf-8")


def test_cli_bad_format_and_no_target_exit_non_zero(out):
    bad = qagen("export", str(out), "--format", "sharegtp")
    said = " ".join(bad.stderr.split())  # rich wraps long lines
    assert bad.returncode == 1
    assert "unknown format 'sharegtp': choose one of messages, alpaca, vicuna, chatml, llama2, sharegpt, all" in said
    assert not (out / "formats").exists()
    nothing = qagen("export", str(out))
    assert nothing.returncode == 1 and "--format FMT, --contextual, or --hf DIR" in " ".join(nothing.stderr.split())
    empty = qagen("export", str(out.parent / "no-such-out"), "--format", "alpaca")
    assert empty.returncode == 1 and "run `qagen ingest" in " ".join(empty.stderr.split())


# --- axolotl reads them ------------------------------------------------------
needs_axolotl = pytest.mark.skipif(importlib.util.find_spec("axolotl") is None,
                                   reason="needs the training packages (qagen setup --train); CI installs them")


def _config(out: Path, fmts: tuple[str, ...], base_model: str, **train: object) -> dict:
    """The CPU recipe (axolotl_configs/smollm2-cpu-lora.yml, rendered as `qagen train` does) on our stanzas."""
    from qagen.flow.train import load_train_settings, prepare

    cfg, _, _ = prepare(out, load_train_settings(base_model=base_model, max_steps=1, **train))
    cfg["datasets"] = [entry for fmt in fmts
                       for entry in yaml.safe_load(export_formats(out, fmt).stanza)["datasets"]]
    return cfg


@needs_axolotl
def test_every_stanza_passes_axolotl_validation(out):
    from qagen.flow.axolotl_config import validate

    for fmt in FORMATS:
        checked = validate(_config(out, (fmt,), "/models/base-hf"))
        assert len(checked["datasets"]) == 1, fmt


@pytest.mark.embedded
@needs_axolotl
def test_axolotl_preprocess_loads_messages_alpaca_chatml_sharegpt_the_mix_and_contextual(tmp_path, hf_model):
    """`axolotl preprocess` on the CPU recipe with our stanzas: every row tokenized, only the answer trained.

    sequence_len 2048: the open-book examples hold one to three chunks (550-1350 tokens on the sample run), which
    the recipe's 512 would drop."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from qagen.flow.axolotl_process import child_env
    from qagen.output.contextual import export_contextual
    from qagen.store import Store

    out = tmp_path / "sample"
    shutil.copytree(SAMPLE, out, ignore=shutil.ignore_patterns("*-wal", "*-shm", "report.html", "README.md"))
    fmts = ("messages", "alpaca", "chatml", "sharegpt", "all")
    cfg = _config(out, fmts, str(hf_model), sequence_len=2048)
    with Store(out) as store:
        contextual = export_contextual(store, out)
    cfg["datasets"] += yaml.safe_load(contextual.stanza)["datasets"]
    cfg["dataset_prepared_path"] = str(tmp_path / "prepared")
    config = tmp_path / "axolotl.yml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    axolotl = Path(sys.executable).parent / "axolotl"
    result = subprocess.run([str(axolotl), "preprocess", str(config), "--no-download"], capture_output=True,
                            text=True, timeout=900, env=child_env(1), check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "Success! Preprocessed data path" in result.stdout + result.stderr
    [prepared] = [p for p in (tmp_path / "prepared").iterdir() if p.is_dir()]
    rows = load_from_disk(str(prepared))

    pairs = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    answers = [p["messages"][2]["content"] for p in pairs]
    open_book = [json.loads(line)["messages"][2]["content"] for line in contextual.path.read_text().splitlines()]
    assert open_book and len(open_book) == contextual.examples
    # nothing dropped: four formats' rows in `all`, and the open-book examples
    assert len(rows) == len(pairs) * (len(fmts) - 1 + 4) + len(open_book) > 0
    tok = AutoTokenizer.from_pretrained(hf_model)
    trained, texts = [], set()
    for row in rows:
        texts.add(tok.decode(row["input_ids"]))
        labels = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
        assert 0 < len(labels) < len(row["input_ids"])  # the prompt is masked, the answer is not
        trained.append(tok.decode(labels))
    # exactly the answers are trained, each once per format row, each ending in the end-of-turn token
    assert sorted(trained) == sorted(f"{a}<|im_end|>" for a in answers * (len(fmts) - 1 + 4) + open_book)
    p = pairs[0]["messages"]
    system, question, answer = (m["content"] for m in p)
    chat = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n{answer}<|im_end|>")
    assert chat in texts  # chatml as we render it; messages and sharegpt through the chat template add "\n"
    assert chat + "\n" in texts
    assert ("Below is an instruction that describes a task. Write a response that appropriately completes the "
            f"request.\n\n### Instruction:\n{question}\n\n### Response:\n{answer}<|im_end|>") in texts  # type: alpaca
    assert f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{question} [/INST]{answer}<|im_end|>" in texts  # the mix
    assert f"{system}\nUSER: {question}\nASSISTANT:{answer}<|im_end|>" in texts
