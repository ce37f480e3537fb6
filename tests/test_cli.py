"""The command line: help, `list`, `eval -c run.yaml` with flags over the file, `show`, and
what the manifest of a run records."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy
import pytest
from click.testing import CliRunner

from conftest import ROOT, assert_user_error, write_task
from ivbench import __version__
from ivbench.cli import main

# A user's plugin file next to the command (a real module, copied into place).
SYSTEM = Path(__file__).resolve().parent / "plugins" / "shout.py"

DIALOGUES = [["Hello there.", "Second turn."], ["How are you?"], ["Third dialogue."]]


def _ivbench(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    shutil.copy(SYSTEM, tmp_path / "shout.py")
    write_task(tmp_path, DIALOGUES)  # tiny.yaml + tiny.jsonl, dialogues d0, d1, d2
    return tmp_path


# --- help -------------------------------------------------------------------------------------

def test_console_script_help_and_version():
    script = Path(sys.executable).with_name("ivbench")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: ivbench" in done.stdout
    for name in ("eval", "list", "show"):
        assert re.search(rf"^\s+{name}\s", done.stdout, re.M), done.stdout
    # `python cli.py` does what `ivbench` does.
    same = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--version"], capture_output=True, text=True,
                          timeout=60)
    assert same.returncode == 0 and same.stdout.strip() == f"ivbench, version {__version__}"


def test_every_subcommand_has_help():
    from ivbench.config import DEFAULT_SYSTEMS

    assert {"eval", "list", "show"} <= set(main.commands)
    result = _ivbench("--help")
    assert result.exit_code == 0 and "Usage:" in result.output
    # The overview's examples: every command, and what a bare `ivbench eval` runs (it said "the parrot baseline")
    examples = dict(re.findall(r"^\s+ivbench (\w+).*?  +(\S.*)$", result.output, re.M))
    assert set(examples) == set(main.commands), result.output
    assert all(system in examples["eval"] for system in DEFAULT_SYSTEMS), examples["eval"]
    for name, command in main.commands.items():
        result = _ivbench(name, "--help")
        assert result.exit_code == 0, (name, result.output)
        assert re.search(rf"^Usage: \S+ {name} \[OPTIONS\]", result.output, re.M), result.output
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.opts[-1] in result.output, (name, param.opts)


def test_score_help_speaks_of_scoring():
    """`ivbench score --help` said --device is where "systems" run and --no-cache recomputes "user-turn speech"."""
    result = _ivbench("score", "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Where metrics run" in text and "Read the score caches" in text
    assert "system" not in text and "user-turn" not in text, text
    assert "Where systems and metrics run" in " ".join(_ivbench("eval", "--help").output.split())


def test_judge_retries_help_names_every_status_retried():
    """It said "after a 429, 5xx or timeout"; 408 and 409 are retried too, and so is a lost connection."""
    from ivbench.openai_endpoint import RETRYABLE_STATUS

    text = " ".join(_ivbench("score", "--help").output.split())
    retries = text.split("--judge-retries INTEGER RANGE")[1].split("--judge-timeout FLOAT")[0]
    assert all(str(status) in retries for status in RETRYABLE_STATUS) and "5xx" in retries, retries
    assert "lost connection" in retries and "silence" in retries, retries


def test_eval_help_lists_its_flags():
    result = _ivbench("eval", "--help")
    for flag in ("--config", "--task", "--system", "--voice", "--mode", "--out", "--limit", "--warmup",
                 "--turn-timeout", "--device", "--seed", "--cache-dir", "--no-cache", "--fresh",
                 "--retry-failed"):
        assert flag in result.output, flag


# --- list -------------------------------------------------------------------------------------

def test_list_shows_the_four_kinds_with_origins():
    result = _ivbench("list")
    assert result.exit_code == 0, result.output
    sections: dict[str, list[str]] = {}
    current = None
    options: dict[str, list[str]] = {}  # plugin -> its option lines, indented under it
    for line in result.output.splitlines():
        if line and not line.startswith(" "):
            current = line.rstrip(":")
            sections[current] = []
        elif line.startswith("   ") and line.strip():
            options.setdefault(sections[current][-1].split()[0], []).append(line.strip())
        elif line.strip():
            sections[current].append(line)
    assert list(sections) == ["tasks", "systems", "metrics", "voices"]
    # every system, metric and voice (a task's options are in its description)
    assert set(options) == {e.split()[0] for k in ("systems", "metrics", "voices") for e in sections[k]}
    assert options["latency"] == ["no options"]
    assert options["first_speech"] == ["threshold=0.5, min_speech_ms=250.0, min_silence_ms=100.0"]
    assert options["dnsmos"][0].startswith("backend=fast  fast (default")  # described: one line each
    cascade = ", ".join(options["cascade"])
    assert cascade.startswith("theta=3, llm_backend=null,") and ", max_new_tokens=128," in cascade
    assert 'system_prompt="You are a helpful voice assistant. Your…"' in cascade  # a paragraph, cut
    assert options["parrot"] == ["voice=piper:joe"] and options["kokoro"] == ["variant=null, speed=1.0, lang=en-us"]
    entry = re.compile(r"\s+(\S+)\s+\[(built-in|package \S+|file .+|module .+)\].*")
    names: dict[str, dict[str, str]] = {}
    for kind, lines in sections.items():
        assert lines, f"no {kind} listed"
        for line in lines:
            match = entry.fullmatch(line)
            assert match, line
            names.setdefault(kind, {})[match.group(1)] = match.group(2)
    assert names["tasks"]["demo"] == "built-in" and names["tasks"]["mt-bench"] == "built-in"
    assert names["systems"]["parrot"] == "built-in"
    assert names["metrics"]["latency"] == "built-in"
    assert names["voices"]["piper"] == "built-in"

    only = _ivbench("list", "voices")
    assert only.exit_code == 0
    assert only.output.splitlines()[0] == "voices:" and "tasks:" not in only.output
    bad = _ivbench("list", "judges")
    assert bad.exit_code != 0 and "Invalid value" in bad.output


def test_list_shows_a_plugin_that_cannot_be_imported_and_the_rest(tmp_path):
    """`ivbench list` imports each system's module for its options: a half-written one must not stop it."""
    from ivbench.cli import _option_lines
    from ivbench.registry import Entry

    shutil.copy(ROOT / "tests" / "data" / "half_written_plugin.py.txt", tmp_path / "half.py")
    entry = Entry("systems", "half", f"{tmp_path / 'half.py'}:Half", "package half")
    (line,) = _option_lines(entry, "systems")
    assert line.startswith(f"(options not shown: {tmp_path / 'half.py'}:Half cannot be imported: SyntaxError: "), line


