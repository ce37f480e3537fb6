"""The comparison report: numbers, missing values, escaping, formats and the CLI.

`make_runs` builds two real run directories (the runner, a scripted system, eSpeak user
turns) and adds judge, ASR-WER and DNSMOS results with known values, so every number the
report shows can be checked. tests/test_report_browser.py opens the same report in Chromium.
"""
import csv
import html
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_user_error, rewrite_summary, write_task

from ivbench.cli import main
from ivbench.config import EvalConfig, SystemConfig
from ivbench.registry import Spec, parse_spec
from ivbench.runner import run_eval
from ivbench.scoring import ScoreConfig, score_run
from plugins.report_scripted import ERROR, XSS_IMG, XSS_TEXT

XSS_JUDGE = "Score: 4\n</script><script>window.__pwned = 3</script>"
# The system (a real module, loaded by path as a user's plugin file is): its replies carry XSS_TEXT
# and XSS_IMG, and the turn `fail_on` names fails with ERROR.
SYSTEM = Path(__file__).resolve().parent / "plugins" / "report_scripted.py"

ODD_ID = 'd"<i>1'
DIALOGUES = [[ODD_ID, ["Say <b>hi</b> & \"bye\"", "</script><script>window.__pwned = 5</script> again?"]],
             ["plain", ["What time is it?"]]]


def _alignment(ref, hyp, ops):
    return [{"op": op, "ref": r.split(), "hyp": h.split()} for op, r, h in ops]


def _row(metric, system, dialogue_id, turn_index, values, status="ok", reason=None, details=None):
    return {"metric": metric, "system": system, "dialogue_id": dialogue_id, "turn_index": turn_index,
            "mode": "s2s", "values": values, "status": status, "reason": reason, "details": details or {}}


def _known_scores(system, failed_turn):
    """Judge, ASR-WER and DNSMOS results with known values (what the metrics would have written)."""
    rows = []
    judge = {(ODD_ID, 0): 4.0, ("plain", 0): 5.0} if system == "alpha" else {}
    wer = ({(ODD_ID, 0): (2, 4), ("plain", 0): (0, 4)} if system == "alpha"
           else {(ODD_ID, 0): (1, 4), (ODD_ID, 1): (0, 4), ("plain", 0): (0, 4)})
    for dialogue_id, turn in ((ODD_ID, 0), (ODD_ID, 1), ("plain", 0)):
        failed = (dialogue_id, turn) == failed_turn
        if failed:
            why = f"the system's turn failed: RuntimeError: {ERROR}"
            rows.append(_row("judge", system, dialogue_id, turn, {"score": None}, "missing", why))
            rows.append(_row("asr_wer", system, dialogue_id, turn,
                             {"wer": None, "cer": None, "errors": None, "ref_words": None}, "missing", why))
            rows.append(_row("dnsmos", system, dialogue_id, turn, {"ovrl": None}, "missing", why))
            continue
        if system == "alpha":
            rows.append(_row("judge", system, dialogue_id, turn, {"score": judge[(dialogue_id, turn)]},
                             details={"raw_replies": [XSS_JUDGE], "judge_model": "fake-judge"}))
        else:
            rows.append(_row("judge", system, dialogue_id, turn, {"score": None}, "missing",
                             "no judge configured (--judge-model)"))
        errors, words = wer[(dialogue_id, turn)]
        ops = ([("equal", "it", "it"), ("substitute", "is", "was"), ("delete", "noon", ""),
                ("insert", "", "<script>x</script>"), ("equal", "today", "today")] if errors == 2 else
               [("equal", "it is", "it is"), ("substitute", "noon", "moon"), ("equal", "today", "today")]
               if errors == 1 else [("equal", "it is noon today", "it is noon today")])
        rows.append(_row("asr_wer", system, dialogue_id, turn,
                         {"wer": errors / words, "cer": errors / 16, "errors": float(errors),
                          "ref_words": float(words)},
                         details={"alignment": _alignment("", "", ops)}))
        rows.append(_row("dnsmos", system, dialogue_id, turn, {"ovrl": 3.0 + 0.5 * turn if system == "alpha" else 2.0}))
    return rows


