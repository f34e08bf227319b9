"""axolotl config templates: rendered with our paths, validated by axolotl itself, misspelled keys rejected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("axolotl", reason="needs the training packages (qagen setup --train); CI installs them")

from qagen.flow.axolotl_config import (
    TrainError,
    render,
    template_names,
    template_path,
    validate,
)
from qagen.flow.train import load_train_settings, prepare
from qagen.store import Store

ROW = {"messages": [{"role": "system", "content": "You know document abc."}, {"role": "user", "content": "Q?"},
                    {"role": "assistant", "content": "A."}], "pair_id": "p1", "perspective": "quiz"}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    # A colon, a hash and a space in the path: YAML would cut an unquoted value at " #".
    folder = tmp_path / "out: #1 dir"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(ROW) + "\n")
    (folder / "eval.jsonl").write_text(json.dumps(ROW) + "\n")
    return folder


def test_the_four_templates_exist():
    assert set(template_names()) >= {"smollm2-cpu-lora", "smollm2-cpu-full", "mistral-7b-qlora", "mistral-7b-lora",
                                     "mistral-7b-fsdp2", "smollm2-cpu-cpt", "mistral-7b-cpt"}


@pytest.mark.parametrize("name", ["smollm2-cpu-lora", "smollm2-cpu-full", "mistral-7b-qlora", "mistral-7b-lora", "mistral-7b-fsdp2"])
def test_each_template_renders_and_axolotl_accepts_it(out, name):  # noqa: PLR0915
    # A base model given explicitly: no GGUF conversion here (validation does not load the model).
    settings = load_train_settings(template=name, base_model="/models/base-hf", max_steps=3)
    cfg, key, adapter_dir = prepare(out, settings)
    [ds] = cfg["datasets"]
    assert ds["path"] == str((out / "train.jsonl").resolve())  # survived the ": #" in the path
    assert (ds["type"], ds["field_messages"], ds["ds_type"]) == ("chat_template", "messages", "json")
    assert cfg["output_dir"] == str(adapter_dir) and adapter_dir.parent == (out / "adapters").resolve()
    assert cfg["max_steps"] == 3 and cfg["base_model"] == "/models/base-hf"
    assert len(key) == 32
    assert cfg["num_epochs"] == 10.0  # the cap: training stops when recall plateaus (qagen/flow/recall.py)
    assert cfg["plugins"] == ["qagen.flow.recall_plugin.RecallStopPlugin"]
    plan = json.loads((adapter_dir / "recall.json").read_text())
    assert plan["every"] == 10 and plan["patience"] == 2 and [q[1:] for q in plan["questions"]] == [["Q?", "A."]]
    if name.startswith("smollm2-cpu-"):  # the CPU traps, each set where the template handles it
        assert cfg["bf16"] is False and cfg["fp16"] is False
        if name == "smollm2-cpu-lora":
            assert not any(cfg[k] for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel",
                                            "lora_embedding_kernel"))
        else:
            assert "adapter" not in cfg  # full fine-tuning: every weight trained
        assert cfg["special_tokens"] == {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
        assert cfg["sequence_len"] == 512
    else:
        assert cfg["test_datasets"][0]["path"] == str((out / "eval.jsonl").resolve())
        assert cfg["sequence_len"] == 2048
    if name == "mistral-7b-fsdp2":
        assert cfg["fsdp_version"] == 2 and cfg["fsdp_config"]["transformer_layer_cls_to_wrap"] == "MistralDecoderLayer"
    if name == "mistral-7b-qlora":
        assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True


@pytest.mark.parametrize(("name", "sft"), [("smollm2-cpu-cpt", "smollm2-cpu-lora"), ("mistral-7b-cpt", "mistral-7b-qlora")])
def test_each_cpt_template_renders_and_axolotl_accepts_it(out, name, sft):
    """Stage 1 of --recipe cpt+sft: plain text from OUT/cpt.jsonl, every weight trained, picked beside its SFT
    template; stage 2's base model is stage 1's folder."""
    from qagen.flow.train import CPT_DATA, cpt_template

    (out / CPT_DATA).write_text(json.dumps({"text": "doc: abc\ntitle: T\n\nSome text.", "kind": "chunk"}) + "\n")
    settings = load_train_settings(template=sft, base_model="/models/base-hf", max_steps=3, recipe="cpt+sft")
    assert cpt_template(settings) == name
    cfg, key, folder = prepare(out, settings, template=name, data=CPT_DATA, folder_prefix="cpt-")
    [ds] = cfg["datasets"]
    assert ds["path"] == str((out / CPT_DATA).resolve())
    assert (ds["type"], ds["field"], ds["ds_type"]) == ("completion", "text", "json")
    assert "adapter" not in cfg and cfg["val_set_size"] == 0 and cfg["base_model"] == "/models/base-hf"
    assert folder.name == f"cpt-{key[:12]}" and cfg["output_dir"] == str(folder)
    if name.startswith("smollm2-cpu-"):
        assert cfg["bf16"] is False and cfg["fp16"] is False and cfg["sequence_len"] == 512
        assert cfg["special_tokens"] == {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
    else:
        assert cfg["fsdp_version"] == 2 and cfg["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"
    second, second_key, _ = prepare(out, settings, base_model=str(folder))
    assert second["base_model"] == str(folder) and second["datasets"][0]["type"] == "chat_template"
    (out / CPT_DATA).write_text(json.dumps({"text": "other text"}) + "\n")
    _, new_key, new_folder = prepare(out, settings, template=name, data=CPT_DATA, folder_prefix="cpt-")
    assert new_key != key and new_folder != folder  # new cpt.jsonl: a new stage 1, so a new stage 2 base model
    assert prepare(out, settings, base_model=str(new_folder))[1] != second_key


def _cfg(out: Path) -> dict:
    cfg, _, _ = prepare(out, load_train_settings(base_model="/models/base-hf"))
    return cfg


def test_misspelled_dataset_key_is_rejected(out):
    """axolotl itself silently ignores `feild_messages`; our check refuses it."""
    cfg = _cfg(out)
    cfg["datasets"] = [{**cfg["datasets"][0], "feild_messages": "messages"}]
    with pytest.raises(TrainError, match=r"unknown key 'feild_messages' in datasets\[0\]"):
        validate(cfg)


def test_misspelled_top_level_key_is_rejected(out):
    cfg = {**_cfg(out), "lerning_rate": 0.1}
    with pytest.raises(TrainError, match="unknown top-level key 'lerning_rate'"):
        validate(cfg)


def test_axolotl_rejects_sharegpt(out):
    """The check that only axolotl can do: its own validation runs before any launch."""
    cfg = _cfg(out)
    cfg["datasets"] = [{**cfg["datasets"][0], "type": "sharegpt"}]
    with pytest.raises(TrainError, match=r"(?s)axolotl rejected the config.*type: chat_template"):
        validate(cfg)


def test_same_data_same_key_new_data_new_key(out):
    settings = load_train_settings(base_model="/models/base-hf")
    _, key1, dir1 = prepare(out, settings)
    assert prepare(out, settings)[1] == key1
    (out / "train.jsonl").write_text(json.dumps(ROW) + "\n" + json.dumps(ROW) + "\n")
    _, key2, dir2 = prepare(out, settings)
    assert key2 != key1 and dir2 != dir1


def test_user_template_with_a_missing_variable_is_a_clear_error(tmp_path, out):
    bad = tmp_path / "mine.yml"
    bad.write_text("base_model: {{ base_model }}\nlearning_rate: {{ lr }}\n")
    with pytest.raises(TrainError, match="'lr' is undefined"):
        render(template_path(str(bad)), {"base_model": "x"})


def test_unknown_template_and_missing_dataset_are_errors(tmp_path, out):
    with pytest.raises(TrainError, match="smollm2-cpu-lora"):
        template_path("no-such-template")
    with pytest.raises(TrainError, match="run `qagen ingest"):
        prepare(tmp_path, load_train_settings(base_model="/models/base-hf"))


def test_failed_training_exits_1_with_the_log_tail(out):
    """axolotl accepts the config but cannot load the model: exit 1, the log's tail, a failed run record."""
    with Store(out):
        pass
    result = subprocess.run(
        [sys.executable, "-m", "qagen.cli", "train", str(out), "--base-model", str(out / "no-such-model"),
         "--max-steps", "1"],
        capture_output=True, timeout=400, check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "axolotl train failed (exit code" in err and "--- last lines ---" in err and "no-such-model" in err
    [log] = list((out / "adapters").glob("*/train.log"))
    assert log.stat().st_size > 0
    import sqlite3

    with sqlite3.connect(out / "qagen.sqlite") as db:
        assert db.execute("SELECT command, status FROM runs").fetchall() == [("train", "failed")]


@pytest.mark.parametrize(("chunk_chars", "template", "expected"), [
    (0, "smollm2-cpu-lora", 512),  # closed-book rows only: the template's default
    (2400, "smollm2-cpu-lora", 1024),  # an open-book row of ~2,500 characters: 2,500 / 3 + 64 -> 1024
    (20000, "smollm2-cpu-lora", 2048),  # the cap for the embedded CPU templates
    (2400, "mistral-7b-lora", 2048),  # the GPU templates' default already fits it
    (20000, "mistral-7b-lora", 4096),
])
def test_open_book_rows_size_the_sequence_length(out, chunk_chars, template, expected):
    rows = [ROW]
    if chunk_chars:
        prompt = "BEGININPUT\nBEGINCONTEXT\ndoc: x\nENDCONTEXT\n" + "w" * chunk_chars + "\nENDINPUT"
        rows.append({**ROW, "pair_id": "p2", "contextual": "answer",
                     "messages": [{"role": "system", "content": "Answer from the blocks."},
                                  {"role": "user", "content": prompt}, {"role": "assistant", "content": "A."}]})
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg, _, _ = prepare(out, load_train_settings(template=template, base_model="/models/base-hf"))
    assert cfg["sequence_len"] == expected
    if template.startswith("smollm2-cpu"):  # long rows: 1 row x 4 accumulation steps, still 4 rows per step
        shape = (cfg["micro_batch_size"], cfg["gradient_accumulation_steps"])
        assert shape == ((4, 1) if expected <= 512 else (1, 4))
    given, _, _ = prepare(out, load_train_settings(template=template, base_model="/models/base-hf", sequence_len=640))
    assert given["sequence_len"] == 640  # --sequence-len wins


def test_text_rows_join_the_same_run_and_stop_epochs_trains_exactly_the_epochs(out):
    """`qagen ingest --text-rows` leaves OUT/text.jsonl: the SFT run reads it as a completion dataset beside the
    pairs (and its bytes are part of the adapter's key); --stop epochs names no plugin and writes no recall plan."""
    settings = load_train_settings(base_model="/models/base-hf", stop="epochs", epochs=2)
    cfg, key, adapter_dir = prepare(out, settings)
    assert len(cfg["datasets"]) == 1 and "plugins" not in cfg and cfg["num_epochs"] == 2.0
    assert not (adapter_dir / "recall.json").exists()
    (out / "text.jsonl").write_text(json.dumps({"text": "doc: abc\n\nThe bridge closed in May."}) + "\n")
    cfg2, key2, _ = prepare(out, settings)
    assert cfg2["datasets"][1] == {"path": str((out / "text.jsonl").resolve()), "ds_type": "json",
                                   "type": "completion", "field": "text"}
    (out / "text.jsonl").write_text(json.dumps({"text": "doc: abc\n\nThe bridge closed in June."}) + "\n")
    assert len({key, key2, prepare(out, settings)[1]}) == 3  # the text rows' bytes are in the key