# --- eval -c run.yaml, flags override -----------------------------------------------------------

RUN_YAML = """\
task: ./tiny.yaml
systems:
  - {name: ./shout.py:Shout, label: shout}
limit: 2
warmup: 0
seed: 3
out: runs/from-yaml
"""


def test_eval_from_config_file(here):
    (here / "run.yaml").write_text(RUN_YAML)
    result = _ivbench("eval", "-c", "run.yaml", "--no-progress")
    assert result.exit_code == 0, result.output
    records = _records(here / "runs" / "from-yaml")
    assert sorted({r["dialogue_id"] for r in records}) == ["d0", "d1"]  # limit: 2
    assert {r["system"] for r in records} == {"shout"}
    assert [(r["dialogue_id"], r["turn_index"], r["reply_text"]) for r in records] == [
        ("d0", 0, "HELLO THERE."), ("d0", 1, "SECOND TURN."), ("d1", 0, "HOW ARE YOU?")]
    manifest = json.loads((here / "runs" / "from-yaml" / "manifest.json").read_text())
    assert manifest["config"]["limit"] == 2 and manifest["config"]["warmup"] == 0
    assert manifest["seed"] == 3 and manifest["config"]["seed"] == 3
    assert manifest["config"]["task"] == "./tiny.yaml"
    assert manifest["config"]["systems"] == ["shout"]
    assert manifest["task"]["n_dialogues"] == 2 and manifest["task"]["dialogue_ids"] == ["d0", "d1"]


def test_flags_override_the_config_file(here):
    (here / "run.yaml").write_text(RUN_YAML)
    result = _ivbench("eval", "-c", "run.yaml", "--limit", "1", "--seed", "9", "--out", "runs/flags",
                      "--no-progress")
    assert result.exit_code == 0, result.output
    assert not (here / "runs" / "from-yaml").exists()
    records = _records(here / "runs" / "flags")
    assert {r["dialogue_id"] for r in records} == {"d0"}
    manifest = json.loads((here / "runs" / "flags" / "manifest.json").read_text())
    assert manifest["config"]["limit"] == 1 and manifest["seed"] == 9
    assert manifest["config"]["systems"] == ["shout"]  # not given on the command line: from the file

    # --system on the command line replaces the file's systems.
    result = _ivbench("eval", "-c", "run.yaml", "--system", "./shout.py:Shout", "--out", "runs/other",
                      "--no-progress")
    assert result.exit_code == 0, result.output
    records = _records(here / "runs" / "other")
    assert {r["system"] for r in records} == {"./shout.py:Shout"}
    assert sorted({r["dialogue_id"] for r in records}) == ["d0", "d1"]  # limit still from the file