def make_runs(root: Path, known_scores: bool = True) -> tuple[Path, Path]:
    """run1: systems alpha (fails on d"<i>1 turn 2) and beta; run2: alpha again, latency only."""
    task = write_task(root / "task", [turns for _, turns in DIALOGUES], name="tiny<b>")
    lines = [json.dumps({"id": i, "category": "<i>cat</i>", "turns": turns}) for i, turns in DIALOGUES]
    (root / "task" / "tiny<b>.jsonl").write_text("\n".join(lines) + "\n")
    system = f"{SYSTEM}:Scripted"
    runs = []
    for name, systems in (("run1", [("alpha", f"{ODD_ID}#1", 440.0), ("beta", None, 660.0)]),
                          ("run2", [("alpha", f"{ODD_ID}#1", 550.0)])):
        config = EvalConfig(task=parse_spec(str(task)), voice=parse_spec("espeak"), warmup=0, out=root / name,
                            systems=[SystemConfig(Spec(system, (("fail_on", fail), ("tone", tone))), label)
                                     for label, fail, tone in systems])
        run_eval(config, progress=False)
        score_run(root / name, ScoreConfig(metrics=[parse_spec("latency")]), progress=False)
        runs.append(root / name)
    if known_scores:
        rows = [json.loads(line) for line in (runs[0] / "scores.jsonl").read_text().splitlines()]
        rows += _known_scores("alpha", (ODD_ID, 1)) + _known_scores("beta", None)
        (runs[0] / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        rewrite_summary(runs[0], ["latency", "judge", "asr_wer", "dnsmos"])
    return runs[0], runs[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("report"))


def _cells(html_text: str, system: str) -> list[str]:
    """The leaderboard cells of one system's row, as text."""
    row = re.search(rf'<tr data-system="{re.escape(html.escape(system))}">(.*?)</tr>', html_text, flags=re.S)
    assert row, system
    return [re.sub(r"<[^>]+>", " ", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), flags=re.S)]


def test_leaderboard_numbers_best_and_missing_cells(runs):
    from ivbench.report.data import load_report_data
    from ivbench.report.leaderboard import build_leaderboard

    data = load_report_data(list(runs))
    assert data.systems == ["alpha [run1]", "beta", "alpha [run2]"]  # one label, two runs: both named
    board = build_leaderboard(data)
    titles = {c.title: c for c in board.columns}
    judge, wer = titles["judge"], titles["ASR-WER"]
    a, b, a2 = (board.rows[s] for s in data.systems)
    assert a[judge.key].value == pytest.approx(4.5)
    assert a[judge.key].missing == 1 and "failed" in a[judge.key].note and "1 of 3" in a[judge.key].note
    assert b[judge.key].value is None and "no judge configured" in b[judge.key].note
    assert a2[judge.key].value is None and "not run" in a2[judge.key].note
    assert a[wer.key].value == pytest.approx(2 / 8) and b[wer.key].value == pytest.approx(1 / 12)
    assert b[wer.key].best and not a[wer.key].best  # lower WER is better
    assert a["failed"].value == 1 and b["failed"].value == 0 and a2["failed"].value == 1
    assert a["turns"].value == 3
    dnsmos = titles["DNSMOS"]
    assert a[dnsmos.key].value == pytest.approx(3.0) and a[dnsmos.key].best
    latency = titles["1st audio p50 ms"]
    assert all(board.rows[s][latency.key].value > 0 for s in data.systems)
    assert any("Not scored" in n for n in board.notes)


