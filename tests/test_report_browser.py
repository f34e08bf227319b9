"""report.html in a real browser: headless Chromium (Debian's), driven by chromedriver through selenium.

Asserts on the rendered page: the charts are drawn, the pairs table filters as one types, nothing is
fetched from the network, and the console shows no errors (a blocked fetch or a script error would).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qagen.output.report import write_report
from qagen.store import Store
from tests.report_fixture import make_run

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1280,2400")


def _missing() -> str | None:
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        return f"Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed: pip install -e '.[test]'"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture
def browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # a given driver: no download
    try:
        yield driver
    finally:
        driver.quit()


def test_report_renders_filters_and_stays_offline(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    out, run_id = make_run(tmp_path)
    with Store(out) as store:
        page = write_report(store, run_id, out)
    browser.get(page.as_uri())

    charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")
    assert len(charts) == 7
    assert all(c.size["width"] > 200 and c.size["height"] > 80 for c in charts)
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-judge svg line, #chart-judge svg path")

    def visible() -> list:
        return [r for r in browser.find_elements(By.CSS_SELECTOR, "#pairs tbody tr") if r.is_displayed()]

    rows = browser.find_elements(By.CSS_SELECTOR, "#pairs tbody tr")
    exported = [r for r in rows if r.get_attribute("data-verdict") == "exported"]
    assert len(visible()) == len(exported) < len(rows)  # exported pairs by default
    Select(browser.find_element(By.ID, "f-verdict")).select_by_value("")
    assert len(visible()) == len(rows)
    box = browser.find_element(By.ID, "filter")
    box.send_keys("revised")
    assert 0 < len(visible()) < len(rows)
    assert all("revised" in r.text.lower() for r in visible())
    box.send_keys(" no-such-word-anywhere")
    assert visible() == [] and browser.find_element(By.ID, "shown-count").text == f"0 of {len(rows)} shown"
    box.clear()
    box.send_keys("x")  # clear() fires no input event; typing does
    box.send_keys("\b")
    assert len(visible()) == len(rows)
    Select(browser.find_element(By.ID, "f-perspective")).select_by_value("identity")
    assert 0 < len(visible()) < len(rows)
    assert all(r.get_attribute("data-perspective") == "identity" for r in visible())

    # a zero-pair chunk link opens its text
    link = browser.find_element(By.CSS_SELECTOR, "#zero-chunks a")
    link.click()
    target = browser.find_element(By.ID, link.get_attribute("href").split("#", 1)[1])
    assert target.get_attribute("open") is not None and target.find_element(By.TAG_NAME, "pre").is_displayed()

    assert browser.execute_script("return window.__pwned === undefined")  # hostile text stayed text
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    shutil.copy(page, tmp_path / "kept.html")  # for a look after a failure (pytest keeps tmp dirs)


def test_the_coverage_map_shades_facts_and_shows_their_questions(tmp_path, browser, stub, settings_for):
    """The fact ledger's coverage map in a real browser: each fact's shade is the one its exported questions give
    it (red none, amber fewer than k, green k or more), and a click (or Enter) shows the rows that ask it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from qagen.pipeline.ingest import ingest
    from tests.test_ledger import BRIDGE, exported, ledger_only, ledger_reply, ledger_settings

    stub.handler = ledger_reply
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    (docs / "bridge.md").write_text(BRIDGE)
    ingest(docs, out, ledger_settings(settings_for, report=True), prompts_dir=ledger_only(tmp_path / "p"))
    browser.get((out / "report.html").as_uri())
    rows = exported(out)
    marks = browser.find_elements(By.CSS_SELECTOR, ".cov-text mark.fact")
    assert len(marks) >= 5
    colours = {"none": "rgba(254, 215, 215, 1)", "some": "rgba(254, 252, 191, 1)", "full": "rgba(198, 246, 213, 1)"}
    for mark in marks:
        fid, n = mark.get_attribute("data-fact"), int(mark.get_attribute("data-exposures"))
        asked = [r["messages"][-2]["content"] for r in rows if r.get("fact_id") == fid]  # questions and code-built rows
        assert n == len(asked)
        level = "full" if n >= 2 else "some" if n else "none"
        assert mark.get_attribute("class").split() == ["fact", level]
        assert mark.value_of_css_property("background-color") == colours[level]
    shaded = [m for m in marks if int(m.get_attribute("data-exposures"))]
    first, second = shaded[0], shaded[-1]
    assert not browser.find_element(By.ID, f"fact-{first.get_attribute('data-fact')}").is_displayed()
    first.click()
    panel = browser.find_element(By.ID, f"fact-{first.get_attribute('data-fact')}")
    assert panel.is_displayed() and "picked" in first.get_attribute("class")
    asked = [r["messages"][-2]["content"] for r in rows if r.get("fact_id") == first.get_attribute("data-fact")]
    assert sorted(li.text for li in panel.find_elements(By.TAG_NAME, "li")) == sorted(asked)
    second.send_keys(Keys.ENTER)  # the keyboard works too, and one panel shows at a time
    assert browser.find_element(By.ID, f"fact-{second.get_attribute('data-fact')}").is_displayed()
    assert not panel.is_displayed() and "picked" not in first.get_attribute("class")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
