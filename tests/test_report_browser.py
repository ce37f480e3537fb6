"""The HTML report in a real headless browser (Debian's chromium through chromedriver).

The report of tests/test_report.py's runs: the leaderboard has a row per system with the
right numbers and sorts; every audio element loads with a positive duration (embedded and
linked); dialogues open and filter; hostile replies render as text and run nothing; the
console stays free of errors. Every plot, of those runs and of a run made to stress the
layout (long system names, a log axis, a long stage legend), as the browser lays it out:
no two texts overlap and none leaves its SVG. Screenshots are kept in the test's temporary
folder.
"""
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import rewrite_summary, write_task
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
        place = _order(browser).index(system) + 1
        row = browser.find_element("css selector", f'#leaderboard tbody tr:nth-child({place})')
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


# Every text of every plot as the browser lays it out: its box, and the box of its SVG.
# matplotlib writes each text (a tick label, a title, a legend entry) as one <g id="text_N">.
PLOT_TEXTS = """
return Array.from(document.querySelectorAll("figure")).map(function (figure) {
  const svg = figure.querySelector("svg");
  const box = function (r) { return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
  const texts = Array.from(svg.querySelectorAll('g[id^="text_"]')).map(function (g) {
    return Object.assign({text: g.textContent.replace(/\\s+/g, " ").trim()}, box(g.getBoundingClientRect()));
  }).filter(function (t) { return t.text && t.right > t.left && t.bottom > t.top; });
  return {title: figure.querySelector("h3").textContent, svg: box(svg.getBoundingClientRect()), texts: texts};
});
"""
SLACK = 1.0  # px: a browser's rounding


def _overlap(a: dict, b: dict) -> bool:
    return (min(a["right"], b["right"]) - max(a["left"], b["left"]) > SLACK
            and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > SLACK)


def _inside(text: dict, svg: dict) -> bool:
    return (text["left"] >= svg["left"] - SLACK and text["right"] <= svg["right"] + SLACK
            and text["top"] >= svg["top"] - SLACK and text["bottom"] <= svg["bottom"] + SLACK)


def layout_problems(browser) -> list:
    """Texts of a plot that overlap another text or stick out of their SVG (clipped)."""
    problems = []
    for figure in browser.execute_script(PLOT_TEXTS):
        texts = figure["texts"]
        assert texts, figure["title"]
        problems += [(figure["title"], "clipped", t["text"]) for t in texts if not _inside(t, figure["svg"])]
        problems += [(figure["title"], "overlap", a["text"], b["text"])
                     for i, a in enumerate(texts) for b in texts[i + 1:] if _overlap(a, b)]
    return problems


LONG = "MW-cascade-with-a-long-label:voice=espeak:en-us"


@pytest.fixture(scope="module")
def stress_page(tmp_path_factory):
    """A real run made to stress the plots' layout: three systems, two of them one long label in
    two modes (names alike but for their ends), a cascade-like legend of ten stage marks for a
    breakdown of one row, judge
    scores, and first-speech latencies from 150 ms to 6 s (a log axis spanning less than two decades, where
    matplotlib's own labels pile up: "2×10²3×10²4×10²")."""
    import json

    from ivbench.config import EvalConfig, SystemConfig
    from ivbench.registry import Spec, parse_spec
    from ivbench.report import write_report
    from ivbench.runner import run_eval
    from ivbench.scoring import ScoreConfig, score_run

    root = tmp_path_factory.mktemp("stress")
    task = write_task(root / "task", [["Hello there.", "And again?"], ["One more thing."]], name="plots")
    run = root / "run"
    config = EvalConfig(task=parse_spec(str(task)), voice=parse_spec("espeak"), warmup=0, out=run,
                        modes=["s2s", "s2t"],
                        systems=[SystemConfig(Spec("report_systems:Staged"), LONG),
                                 SystemConfig(Spec("report_systems:Staged", (("stages", False), ("tone", 660.0))),
                                              "short")])
    run_eval(config, progress=False)
    score_run(run, ScoreConfig(metrics=[parse_spec("latency")]), progress=False)
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    spoken = [r for r in records if r["mode"] == "s2s"]
    rows = []
    for i, r in enumerate(spoken):
        ms = 150.0 * 40 ** (i / (len(spoken) - 1))
        rows.append({"metric": "first_speech", "system": r["system"], "dialogue_id": r["dialogue_id"],
                     "turn_index": r["turn_index"], "mode": "s2s", "status": "ok", "reason": None, "details": {},
                     "values": {"first_speech_ms": ms, "vad_onset_ms": ms * 1e-7}})  # a long decimal
    for i, r in enumerate(records):  # a quality number, for the quality-against-latency plot
        rows.append({"metric": "judge", "system": r["system"], "dialogue_id": r["dialogue_id"],
                     "turn_index": r["turn_index"], "mode": r["mode"], "status": "ok", "reason": None,
                     "details": {}, "values": {"score": 2.0 + i % 3}})
    with open(run / "scores.jsonl", "a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    rewrite_summary(run, ["latency", "first_speech", "judge"])
    return write_report([run], root / "report.html", audio="none")


def test_no_plot_text_overlaps_another_or_leaves_its_svg(browser, pages, stress_page, tmp_path):
    for name, page in (("runs", pages["embed"]), ("stress", stress_page)):
        _open(browser, page)
        figures = browser.find_elements("css selector", "figure")
        assert len(figures) == 5, name  # every plot, the stage breakdown included
        for i, figure in enumerate(figures):
            browser.execute_script("arguments[0].scrollIntoView()", figure)
            figure.screenshot(str(tmp_path / f"{name}-{i}.png"))
        assert layout_problems(browser) == [], name
    figures = browser.execute_script(PLOT_TEXTS)
    texts = [t["text"] for f in figures for t in f["texts"]]
    # The log axis is labelled with plain numbers, every stage is named, and the two long names,
    # however shortened, are told apart in every plot.
    assert not [t for t in texts if re.search(r"\d\s*×\s*1\s*0", t)] and "1000" in texts  # no "2×10²"
    for figure in figures:
        names = {t["text"] for t in figure["texts"] if t["text"].startswith("MW-cascade")}
        assert sorted(name[-4:] for name in names) in (["@s2s"], ["@s2s", "@s2t"]), (figure["title"], names)
    from report_systems import STAGES

    assert set(STAGES) <= set(texts)
    assert _console_errors(browser) == []


def test_latency_rows_stay_with_their_system(browser, stress_page):
    """A system without values in a panel keeps its row, marked "no value": the boxes of the
    others stay beside their own names (the panels share one set of row labels)."""
    _open(browser, stress_page)
    figure = next(f for f in browser.execute_script(PLOT_TEXTS) if f["title"] == "Latency distributions")
    middle = {t["text"]: (t["top"] + t["bottom"]) / 2 for t in figure["texts"] if "@" in t["text"]}
    assert len(middle) == 4
    empty = [(t["top"] + t["bottom"]) / 2 for t in figure["texts"] if t["text"] == "no value"]
    # S2T replies have no audio: no first packet, no first speech, in 2 panels × 2 systems.
    assert len(empty) == 4
    s2t = [y for name, y in middle.items() if name.endswith("@s2t")]
    assert all(min(abs(y - row) for row in s2t) < 2 for y in empty)