def test_html_escapes_everything_from_runs(runs, tmp_path):
    from ivbench.report import write_report

    page = write_report(list(runs), tmp_path / "r.html").read_text()
    # Exactly one script element (ours); every hostile string appears only escaped.
    assert len(re.findall(r"<script", page, flags=re.I)) == 1
    assert "onerror=" not in page.replace("onerror=&quot;", "")
    for raw in (XSS_TEXT, XSS_IMG, "<b>boom</b>", "<b>hi</b>", "<i>cat</i>", ODD_ID, "tiny<b>"):
        assert raw not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;window.__pwned = 2&quot;&gt;" in page
    assert 'data-task="tiny&lt;b&gt;"' in page
    csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1))
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_html_renders_transcript_differences_and_judge_replies(runs, tmp_path):
    from ivbench.report import write_report

    page = write_report(list(runs), tmp_path / "r.html").read_text()
    assert "<del>is</del> <ins>was</ins>" in page
    assert '<del title="deletion: “noon” not said">noon</del>' in page
    assert "<ins title=\"insertion: “&lt;script&gt;x&lt;/script&gt;” said, not written\">" in page
    assert "Score: 4\n&lt;/script&gt;&lt;script&gt;window.__pwned = 3&lt;/script&gt;" in page
    assert "fake-judge" in page  # the judge model in the header
    # 9 turns, 2 of them failed without audio; each user turn once (the same speech in both runs)
    assert page.count("<audio ") == 9 - 2 + 3
    assert 'src="data:audio/ogg;base64,' in page
    for title in ("Quality against latency", "Latency distributions", "Every metric", "Quality by turn",
                  "Stage breakdown"):
        assert title in page
    assert page.count("<svg") == 5
    assert re.search(r"stages: asr_done \d", page)
    assert "<th>systems as loaded</th>" in page and "<summary>" in page  # the manifest's load notes
    # What the system heard, escaped like every other text.
    assert "user turn as this system heard it" in page
    assert "heard: Say &lt;b&gt;hi&lt;/b&gt; &amp; &quot;bye&quot;" in page


def test_a_missing_audio_file_is_marked_and_the_rest_renders(runs, tmp_path):
    import shutil

    from ivbench.report import write_report

    copy = tmp_path / "run1"
    shutil.copytree(runs[0], copy)
    gone = next((copy / "audio" / "beta").rglob("*.wav"))
    gone.unlink()
    page = write_report([copy], tmp_path / "r.html").read_text()
    assert page.count("reply audio: audio file not readable") == 1
    assert page.count('src="data:audio/ogg;base64,') == 5 - 1 + 3


def test_audio_link_and_none(runs, tmp_path):
    from ivbench.report import write_report

    out = tmp_path / "sub" / "r.html"
    page = write_report(list(runs), out, audio="link").read_text()
    srcs = re.findall(r'<audio [^>]*src="([^"]+)"', page)
    assert srcs and all(not s.startswith("data:") for s in srcs)
    assert all((out.parent / s).is_file() for s in srcs if "%" not in s)
    assert "<audio " not in write_report(list(runs), out, audio="none").read_text()
    with pytest.raises(ValueError):
        write_report(list(runs), out, audio="loud")


