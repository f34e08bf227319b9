"""One settings loader: qagen.toml, profiles, the environment, --set and every setting's own flag (issue 30)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from qagen.cli.app import app
from qagen.cli.flags import split_setting_flags
from qagen.cli.settings import resolve
from qagen.core.errors import InputError

FILE = """
profile = "nightly"
[model]
model = "file-model"
[chunking]
chunk_size = 800
[export]
eval_fraction = 0.3
[train]
epochs = 5
[profiles.nightly]
extends = "served"
[profiles.nightly.export]
eval_fraction = 0.25
[profiles.nightly.generation]
refine = "repair"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("QAGEN_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./qagen.toml unless a test writes one


def show(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["config", "show", *args, "--json"], env=env)
    return result.exit_code, (json.loads(result.stdout) if result.exit_code == 0 else {"error": result.output})


def values(shown: dict) -> dict[str, tuple[str, str]]:
    return {row["key"]: (row["value"], row["source"]) for row in shown["settings"]}


def test_ingest_help_lists_at_most_15_options():
    cmd = get_command(app).commands["ingest"]  # type: ignore[attr-defined]
    listed = [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden]
    assert len(listed) + 1 <= 15  # + --help


def test_every_layer_in_order_and_its_source(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "qagen.toml").write_text(FILE)
    code, shown = show(str(docs), "--set", "chunking.chunk_size=700", "--eval-fraction", "0.1",
                       env={"QAGEN_TRAIN_EPOCHS": "4", "QAGEN_MODEL": "env-model"})
    assert code == 0, shown
    v = values(shown)
    assert shown["profile"] == "nightly" and shown["config"].endswith("qagen.toml")
    assert v["model.model"] == ("env-model", "environment")  # the environment over the file
    assert v["chunking.chunk_size"] == ("700", "--set")  # --set over the file
    assert v["export.eval_fraction"] == ("0.1", "flag")  # a setting's own flag over the profile and the file
    assert v["generation.refine"][0] == "repair" and v["generation.refine"][1].startswith("profile nightly")
    assert v["train.epochs"] == ("4.0", "environment")
    assert v["model.builtin_profile"] == ("served", "profile nightly")  # what it extends
    assert v["generation.suite"] == ("ledger", "profile served (built-in)")
    assert v["chunking.chunk_overlap"] == ("100", "profile served (built-in)")


def test_a_user_profile_wins_over_the_file_and_loses_to_the_environment(tmp_path):
    (tmp_path / "qagen.toml").write_text(FILE)  # found in the current folder
    r = resolve(owners=("settings", "train"))
    assert r.settings.eval_fraction == 0.25 and r.sources["export.eval_fraction"].startswith("profile nightly")
    assert r.settings.chunking == (800, 100) and r.train.epochs == 5
    os.environ["QAGEN_EVAL_FRACTION"] = "0.05"
    try:
        assert resolve().settings.eval_fraction == 0.05
    finally:
        del os.environ["QAGEN_EVAL_FRACTION"]


def test_builtin_profiles_follow_the_model_unless_one_is_named():
    embedded, served = resolve().settings, resolve(flags={"model.base_url": "http://x/v1"}).settings
    assert (embedded.profile_name, embedded.perspective_suite, embedded.judging, embedded.exam_on,
            embedded.chunking, embedded.rounds) == ("embedded", "embedded", True, False, (600, 60), 1)
    assert (served.profile_name, served.perspective_suite, served.judging, served.exam_on,
            served.chunking, served.rounds) == ("served", "ledger", False, True, (1000, 100), 3)
    chosen = resolve(profile="served").settings  # the served defaults on the embedded model
    assert chosen.uses_embedded and chosen.perspective_suite == "ledger" and chosen.chunking == (1000, 100)
    assert resolve(flags={"chunking.chunk_size": 200}).settings.chunking == (200, 50)  # a quarter of the chunk


def test_old_flags_work_anywhere_and_typos_are_caught(tmp_path):
    rest, found = split_setting_flags(["--chunk-size", "600", "docs", "--no-report", "--decontaminate=a.json",
                                       "--decontaminate", "b.json", "--no-refine", "--out", "o"],
                                      {"--out"}, ("settings",))
    assert rest == ["docs", "--out", "o"]
    assert found == {"chunking.chunk_size": "600", "export.report": False, "curation.decontaminate":
                     ["a.json", "b.json"], "generation.refine": "off"}
    with pytest.raises(click.UsageError, match="needs a value"):
        split_setting_flags(["docs", "--chunk-size"], set(), ("settings",))
    with pytest.raises(click.UsageError, match="ambiguous"):  # generation.seed and train.seed, in `qagen run`
        split_setting_flags(["--seed", "3"], set(), ("settings", "train"))
    result = CliRunner().invoke(app, ["ingest", str(tmp_path), "--chunk-sze", "5"])
    assert result.exit_code == 2 and "--chunk-sze" in result.output


@pytest.mark.parametrize(("text", "message"), [
    ("[modle]\nmodel = 'x'\n", "unknown section [modle] (did you mean model?)"),
    ("[chunking]\nchunk_sise = 3\n", "unknown setting chunking.chunk_sise (did you mean chunking.chunk_size?)"),
    ("[model]\napi_key = 'sk-secret'\n", "model.api_key is a secret"),
    ("[model\n", "not valid TOML"),
    ("[chunking]\nchunk_size = -5\n", "chunk_size"),
    ("profile = 'nope'\n", "no profile 'nope'"),
    ("[profiles.a]\nextends = 'b'\n[profiles.b]\nextends = 'a'\n", "circle"),
])
def test_a_bad_file_is_one_clear_error_naming_it(tmp_path, text, message):
    (tmp_path / "qagen.toml").write_text(text)
    code, shown = show(*(["--profile", "a"] if "circle" in message else []))
    assert code == 1 and message in " ".join(shown["error"].split())
    assert "sk-secret" not in shown["error"]


def test_set_values_are_toml_and_secrets_stay_in_the_environment():
    r = resolve(sets=["curation.decontaminate=['q.jsonl']", "export.report=false", "suite=knowledge",
                      "curation.judge_threshold=0.7"])
    assert (r.settings.decontaminate, r.settings.report, r.settings.suite, r.settings.judge_threshold) == (
        ["q.jsonl"], False, "knowledge", 0.7)
    for bad, message in (("model.api_key=sk-x", "secret"), ("seed=3", "generation.seed and train.seed"),
                         ("train.epochs=3", "does not use the train section"), ("nope", "SECTION.KEY=VALUE")):
        with pytest.raises(InputError, match=message):
            resolve(sets=[bad])
    with pytest.raises(InputError, match="no such file"):
        resolve(config=Path("missing.toml"))


def test_ingest_and_run_read_qagen_toml_beside_the_documents(corpus, tmp_path, stub):
    """A real ingest through the CLI: DOCS/qagen.toml sets the endpoint, the chunking and the export; the file is
    not read as a document; `qagen run` takes the same file and an ingest-only flag, and stops at its gate."""
    (corpus / "qagen.toml").write_text(
        f'[model]\nbase_url = "{stub.base_url}"\nmodel = "stub-model"\n[chunking]\nchunk_size = 120\n'
        '[export]\nreport = false\neval_fraction = 0\n[generation]\nsuite = "broad"\nexam = false\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAGEN_")}
    out = tmp_path / "out"
    qagen = [sys.executable, "-m", "qagen"]
    done = subprocess.run([*qagen, "ingest", str(corpus), "--out", str(out), "--json"], capture_output=True,
                          text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["documents_read"] == 2 and summary["eval_pairs"] == 0 and not (out / "report.html").exists()
    with sqlite3.connect(out / "qagen.sqlite") as db:
        (saved,) = db.execute("SELECT settings FROM runs WHERE command = 'ingest' ORDER BY run_id DESC LIMIT 1").fetchone()
        docs = [r[0] for r in db.execute("SELECT path FROM documents")]
    saved = json.loads(saved)
    assert (saved["chunk_size"], saved["model"], saved["report"]) == (120, "stub-model", False)
    assert "qagen.toml" not in " ".join(docs)
    ran = subprocess.run([*qagen, "run", str(corpus), "--out", str(tmp_path / "run"), "--min-pairs", "100000",
                          "--no-report", "--chunk-size", "150", "--json"], capture_output=True, text=True,
                         timeout=300, env=env, check=False)
    assert ran.returncode == 2, ran.stderr  # the quality gate: no training
    with sqlite3.connect(tmp_path / "run" / "qagen.sqlite") as db:
        (saved,) = db.execute("SELECT settings FROM runs WHERE command = 'ingest' ORDER BY run_id DESC LIMIT 1").fetchone()
    assert json.loads(saved)["chunk_size"] == 150
