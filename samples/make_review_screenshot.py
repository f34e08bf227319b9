"""Make samples/review.png, the README's picture of `qagen review`, from the real page.

    python samples/make_review_screenshot.py [--out samples/review.png]

It copies samples/output (a real run of the embedded model on samples/docs) to a temporary folder, serves the
review page for it, rates six pairs through the page itself with the keyboard (rejects, rescues of pairs the judge
dropped, an edit), shows the rated ones with the checks-vs-you panel, and saves a screenshot from headless Chromium (Debian's chromium and
chromium-driver, driven by selenium). samples/output itself is not changed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qagen.review.server import ReviewServer  # noqa: E402
from qagen.store import Store  # noqa: E402


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "samples" / "review.png")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "output"
        shutil.copytree(ROOT / "samples" / "output", run_dir)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1200,1000",
                     "--hide-scrollbars", "--force-device-scale-factor=1", f"--user-data-dir={tmp}/profile"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        with Store(run_dir) as store, ReviewServer(store, 1) as server:
            try:
                driver.get(server.url)
                WebDriverWait(driver, 10).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
                body = driver.find_element(By.TAG_NAME, "body")

                def click(row: object) -> None:
                    driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click()", row)
                def row(i: int) -> object:
                    return driver.find_element(By.CSS_SELECTOR, f'.pair[data-i="{i}"]')

                # what a reader of these two documents would decide (the 135M model's pairs, as generated)
                for i, key in ((1, "r"), (3, "r"), (38, "a"), (48, "a"), (52, "r")):
                    click(row(i))  # 1, 3: invented people; 38, 48: "George Washington" wrote it, the judge was wrong
                    body.send_keys(key)
                click(row(26))  # copy and deepcopy swapped: fix the answer
                body.send_keys("e")
                box = row(26).find_element(By.CSS_SELECTOR, "textarea.ea")
                box.clear()
                box.send_keys("copy.copy(x) returns a shallow copy of x; copy.deepcopy(x) returns a deep copy.")
                box.send_keys(Keys.CONTROL, Keys.ENTER)
                WebDriverWait(driver, 10).until(
                    lambda d: d.find_elements(By.CSS_SELECTOR, '.pair[data-i="26"][data-edited=yes]'))
                Select(driver.find_element(By.ID, "show")).select_by_value("rated")
                body.send_keys("s")  # the checks against the human
                WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#stats tr[data-check]"))
                click(row(38))  # one pair open: its chunk, the answer highlighted, the check that dropped it
                driver.execute_script("window.scrollTo(0, 0)")
                time.sleep(2)  # the "saved" toast fades
                driver.save_screenshot(str(args.out))
            finally:
                driver.quit()
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