@pytest.mark.parametrize("seconds", [2.0, 0.3])  # 0.3 s: the whole stream in one Ogg page
def test_embedded_audio_is_opus_that_decodes_to_the_same_duration(tmp_path, seconds):
    import av
    import numpy as np

    from ivbench.audio import write_wav
    from ivbench.report.audio import BITRATE, encode_opus
    from ivbench.types import Audio

    t = np.arange(int(22050 * seconds)) / 22050
    write_wav(tmp_path / "a.wav", Audio((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 22050))
    blob = encode_opus(tmp_path / "a.wav")
    assert blob[:4] == b"OggS" and b"OpusHead" in blob[:64]
    with av.open(io.BytesIO(blob)) as container:
        assert container.streams.audio[0].codec_context.name == "opus"
        decoded = sum(frame.samples for frame in container.decode(audio=0)) / 48000
    assert abs(decoded - seconds) < 0.03
    assert len(blob) < seconds * BITRATE / 8 * 1.3 + 300  # about the target bitrate, plus the headers


def test_markdown_and_csv(runs, tmp_path):
    from ivbench.report import write_report

    md = write_report(list(runs), tmp_path / "r.md", fmt="md").read_text()
    assert "| alpha \\[run1\\] |" in md
    row = next(line for line in md.splitlines() if line.startswith("| beta "))
    assert "**8.3\\%**" in row and "n/a[^" in row
    assert "no judge configured" in md
    table = list(csv.DictReader(io.StringIO(write_report(list(runs), tmp_path / "r.csv", fmt="csv").read_text())))
    assert [r["system"] for r in table] == ["alpha [run1]", "beta", "alpha [run2]"]
    assert float(table[0]["judge"]) == pytest.approx(4.5) and table[1]["judge"] == ""
    assert "no judge configured" in table[1]["judge why"]
    # Each column holds one type: counts in "missing", reasons in "why".
    assert all(r[f"{c} missing"].isdigit() for r in table for c in ("judge", "ASR-WER"))
    assert table[0]["judge missing"] == "1" and "1 of 3 results have no value" in table[0]["judge why"]
    assert float(table[1]["ASR-WER"]) == pytest.approx(1 / 12, rel=1e-4)


def test_csv_defuses_formulas(tmp_path):
    from ivbench.report.render_text import _defuse, md_escape

    assert _defuse("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _defuse("alpha") == "alpha" and _defuse(1.5) == 1.5
    assert md_escape("a|b <i>") == "a\\|b &lt;i&gt;"


def test_report_command_and_default_path(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report", str(runs[0]), str(runs[1])])
    assert result.exit_code == 0, result.output
    out = Path("reports") / "run1__run2.html"
    assert f"report: {out}" in result.output and out.stat().st_size > 10000
    result = CliRunner().invoke(main, ["report", str(runs[0]), "--format", "md", "-o", "x/y.md"])
    assert result.exit_code == 0 and Path("x/y.md").read_text().startswith("# ivbench report: run1")
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code != 0 and "not a run directory" in result.output
    # -o under a file (or anywhere it cannot be written) was a traceback "bug in ivbench".
    Path("afile").write_text("x")
    result = CliRunner().invoke(main, ["report", str(runs[0]), "--format", "md", "-o", "afile/r.md"])
    assert_user_error(result, "report: cannot write afile/r.md (afile: ", "give another path with -o")
    # The same run twice (a repeated path, a trailing slash) was compared with itself as two systems.
    for twice in ([str(runs[0]), str(runs[0]) + "/"], [str(runs[0]), str(runs[1]), os.path.relpath(runs[0])]):
        result = CliRunner().invoke(main, ["report", *twice, "--format", "md", "-o", "twice.md"])
        assert_user_error(result, f"the run directory {runs[0]} is named twice", "name each run once")
        assert not Path("twice.md").exists()


def test_eval_writes_the_report_and_prints_its_path(tmp_path, monkeypatch):
    import time

    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path / "t", [["Hello there."], ["One more.", "And again."]])
    shutil.copy(SYSTEM, tmp_path / "scripted.py")  # a plugin file next to the user's command
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["eval", "--task", str(task), "--system", "./scripted.py:Scripted",
                                       "--voice", "espeak", "--warmup", "0", "--out", "run", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"report: {Path('run') / 'report.html'}" in result.output
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.count('<tr data-system="./scripted.py:Scripted">') == 1 and "1st audio p50 ms" in page
    assert time.perf_counter() - start < 60


def test_unscored_run_reads_latency_off_the_records(tmp_path):
    from ivbench.report import write_report
    from ivbench.report.data import load_report_data

    task = write_task(tmp_path / "t", [["Hello."]])
    config = EvalConfig(task=parse_spec(str(task)), voice=parse_spec("espeak"), warmup=0, out=tmp_path / "run",
                        systems=[SystemConfig(Spec(f"{SYSTEM}:Scripted"), "s")])
    run_eval(config, progress=False)
    data = load_report_data([tmp_path / "run"])
    assert data.runs[0].derived_latency and {r.metric for r in data.rows} == {"latency"}
    page = write_report([tmp_path / "run"], tmp_path / "r.html", audio="none").read_text()
    assert "read off the records: the run was not scored" in page
    # Scored, but without latency (`ivbench score RUN --metrics judge`): the note used to say
    # the run was not scored.
    score_run(tmp_path / "run", ScoreConfig(metrics=[parse_spec("judge")]), progress=False)
    page = write_report([tmp_path / "run"], tmp_path / "r.html", audio="none").read_text()
    assert "read off the records: its scores.jsonl has no latency" in page and "not scored" not in page


@pytest.mark.parametrize("damage, why", [
    (b'{"metric": "latency", "sys', "Unterminated string"),  # torn: a copy cut short
    (b"\xff\xfe\x00garbage\n", "'utf-8' codec can't decode byte 0xff"),  # was a traceback
    (b'{"metric": "latency", "system": "alpha", "dialogue_id": "d0", "turn_index": 0, "mode": "t2t", '
     b'"values": [1], "status": "ok"}\n', "'values' is list, not an object"),  # was a traceback
])
def test_a_damaged_scores_file_is_one_line_naming_its_line(runs, tmp_path, damage, why):
    run = tmp_path / "damaged"
    shutil.copytree(runs[1], run)
    n = len((run / "scores.jsonl").read_bytes().splitlines())
    with open(run / "scores.jsonl", "ab") as f:
        f.write(damage)
    result = CliRunner().invoke(main, ["report", str(run), "--format", "md", "-o", str(tmp_path / "r.md")])
    assert_user_error(result, f"{run}/scores.jsonl:{n + 1}: corrupt score line", why,
                      f"the file was edited or damaged: `ivbench score {run}` rewrites it")


def test_a_run_without_its_summary_keeps_the_directions_of_built_in_metrics(runs, tmp_path):
    """summary.csv gone or cut short (scoring interrupted after scores.jsonl, a partial copy): the
    columns lost which way is better, so no best and no paired test; a header without "metric"
    was a KeyError traceback."""
    from ivbench.report import write_report

    expected = write_report([runs[0]], tmp_path / "whole.md", fmt="md").read_text().splitlines()[4]
    assert "DNSMOS ↑" in expected and "1st audio p50 ms ↓" in expected
    for damage in (None, b"system,metri", b"a,b\n1,2\n"):
        run = tmp_path / f"damaged{len(damage or b'')}"
        shutil.copytree(runs[0], run)
        if damage is None:
            (run / "summary.csv").unlink()
        else:
            (run / "summary.csv").write_bytes(damage)
        page = write_report([run], tmp_path / "r.md", fmt="md").read_text().splitlines()
        assert page[4] == expected, (damage, page[4])


def test_a_run_with_no_turn_recorded_yet_says_so(runs, tmp_path):
    """A run cut before its first turn, reported with another: its line read "systems , created"."""
    from ivbench.report import write_report

    empty = tmp_path / "empty"
    shutil.copytree(runs[1], empty)
    for name in ("records.jsonl", "scores.jsonl", "summary.csv"):
        (empty / name).unlink()
    page = write_report([empty, runs[0]], tmp_path / "r.md", fmt="md").read_text()
    assert "- run empty: task tiny&lt;b&gt;, systems none yet (no turn recorded), created" in page, page
    page = write_report([empty, runs[0]], tmp_path / "r.html", audio="none").read_text()
    assert "none yet (no turn recorded)" in page


def test_runs_of_different_tasks_are_never_paired(tmp_path):
    """Two task files both number their dialogues d0, d1: a report of a run of each paired
    unrelated turns by (dialogue id, turn) in its paired tests (and its significance marks)."""
    from ivbench.report.data import load_report_data
    from ivbench.report.leaderboard import build_leaderboard

    for name, texts in (("ta", [["Hello there."], ["Good morning."]]), ("tb", [["What time is it?"], ["Bye."]])):
        task = write_task(tmp_path / name, texts, name=name)
        for label in ("x", "y"):
            out = tmp_path / f"{name}-{label}"
            run_eval(EvalConfig(task=parse_spec(str(task)), warmup=0, out=out, modes=["t2t"],
                                systems=[SystemConfig(Spec("parrot"), f"{label}-{name}")]), progress=False)
            score_run(out, ScoreConfig(metrics=[parse_spec("latency")]), progress=False)
    data = load_report_data([tmp_path / "ta-x", tmp_path / "tb-x", tmp_path / "ta-y"])
    pairs = {(t["system_a"], t["system_b"]) for t in data.pairwise.to_dict("records")}
    assert pairs == {("x-ta", "y-ta")}, pairs
    notes = build_leaderboard(data).notes
    assert any("different tasks (ta: x-ta, y-ta; tb: x-tb)" in note for note in notes), notes
    # One task: nothing changes (summary.csv's own pairwise.csv has no task column either).
    assert "task" not in load_report_data([tmp_path / "ta-x", tmp_path / "ta-y"]).frame.columns


# -- what a task's references are: ref-WER is a headline only against the words to say ------

def _ref_wer_row(record, errors, words):
    return _row("ref_wer", record["system"], record["dialogue_id"], record["turn_index"],
                {"wer": errors / words, "cer": errors / words, "errors": float(errors), "ref_words": float(words)},
                details={"alignment": _alignment("", "", [("substitute", "it is noon", "twelve o'clock it is")]),
                         "hyp_source": "transcript"})


def make_reference_runs(root: Path) -> dict[str, Path]:
    """Two real runs of one system: a task of reference answers (the header's default) and a
    read-aloud task declaring `references: expected-words`; each with known ref_wer results
    (250% on the answers, 25% on the words to say)."""
    runs = {}
    for kind, (errors, words) in (("answers", (10, 4)), ("expected-words", (1, 4))):
        task = write_task(root / kind, [["Say: it is noon.", "Say: it is one."]], name=f"task-{kind}")
        turns = [{"text": f"Say: it is {t}.", "reference": f"It is {t}."} for t in ("noon", "one")]
        (root / kind / f"task-{kind}.jsonl").write_text(json.dumps({"id": "d0", "turns": turns}) + "\n")
        if kind == "expected-words":
            task.write_text(task.read_text() + "references: expected-words\n")
        config = EvalConfig(task=parse_spec(str(task)), voice=parse_spec("espeak"), warmup=0, out=root / f"run-{kind}",
                            systems=[SystemConfig(Spec("report_systems:Staged", (("stages", False),)), "reader")])
        run_eval(config, progress=False)
        score_run(root / f"run-{kind}", ScoreConfig(metrics=[parse_spec("latency")]), progress=False)
        records = [json.loads(line) for line in (root / f"run-{kind}" / "records.jsonl").read_text().splitlines()]
        with open(root / f"run-{kind}" / "scores.jsonl", "a") as f:
            f.writelines(json.dumps(_ref_wer_row(r, errors, words)) + "\n" for r in records)
        runs[kind] = root / f"run-{kind}"
    return runs


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    return make_reference_runs(tmp_path_factory.mktemp("references"))


def test_the_task_header_says_what_its_references_are(tmp_path):
    import yaml

    from ivbench.errors import TaskFileError
    from ivbench.tasks.loader import load_task_file

    task = write_task(tmp_path, [["Hello."]])
    assert load_task_file(task).references == "answers"  # the default
    task.write_text(task.read_text() + "references: expected-words\n")
    assert load_task_file(task).references == "expected-words"
    task.write_text(task.read_text().replace("expected-words", "transcripts"))
    with pytest.raises(TaskFileError, match=r"tiny\.yaml:\d+: field 'references': 'transcripts' is not a kind"):
        load_task_file(task)
    # Every built-in task says what its references are, in so many words.
    from conftest import ROOT

    for path in sorted((ROOT / "tasks").glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["references"] == "answers", path
        assert load_task_file(path).references == "answers"


def test_ref_wer_against_answers_is_kept_but_no_headline(reference_runs, tmp_path):
    from ivbench.report import write_report
    from ivbench.report.data import load_report_data
    from ivbench.report.leaderboard import build_leaderboard
    from ivbench.report.plots import metric_means
    from ivbench.store import RunStore

    run = reference_runs["answers"]
    assert RunStore(run).read_manifest()["task"]["references"] == "answers"
    data = load_report_data([run])
    board = build_leaderboard(data)
    assert not [c for c in board.columns if c.metric == "ref_wer"]
    note = next(n for n in board.notes if n.startswith("ref_wer"))
    assert "references: answers" in note and "here 250.0%–250.0%" in note and "summary.csv" in note
    # Kept: in the summary (as summary.csv has it) and in each reply's scores, named for what it is.
    s = data.summary
    assert s[(s["metric"] == "ref_wer") & (s["field"] == "wer_corpus")]["value"].tolist() == [2.5]
    page = write_report([run], tmp_path / "r.html", audio="none").read_text()
    assert page.count("ref_wer · wording vs the reference answer</th>") == 2
    assert page.count("reply against the reference answer (wording, not quality)") == 2  # the alignments
    assert "wording only, a good reply words it differently" in page
    assert "ref-WER ↓</th>" not in page and "ref_wer" not in metric_means(data)[1]  # no column, no plot
    assert page.count('<div class="lbl">reference answer</div>') == 2 and "references: answers" in page
    md = write_report([run], tmp_path / "r.md", fmt="md").read_text()
    assert "| ref-WER" not in md and "references: answers" in md


def test_ref_wer_against_the_words_to_say_is_a_headline(reference_runs):
    from ivbench.report.audio import AudioSources
    from ivbench.report.data import load_report_data
    from ivbench.report.leaderboard import WORDING_ONLY, build_leaderboard
    from ivbench.report.render_html import render_html

    data = load_report_data([reference_runs["expected-words"]])
    board = build_leaderboard(data)
    col = next(c for c in board.columns if c.title == "ref-WER")
    assert board.rows["reader"][col.key].value == pytest.approx(0.25)
    assert not any(n.startswith("ref_wer") for n in board.notes)
    page = render_html(data, board, [], [], AudioSources("none", Path(".")), "t")
    assert page.count('<div class="lbl">expected words</div>') == 2 and "ref_wer · wording" not in page
    assert "references: expected-words" in page  # the run's task, in the runs section
    # Both runs in one report: the column is there for the read-aloud task only.
    data = load_report_data([reference_runs["answers"], reference_runs["expected-words"]])
    board = build_leaderboard(data)
    col = next(c for c in board.columns if c.title == "ref-WER")
    answers, words = (board.rows[f"reader [run-{kind}]"][col.key] for kind in ("answers", "expected-words"))
    assert answers.value is None and answers.note == WORDING_ONLY
    assert words.value == pytest.approx(0.25) and words.best is False  # no contest with a non-number
    assert any("task-answers" in n for n in board.notes if n.startswith("ref_wer"))


def test_console_leaderboard_follows_the_task_header(reference_runs):
    """The terminal's leaderboard is the report's (one model, rendered as text): ref-WER is a
    column only where the task's references are the words to say, with the note otherwise."""
    from ivbench.scoring import plan_metrics
    from ivbench.store import RunStore
    from ivbench.store.scores import read_scores
    from ivbench.scoring.summary import references_of, write_summary

    for kind, shown in (("answers", False), ("expected-words", True)):
        run = reference_runs[kind]
        store = RunStore(run)
        metrics = dict(plan_metrics([parse_spec("latency"), parse_spec("ref_wer")]))
        write_summary(run, store.records(), read_scores(run), metrics, store.read_manifest())
        assert "ref_wer,wer_corpus" in (run / "summary.csv").read_text()  # computed either way
        assert references_of(store.read_manifest()) == kind
        result = CliRunner().invoke(main, ["show", str(run)])
        assert result.exit_code == 0, result.output
        assert ("ref-WER ↓" in result.output) is shown  # the column's title
        assert ("25.0%" in result.output) is shown
        assert ("note: ref_wer is not a quality number" in result.output) is not shown
    assert references_of({}) == references_of({"task": {"references": "bogus"}}) == "answers"  # older runs


# -- plots ------------------------------------------------------------------------------------

def test_a_small_value_is_not_shown_as_zero():
    """An RTF of 0.0025 (a system that answers at once) read "0.00" in the leaderboard."""
    from ivbench.report.leaderboard import fmt

    assert [fmt(0.0025), fmt(-0.004), fmt(0.0), fmt(0.123), fmt(0.0025, "rtf", "x")] == \
        ["0.0025", "-0.004", "0.00", "0.12", "0.0025"]
    assert fmt(0.00004, "wer") == "0.0%" and fmt(0.4, "first_audio_ms", "ms") == "0.40"


def test_log_axis_labels_are_plain_numbers_at_1_2_5():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ivbench.report.plots import _log_if_wide

    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.plot([150, 6000], [1, 2])
    _log_if_wide(ax, [150, 6000])  # 1.6 decades: matplotlib alone labels 2×10², 3×10², 4×10², 6×10², …
    FigureCanvasAgg(fig).draw()
    assert ax.get_xscale() == "log"
    low, high = ax.get_xlim()
    shown = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if low <= t.get_position()[0] <= high]
    assert [t.get_text() for t in shown if t.get_text()] == ["200", "500", "1000", "2000", "5000"]


def test_system_names_are_shortened_in_the_middle_and_kept_apart():
    from ivbench.report.plots import _names

    long = "a-cascade-with-a-long-label:voice=espeak:en-us"
    names = _names([f"{long}@s2s", f"{long}@s2t", "short"], 1.5)
    assert names[0].endswith("@s2s") and names[1].endswith("@s2t") and "…" in names[0] and names[2] == "short"
    # Names that only differ where the ellipsis goes are written out in full.
    assert _names([f"{long}-x-{long}", f"{long}-y-{long}"], 1.5) == [f"{long}-x-{long}", f"{long}-y-{long}"]
    assert _names(["$x$"], 3) == [r"\$x\$"]


def test_a_run_where_every_turn_failed_says_so_instead_of_plotting(tmp_path):
    from ivbench.report.data import load_report_data
    from ivbench.report.leaderboard import build_leaderboard
    from ivbench.report.plots import all_plots

    task = write_task(tmp_path / "t", [["Hello.", "Again."]])
    config = EvalConfig(task=parse_spec(str(task)), voice=parse_spec("espeak"), warmup=0, out=tmp_path / "run",
                        systems=[SystemConfig(Spec("report_systems:Staged", (("fail", True),)), "broken")])
    run_eval(config, progress=False)
    data = load_report_data([tmp_path / "run"])
    plots, notes = all_plots(data, build_leaderboard(data))
    assert plots == [] and notes == ["No plots: every one of the 2 turns failed; the leaderboard's notes and the "
                                     "dialogues below give the errors."]


def test_the_size_said_after_writing_a_small_report_is_not_zero(tmp_path):
    """`ivbench report … --format md` said "(0.0 MB)" for its 1.7 KB."""
    from ivbench.report import describe

    small, large = tmp_path / "x.md", tmp_path / "x.html"
    small.write_bytes(b"|" * 1741)
    large.write_bytes(b"<" * (3 * 2**20 // 10))
    assert describe(small) == f"{small} (1.7 KB)" and describe(large) == f"{large} (0.3 MB)"
