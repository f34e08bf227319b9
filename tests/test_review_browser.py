"""`qagen review` in a real browser: headless Chromium (Debian's) through selenium, on a real run.

The user's path end to end: `qagen ingest` (the stub OpenAI server over HTTP, the judge and the filters on),
`qagen review OUT` as a subprocess (its printed URL holds the token), then through the page itself: accept one
pair with the keyboard, reject one with the mouse, edit one, rescue one a filter dropped. Then the database
rows, a re-export, and a second and third `qagen ingest` that keep all four decisions.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from qagen.store import Store
from qagen.testing import StubServer
from tests.helpers import db_rows, passage_reply
from tests.test_cli import QAGEN, run
from tests.test_report_browser import CHROMEDRIVER, CHROMIUM, browser  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="Chromium and chromedriver are not installed")

EDITED = "George Washington opened his first annual message by congratulating Congress."


def _ingest(docs: Path, out: Path, base_url: str) -> dict:
    proc = run("ingest", str(docs), "--out", str(out), "--base-url", base_url, "--model", "stub-model",
               "--no-refine", "--suite", "broad", "--judge", "--filters", "--no-dedup", "--no-report", "--no-exam",
               "--facts-k", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _exported(out: Path) -> dict[str, dict]:
    rows = {}
    for name in ("train.jsonl", "eval.jsonl"):
        for line in (out / name).read_text().splitlines():
            row = json.loads(line)
            rows[row["pair_id"]] = row
    return rows


def _check_export(out: Path, picked: dict[str, str]) -> None:
    rows = _exported(out)
    assert picked["rejected"] not in rows
    assert picked["accepted"] in rows and rows[picked["accepted"]]["review"] == "accepted"
    edited = rows[picked["edited"]]
    assert edited["messages"][2]["content"] == EDITED and edited["edited"] == "human"
    assert edited["original"]["answer"] != EDITED
    assert rows[picked["rescued"]]["overrode"] == "too_short"
    dpo = [json.loads(line) for line in (out / "dpo.jsonl").read_text().splitlines()]
    assert [(d["pair_id"], d["chosen"]["content"]) for d in dpo] == [(picked["edited"], EDITED)]
    assert dpo[0]["rejected"]["content"] == edited["original"]["answer"]


def test_review_in_the_browser_then_export_and_reingest(tmp_path, corpus, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out = tmp_path / "out"
    with StubServer(passage_reply) as stub:
        first = _ingest(corpus, out, stub.base_url)
        assert first["verdicts"]["too_short"] > 0 and not (out / "dpo.jsonl").exists()

        server = subprocess.Popen([*QAGEN, "review", str(out), "--no-browser"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:") and "token=" in url, server.stderr.read()
            browser.get(url)
            WebDriverWait(browser, 10).until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
            body = browser.find_element(By.TAG_NAME, "body")

            def exported_rows() -> list:
                return browser.find_elements(By.CSS_SELECTOR, ".pair[data-verdict=exported]")

            def wait_for(selector: str) -> None:
                WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, selector))

            assert len(browser.find_elements(By.CSS_SELECTOR, "section.doc")) == 2
            marked = browser.find_elements(By.CSS_SELECTOR, ".pair .chunk mark")  # the evidence, highlighted
            assert marked and not marked[0].is_displayed()  # a pair's chunk shows when it is selected
            marked[0].find_element(By.XPATH, "ancestor::div[contains(@class, 'pair')]").click()
            assert marked[0].is_displayed() and marked[0].text.strip()
            picked: dict[str, str] = {}
            # accept: the first exported pair, by keyboard
            first_row = exported_rows()[0]
            first_row.click()
            picked["accepted"] = first_row.get_attribute("data-pair")
            body.send_keys("a")
            wait_for(f'.pair[data-pair="{picked["accepted"]}"][data-decision=accept]')
            # reject: another, with the mouse
            row = exported_rows()[1]
            picked["rejected"] = row.get_attribute("data-pair")
            row.click()
            row.find_element(By.CSS_SELECTOR, "button.reject").click()
            wait_for(f'.pair[data-pair="{picked["rejected"]}"][data-decision=reject]')
            # edit: a third, "e", type, Ctrl+Enter
            row = exported_rows()[2]
            picked["edited"] = row.get_attribute("data-pair")
            row.click()
            body.send_keys("e")
            box = row.find_element(By.CSS_SELECTOR, "textarea.ea")
            box.clear()
            box.send_keys(EDITED)
            box.send_keys(Keys.CONTROL, Keys.ENTER)
            wait_for(f'.pair[data-pair="{picked["edited"]}"][data-edited=yes]')
            # rescue: show the dropped pairs, take one a filter called too short, accept it
            Select(browser.find_element(By.ID, "show")).select_by_value("dropped")
            row = next(r for r in browser.find_elements(By.CSS_SELECTOR, ".pair[data-verdict=too_short]")
                       if r.is_displayed())
            picked["rescued"] = row.get_attribute("data-pair")
            row.click()
            assert "dropped by too_short" in row.text
            body.send_keys("a")
            wait_for(f'.pair[data-pair="{picked["rescued"]}"][data-decision=accept]')
            # the checks against the human, on the page
            body.send_keys("s")
            wait_for("#stats tr[data-check='any check']")
            assert "4 rated pairs" in browser.find_element(By.ID, "stats").text
            errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=20)
        assert server.returncode == 0, server.stderr.read()

        with Store(out) as store:
            rows = db_rows(store, "SELECT pair_id, decision, question IS NOT NULL, answer, original_answer "
                                  "FROM reviews ORDER BY pair_id")
        by_pair = {r[0]: r[1:] for r in rows}
        assert len(rows) == 4
        assert by_pair[picked["accepted"]][:2] == ("accept", 0)
        assert by_pair[picked["rejected"]][:2] == ("reject", 0)
        assert by_pair[picked["rescued"]][:2] == ("accept", 0)
        assert by_pair[picked["edited"]][0] == "" and by_pair[picked["edited"]][2] == EDITED
        assert by_pair[picked["edited"]][3] not in ("", EDITED)

        exported = run("review", str(out), "--export", "--json")
        assert exported.returncode == 0, exported.stderr
        assert json.loads(exported.stdout)["export"]["review"] == {"accepted": 3, "rejected": 1, "edited": 1,
                                                                    "overrides": 1}
        _check_export(out, picked)

        second = _ingest(corpus, out, stub.base_url)  # the decisions are new since the last run: written again
        assert not second["unchanged"] and second["requests_sent"] == 0  # every reply from the cache
        assert second["review"] == {"accepted": 3, "rejected": 1, "edited": 1, "overrides": 1}
        assert second["pairs_total"] == first["pairs_total"] - 1 + 1
        _check_export(out, picked)
        third = _ingest(corpus, out, stub.base_url)
        assert third["unchanged"]
        _check_export(out, picked)
    with Store(out) as store:
        assert len(db_rows(store, "SELECT * FROM reviews")) == 4
