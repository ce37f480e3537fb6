"""The HTML report in a real headless browser (Debian's chromium through chromedriver).

The report of tests/test_report.py's runs: the leaderboard has a row per system with the
right numbers and sorts; every audio element loads with a positive duration (embedded and
linked); dialogues open and filter; hostile replies render as text and run nothing; the
console stays free of errors. Screenshots are kept in the test's temporary folder.
"""
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from test_report import ODD_ID, XSS_IMG, XSS_TEXT, make_runs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="Debian's chromium and chromium-driver are not installed "
           "(apt-get install chromium chromium-driver; .ci/run installs them)")

SYSTEMS = ["alpha [run1]", "beta", "alpha [run2]"]
# Loading every clip of the page at once: resolves with each element's outcome.
LOAD_ALL_AUDIO = """
const done = arguments[arguments.length - 1];
const els = Array.from(document.querySelectorAll("audio"));
const out = [];
let left = els.length;
if (!left) { done(out); }
els.forEach(function (a, i) {
  function finish(ok) {
    if (out[i]) { return; }
    out[i] = {ok: ok, duration: a.duration, error: a.error ? a.error.code : null, src: a.currentSrc.slice(0, 60)};
    left -= 1;
    if (left === 0) { done(out); }
  }
  a.addEventListener("loadedmetadata", function () { finish(true); });
  a.addEventListener("error", function () { finish(false); });
  a.preload = "metadata";
  a.load();
});
"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    from ivbench.report import write_report

    root = tmp_path_factory.mktemp("browser")
    runs = make_runs(root)
    return {"embed": write_report(list(runs), root / "report.html"),
            "link": write_report(list(runs), root / "linked" / "report.html", audio="link")}


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="ivbench-chromium-")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(browser, path: Path) -> None:
    browser.get(path.resolve().as_uri())
    browser.get_log("browser")  # start each test with an empty console


def _console_errors(browser) -> list:
    return [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]


def _order(browser) -> list:
    return [r.get_attribute("data-system") for r in browser.find_elements("css selector", "#leaderboard tbody tr")]


def _column(browser, title: str) -> int:
    heads = browser.find_elements("css selector", "#leaderboard thead th")
    return next(i for i, h in enumerate(heads) if h.text.startswith(title))


def test_leaderboard_rows_numbers_missing_cells_and_sorting(browser, pages, tmp_path):
    _open(browser, pages["embed"])
    assert _order(browser) == SYSTEMS
    judge, wer, failed = _column(browser, "judge"), _column(browser, "ASR-WER"), _column(browser, "failed")

    def cell(system, col):
        row = browser.find_element("css selector", f'#leaderboard tbody tr:nth-child({_order(browser).index(system) + 1})')
        return row.find_elements("css selector", "td")[col]

    assert cell("alpha [run1]", judge).text.startswith("4.50")
    assert "1 missing" in cell("alpha [run1]", judge).text
    assert cell("alpha [run1]", wer).text.startswith("25.0%") and cell("beta", wer).text.startswith("8.3%")
    assert "best" in cell("beta", wer).get_attribute("class")
    assert [cell(s, failed).text for s in SYSTEMS] == ["1", "0", "1"]
    # Missing values are marked and explained (tooltip and numbered note), never shown as 0.
    missing = cell("beta", judge)
    assert missing.text.startswith("n/a") and "no judge configured" in missing.get_attribute("title")
    notes = browser.find_element("css selector", "ol.footnotes").text
    assert "no judge configured" in notes and "was not run for this system" in notes and "failed" in notes
    assert cell("alpha [run2]", wer).text.startswith("n/a")

    header = browser.find_elements("css selector", "#leaderboard thead th")[wer]
    header.click()  # worst first, missing last
    assert _order(browser) == ["alpha [run1]", "beta", "alpha [run2]"]
    header.click()
    assert _order(browser) == ["beta", "alpha [run1]", "alpha [run2]"]
    browser.find_elements("css selector", "#leaderboard thead th")[0].click()
    assert _order(browser) == sorted(SYSTEMS, reverse=True)
    browser.save_screenshot(str(tmp_path / "leaderboard.png"))
    assert _console_errors(browser) == []


@pytest.mark.parametrize("mode", ["embed", "link"])
def test_every_audio_element_loads_with_a_positive_duration(browser, pages, mode):
    _open(browser, pages[mode])
    results = browser.execute_async_script(LOAD_ALL_AUDIO)
    assert len(results) == 10  # 7 replies (2 turns failed) + 3 user turns
    for r in results:
        assert r["ok"], r
        assert r["duration"] > 0.3 and math.isfinite(r["duration"]), r
    assert all(r["src"].startswith("data:audio/ogg" if mode == "embed" else "file:") for r in results)
    assert _console_errors(browser) == []


def test_drill_down_and_filters(browser, pages, tmp_path):
    _open(browser, pages["embed"])
    dialogues = browser.find_elements("css selector", "details.dlg")
    assert len(dialogues) == 2 and not any(d.get_attribute("open") for d in dialogues)
    first = dialogues[0]
    first.find_element("css selector", "summary").click()
    assert first.get_attribute("open") is not None
    cards = first.find_elements("css selector", ".card[data-system]")
    assert {c.get_attribute("data-system") for c in cards} == set(SYSTEMS) and all(c.is_displayed() for c in cards)
    assert ODD_ID in first.find_element("css selector", "summary").text
    failed_card = next(c for c in cards if c.get_attribute("data-failed") == "1")
    assert "RuntimeError: <b>boom</b> & </script>" in failed_card.text
    diff = first.find_element("css selector", ".diff")
    assert diff.find_elements("css selector", "del") and diff.find_elements("css selector", "ins")
    browser.execute_script("arguments[0].scrollIntoView()", first)
    browser.save_screenshot(str(tmp_path / "dialogue.png"))

    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", browser.find_element("id", "f-failed"))
    browser.find_element("id", "f-failed").click()
    visible = [d for d in dialogues if d.is_displayed()]
    assert len(visible) == 1 and ODD_ID in visible[0].text
    assert "1 of 2 dialogues" in browser.find_element("id", "f-count").text
    browser.find_element("id", "f-failed").click()
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "f-system")).select_by_visible_text("beta")
    shown = {c.get_attribute("data-system") for c in first.find_elements("css selector", ".card[data-system]")
             if c.is_displayed()}
    assert shown == {"beta"}
    Select(browser.find_element("id", "f-system")).select_by_index(0)
    Select(browser.find_element("id", "f-order")).select_by_value("wer")
    ordered = browser.find_elements("css selector", "details.dlg")
    assert ordered[0].get_attribute("data-wer") == "0.5"
    assert _console_errors(browser) == []


def test_hostile_text_renders_as_text_and_runs_nothing(browser, pages):
    from selenium.common.exceptions import NoAlertPresentException

    _open(browser, pages["embed"])
    browser.find_element("id", "f-open").click()
    assert browser.execute_script("return window.__pwned === undefined")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    texts = [e.text for e in browser.find_elements("css selector", ".card .txt")]
    assert XSS_TEXT in texts and XSS_IMG in texts
    assert browser.find_elements("css selector", ".card img") == []
    assert len(browser.find_elements("css selector", "script")) == 1
    raw = browser.find_elements("css selector", "details.raw pre")
    assert any("window.__pwned = 3" in browser.execute_script("return arguments[0].textContent", r) for r in raw)
    assert _console_errors(browser) == []