def test_same_command_again_resumes_without_duplicates(here):
    (here / "run.yaml").write_text(RUN_YAML)
    assert _ivbench("eval", "-c", "run.yaml", "--no-progress").exit_code == 0
    before = (here / "runs" / "from-yaml" / "records.jsonl").read_bytes()
    again = _ivbench("eval", "-c", "run.yaml", "--no-progress")
    assert again.exit_code == 0, again.output
    assert (here / "runs" / "from-yaml" / "records.jsonl").read_bytes() == before
    manifest = json.loads((here / "runs" / "from-yaml" / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 2


# --- show and the manifest ----------------------------------------------------------------------

def test_manifest_records_what_the_run_was_made_with(here):
    (here / "run.yaml").write_text(RUN_YAML)
    assert _ivbench("eval", "-c", "run.yaml", "--no-progress").exit_code == 0
    manifest = json.loads((here / "runs" / "from-yaml" / "manifest.json").read_text())
    assert {"config", "seed", "packages", "hardware", "git", "task", "systems", "created",
            "ivbench_version", "sessions"} <= set(manifest)
    assert manifest["ivbench_version"] == __version__
    assert manifest["packages"]["numpy"] == numpy.__version__
    hardware = manifest["hardware"]
    assert isinstance(hardware["cpu"], str) and hardware["cpu"]
    assert hardware["cpu_count"] == os.cpu_count()
    assert hardware["device"] in ("cpu", "cuda")
    git = manifest["git"]
    assert git is None or (re.fullmatch(r"[0-9a-f]{40}", git["commit"]) and isinstance(git["dirty"], bool))
    assert manifest["systems"]["shout"]["modes"] == ["t2t"]
    assert manifest["systems"]["shout"]["untrained"] is False
    assert manifest["sessions"][0]["device"] == hardware["device"]


def test_show_prints_manifest_facts_and_progress(here):
    (here / "run.yaml").write_text(RUN_YAML.replace("limit: 2", "limit: 3"))
    assert _ivbench("eval", "-c", "run.yaml", "--no-progress").exit_code == 0
    run = here / "runs" / "from-yaml"
    manifest = json.loads((run / "manifest.json").read_text())
    result = _ivbench("show", str(run))
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"^task:\s+\./tiny\.yaml\s+\(3 dialogues", out, re.M), out
    assert re.search(r"^systems:\s+shout$", out, re.M), out
    assert re.search(r"seed: 3\b", out), out
    git = manifest["git"]
    assert f"git {git['commit'][:12]}" in out if git else "git unknown" in out
    hw = manifest["hardware"]
    assert re.search(rf"^hardware: {re.escape(hw['cpu'])} × {hw['cpu_count']}", out, re.M), out
    assert re.search(r"^\s+shout\s+3/3 dialogues$", out, re.M), out

    # Drop the last dialogue's record, as if the run had been cut: progress shows it.
    lines = (run / "records.jsonl").read_bytes().splitlines(keepends=True)
    assert json.loads(lines[-1])["dialogue_id"] == "d2"
    (run / "records.jsonl").write_bytes(b"".join(lines[:-1]))
    result = _ivbench("show", str(run))
    assert result.exit_code == 0, result.output
    assert re.search(r"^\s+shout\s+2/3 dialogues$", result.output, re.M), result.output

    as_json = _ivbench("show", str(run), "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.output) == manifest


def test_show_into_a_reader_that_stops_early_is_no_bug(here):
    """`ivbench show RUN | head -1`: the reader closes the pipe; ivbench ends as a command killed by
    SIGPIPE would (141), without a traceback calling it a bug."""
    task = write_task(here / "task", [["a"]])
    assert _ivbench("eval", "--task", str(task), "--system", "parrot", "--out", "run", "--no-progress",
                    "--warmup", "0").exit_code == 0
    read, write = os.pipe()
    os.close(read)  # a reader that has gone before the first line
    try:
        done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "show", "run"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "bug" not in done.stderr, done.stderr


def test_show_on_a_folder_that_is_not_a_run(here):
    (here / "empty").mkdir()
    result = _ivbench("show", "empty")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "empty: not a run directory (no manifest.json)" in result.output
    missing = _ivbench("show", "nowhere")
    assert missing.exit_code != 0 and "does not exist" in missing.output


@pytest.mark.parametrize("spec, fragment", [
    # float() named no option ("could not convert string to float: 'abc'"), or was a traceback
    ("first_speech:min_speech_ms=abc", "first_speech min_speech_ms='abc': give a number"),
    ("first_speech:threshold=null", "first_speech threshold=None: give a number"),
    ("first_speech:threshold=[1]", "first_speech threshold=[1]: give a number"),
    # bool('maybe') is True: any string chose the personalised DNSMOS model
    ("dnsmos:personalized=maybe", "dnsmos personalized='maybe': give true or false"),
    # a list left every transcript missing ("unhashable type: 'list'"); a number was taken as a language
    ("transcript:language=[en]", "give a language code such as en"),
    ("transcript:language=5", "whisper language=5: give a language code"),
    # CTranslate2 refused it at load time only: every transcript missing, and the run went on
    ("transcript:compute_type=fp16", "whisper compute_type='fp16': use one of default, auto, int8"),
    # no metric at all (`--metrics "$UNSET"`) scored nothing and wiped scores.jsonl
    ("", "--metrics: no metric named in ''"),
    (" ; ", "--metrics: no metric named in ' ; '"),
    # which of the two transcripts asr_wer read was an accident of the order
    ("transcript;transcript:language=en;asr_wer", "transcript and transcript:language=en are both transcript metrics"),
])
def test_score_refuses_bad_metric_options_in_one_line(here, spec, fragment):
    (here / "run").mkdir()  # options are checked before the run directory is read
    result = CliRunner().invoke(main, ["score", "run", "--metrics", spec, "--no-progress"])
    assert_user_error(result, fragment)


def test_a_torn_last_record_is_one_warning_line_saying_what_to_do(here):
    """It was Python's `…/run_store.py:166: UserWarning: …` with a source line, twice."""
    assert _ivbench("eval", "--task", "tiny.yaml", "--system", "./shout.py:Shout", "--out", "run",
                    "--no-progress", "--warmup", "0", "--limit", "1").exit_code == 0
    records = here / "run" / "records.jsonl"
    records.write_bytes(records.read_bytes() + b'{"system": "shout", "dialo')
    result = _ivbench("show", "run")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "torn" in line]
    assert warned == ["warning: run/records.jsonl:3: skipping a torn last line (the run was interrupted while "
                      "writing it); the same `ivbench eval` command redoes its dialogue"], result.output
    assert "UserWarning" not in result.output


def test_show_progress_of_a_run_in_two_modes_and_of_an_older_manifest(here):
    """Run in two modes, a system records as label@mode: show listed its bare label too, as
    '0/1 dialogues' (nothing done). A manifest without the task's size showed '1/0'."""
    assert _ivbench("eval", "--task", "tiny.yaml", "--system", "ivbench.testing:Scripted", "--mode", "t2t",
                    "--mode", "t2s", "--out", "run", "--no-progress", "--warmup", "0", "--limit", "1").exit_code == 0
    lines = _ivbench("show", "run").output.splitlines()
    progress = lines[lines.index("progress:") + 1:]
    progress = [line.split() for line in progress[:progress.index("")]]
    assert progress == [["ivbench.testing:Scripted@t2s", "1/1", "dialogues"],
                        ["ivbench.testing:Scripted@t2t", "1/1", "dialogues"]], lines
    manifest = json.loads((here / "run" / "manifest.json").read_text())
    del manifest["task"]["n_dialogues"]
    (here / "run" / "manifest.json").write_text(json.dumps(manifest))
    out = _ivbench("show", "run").output
    assert re.search(r"^\s+ivbench.testing:Scripted@t2t\s+1/\? dialogues$", out, re.M), out


def test_config_file_chooses_metrics_and_judge_and_flags_override_it(here, monkeypatch):
    monkeypatch.delenv("IVBENCH_METRICS")  # the suite's default would win over the file
    (here / "run.yaml").write_text(
        "task: tiny.yaml\nsystems: [./shout.py:Shout]\nwarmup: 0\nlimit: 1\nout: runs/scored\n"
        "metrics: [latency, judge]\n"
        # Nothing listens on port 9: the judge is configured, so its turns fail to connect
        # (status failed), instead of being missing for want of a judge.
        "judge: {model: test-judge, base_url: 'http://127.0.0.1:9/v1', retries: 0, timeout: 5}\n")
    result = _ivbench("eval", "-c", "run.yaml", "--no-progress", "--device", "cpu")
    # Every judge request failed: the terminal says why, and the command fails (exit 2) after
    # writing the scores it has.
    assert_user_error(result, "every judge request failed (2)", "unreachable (connection refused)")
    assert "2 × http://127.0.0.1:9/v1 is unreachable (connection refused)" in result.output
    assert (here / "runs/scored/summary.csv").exists()
    scores = [json.loads(line) for line in (here / "runs/scored/scores.jsonl").read_text().splitlines()]
    # The judge reads transcripts, so they are scored too (not applicable to a text-only turn).
    assert {s["metric"] for s in scores} == {"latency", "judge", "transcript", "user_transcript"}
    assert all(s["status"] == "not_applicable" for s in scores if s["metric"].endswith("transcript"))
    judged = [s for s in scores if s["metric"] == "judge"]
    assert judged and all(s["status"] == "failed" and s["values"]["score"] is None for s in judged)

    result = _ivbench("eval", "-c", "run.yaml", "--no-progress", "--device", "cpu", "--out", "runs/flag",
                      "--metrics", "latency")
    assert result.exit_code == 0, result.output
    scores = [json.loads(line) for line in (here / "runs/flag/scores.jsonl").read_text().splitlines()]
    assert {s["metric"] for s in scores} == {"latency"}

    (here / "bad.yaml").write_text("task: tiny.yaml\njudge: {model: x, api_key: secret}\n")
    result = _ivbench("eval", "-c", "bad.yaml", "--no-progress")
    assert result.exit_code != 0 and "environment only" in result.output
    # A misspelt judge option stops the run before anything is generated.
    (here / "bad.yaml").write_text("task: tiny.yaml\nsystems: [./shout.py:Shout]\nout: runs/typo\n"
                                   "judge: {model: x, temprature: 0}\n")
    result = _ivbench("eval", "-c", "bad.yaml", "--no-progress")
    assert result.exit_code == 2 and "bad.yaml:4: field 'judge.temprature'" in result.output
    assert "did you mean 'temperature'" in result.output
    assert not (here / "runs/typo").exists()


# --- where the run goes: --out ---------------------------------------------------------------------

def test_out_folder_holding_other_files_is_refused_and_fresh_never_deletes_it(here):
    """--out naming a folder of the user's that is not a run: refused, with or without --fresh
    (which once deleted the whole folder), and nothing in it is touched."""
    mine = here / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for extra in ((), ("--fresh",)):
        result = _ivbench("eval", "--task", "tiny.yaml", "--system", "./shout.py:Shout", "--out", "mine",
                          "--no-progress", *extra)
        assert_user_error(result, "mine: this folder holds other files and is not a run directory",
                          "give --out (or out:) a new or empty folder")
        assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
        assert (mine / "notes.txt").read_text() == "keep me"
    # An empty folder, and a run directory with --fresh, are fine.
    (here / "empty").mkdir()
    for extra in ((), ("--fresh",)):
        result = _ivbench("eval", "--task", "tiny.yaml", "--system", "./shout.py:Shout", "--out", "empty",
                          "--no-progress", "--limit", "1", *extra)
        assert result.exit_code == 0, result.output
        assert len(_records(here / "empty")) == 2


def test_out_that_cannot_be_a_folder_is_a_user_error(here):
    (here / "a-file").write_text("")
    result = _ivbench("eval", "--task", "tiny.yaml", "--system", "./shout.py:Shout", "--out", "a-file/run",
                      "--no-progress")
    assert_user_error(result, "a-file/run: cannot be made or written as the run directory (Not a directory)",
                      "give --out (or out:) a folder you can write")
    # In a run YAML, `out:` is not checked by click: a file there is the same kind of error.
    (here / "run.yaml").write_text("task: tiny.yaml\nsystems: [./shout.py:Shout]\nout: a-file\n")
    result = _ivbench("eval", "-c", "run.yaml", "--no-progress")
    assert_user_error(result, "a-file: is a file, not a folder")
