"""Plugins reach ivbench in three ways: a file path, a module:Object spec, and an installed
package's entry point. Options reach their constructors with YAML types; unknown names and bad
options are clear errors that suggest close matches, never tracebacks."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner, Result

from conftest import assert_user_error, write_task
from ivbench.cli import main

HERE = Path(__file__).resolve().parent
PLUGIN_PACKAGE = HERE / "plugin_package"

PLUGINS = HERE / "plugins"
# The README's example plugin, as a user would write it (copied into place as a file, or into a package).
MY_SYSTEM = PLUGINS / "my_system.py"
# A system whose replies show the options it was built with, and their Python types.
OPTIONS_SYSTEM = PLUGINS / "configurable.py"

DIALOGUES = [["Hello there.", "What is the weather like?"], ["Tell me a joke."]]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


def _by_turn(records: list[dict]) -> dict[tuple[str, str, int], dict]:
    return {(r["system"], r["dialogue_id"], r["turn_index"]): r for r in records}


def _ivbench(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=True)




# --- (a) a plugin from a file path ---------------------------------------------------------

def test_system_from_file_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(MY_SYSTEM, tmp_path / "my_system.py")
    task = write_task(tmp_path / "task", DIALOGUES)
    result = _ivbench("eval", "--task", str(task), "--system", "./my_system.py:MySystem",
                      "--mode", "t2t", "--mode", "t2s", "--warmup", "0", "--out", "run", "--no-progress")
    assert result.exit_code == 0, result.output
    records = _records(tmp_path / "run")
    label = "./my_system.py:MySystem"
    assert len(records) == 2 * 3  # two modes × three user turns
    assert {r["system"] for r in records} == {f"{label}@t2t", f"{label}@t2s"}
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    turns = _by_turn(records)
    for mode in ("t2t", "t2s"):
        # The session keeps its own history: the count restarts with each dialogue.
        assert turns[(f"{label}@{mode}", "d0", 0)]["reply_text"] == "You said: Hello there. (1 so far)"
        assert turns[(f"{label}@{mode}", "d0", 1)]["reply_text"] == "You said: What is the weather like? (2 so far)"
        assert turns[(f"{label}@{mode}", "d1", 0)]["reply_text"] == "You said: Tell me a joke. (1 so far)"
    for r in records:
        if r["mode"] == "t2t":
            assert r["reply_audio"] is None and r["first_audio_ms"] is None
        else:
            samples, rate = soundfile.read(tmp_path / "run" / r["reply_audio"], dtype="float32")
            assert rate == 16000 and len(samples) == 8000
            assert np.allclose(samples, 0.25, atol=1e-4)
            assert r["reply_duration_s"] == pytest.approx(0.5)
            assert r["first_text_ms"] <= r["first_audio_ms"] <= r["end_ms"]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["systems"] == [label]
    assert manifest["systems"][label]["class"].endswith(".MySystem")
    # The file's module has one name in every process (here, and the worker that ran it), so the
    # manifest names the same class each session and the resumed run can be compared with it.
    loaded = manifest["sessions"][0]["loaded"][label]["class"]
    assert manifest["systems"][label]["class"] == loaded
    assert re.fullmatch(r"ivbench_plugin_my_system_[0-9a-f]{12}\.MySystem", loaded), loaded
    assert "run directory: run" in result.output


def test_file_path_with_missing_attribute_or_non_system(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(MY_SYSTEM, tmp_path / "my_system.py")
    shutil.copy(PLUGINS / "not_systems.py", tmp_path / "not_systems.py")
    task = write_task(tmp_path / "task", DIALOGUES)
    base = ["eval", "--task", str(task), "--warmup", "0", "--out", "run", "--no-progress"]
    assert_user_error(_ivbench(*base, "--system", "./my_system.py:MySystm"),
                        "has no attribute 'MySystm'")
    assert_user_error(_ivbench(*base, "--system", "./not_systems.py:NOT_A_SYSTEM"),
                        "a int object, not a class")
    assert_user_error(_ivbench(*base, "--system", "./not_systems.py:NotASystem"),
                        "made a NotASystem, not an ivbench System")
    assert_user_error(_ivbench(*base, "--system", "./missing.py:MySystem"), "missing.py not found")
    assert not (tmp_path / "run").exists()


def test_system_with_no_or_unknown_modes_is_a_clear_error(tmp_path, monkeypatch):
    """`modes` empty, with a name that is no mode, or one string: the runner's plan once failed
    with IndexError (a traceback blaming ivbench) or read "t2t" as the modes t, 2, t."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(PLUGINS / "bad_modes.py", tmp_path / "bad_modes.py")
    task = write_task(tmp_path / "task", DIALOGUES)
    base = ["eval", "--task", str(task), "--warmup", "0", "--out", "run", "--no-progress"]
    how = "set `modes` on the class to a tuple of ivbench.types.Mode"
    assert_user_error(_ivbench(*base, "--system", "./bad_modes.py:NoModes"),
                      "system './bad_modes.py:NoModes' declares no modes", how)
    assert_user_error(_ivbench(*base, "--system", "./bad_modes.py:UnknownMode"),
                      "system './bad_modes.py:UnknownMode': modes ('t2t', 'speech'): unknown mode 'speech'", how)
    assert_user_error(_ivbench(*base, "--system", "./bad_modes.py:OneString"),
                      "system './bad_modes.py:OneString': modes 't2t' is a str", how)
    assert not (tmp_path / "run").exists()


def test_plugin_file_that_does_not_compile_is_blamed_on_the_plugin(tmp_path):
    """A SyntaxError has no frame in the plugin (it never ran): the traceback is still the
    plugin's, and the last line says so instead of calling it a bug in ivbench."""
    shutil.copy(HERE / "data" / "half_written_plugin.py.txt", tmp_path / "half.py")
    task = write_task(tmp_path / "task", DIALOGUES)
    result = subprocess.run([sys.executable, "-m", "ivbench.cli", "eval", "--task", str(task), "--system",
                             "./half.py:Half", "--out", "run", "--no-progress"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "SyntaxError" in result.stderr and 'half.py", line 2' in result.stderr
    assert "this is a bug in plugin ./half.py, not something you did" in result.stderr


# --- (b) an installed package's entry point -----------------------------------------------

@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """tests/plugin_package installed into a folder of its own (the checkout is left untouched:
    pip builds a copy, since a setuptools build writes build/ and *.egg-info next to its source)."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "source"
    shutil.copytree(PLUGIN_PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "ivbench_example_plugin.py").is_file()
    return target


def _run_with_plugin(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "ivbench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_entry_point_plugin_is_listed_and_runs(plugin_site, tmp_path):
    listed = _run_with_plugin(plugin_site, tmp_path, "list", "systems")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "systems:"
    echo_line = [line for line in lines if line.split()[0] == "example-echo"]
    assert len(echo_line) == 1, listed.stdout
    assert re.fullmatch(r"\s+example-echo\s+\[package ivbench-example-plugin\].*", echo_line[0])
    assert any(re.fullmatch(r"\s+parrot\s+\[built-in\].*", line) for line in lines)

    # t2t answers the script; s2t is handed the recorded user audio (no voice needed).
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    rate = 16000
    tone = (0.2 * np.sin(np.arange(rate // 2) * 0.05)).astype(np.float32)
    soundfile.write(task_dir / "hello.wav", tone, rate, subtype="PCM_16")
    (task_dir / "second.wav").write_bytes((task_dir / "hello.wav").read_bytes())
    (task_dir / "tiny.jsonl").write_text(
        json.dumps({"id": "d0", "turns": [{"text": "Hello there.", "audio": "hello.wav"},
                                          {"text": "Second turn", "audio": "second.wav"}]}) + "\n"
        + json.dumps({"id": "d1", "turns": [{"text": "abc def", "audio": "hello.wav"}]}) + "\n")
    run = _run_with_plugin(plugin_site, tmp_path, "eval", "--task", str(task_dir / "tiny.jsonl"),
                           "--system", "example-echo", "--system", "example-echo:style=reverse",
                           "--mode", "t2t", "--mode", "s2t",
                           "--warmup", "0", "--out", "run", "--no-progress", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    records = _records(tmp_path / "run")
    assert len(records) == 2 * 2 * 3  # two systems × two modes × three user turns
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    turns = _by_turn(records)
    for mode in ("t2t", "s2t"):
        label = f"example-echo:style=reverse@{mode}"
        assert turns[(label, "d0", 0)]["reply_text"] == ".ereht olleH"
        assert turns[(label, "d0", 1)]["reply_text"] == "nrut dnoceS"
        assert turns[(label, "d1", 0)]["reply_text"] == "fed cba"
        label = f"example-echo@{mode}"  # the default style
        assert turns[(label, "d0", 0)]["reply_text"] == "HELLO THERE."
        assert turns[(label, "d1", 0)]["reply_text"] == "ABC DEF"
    for r in records:
        if r["mode"] == "s2t":
            assert "heard" in r["stages"]  # it was given audio
            heard, heard_rate = soundfile.read(tmp_path / "run" / r["user_audio"], dtype="float32")
            assert heard_rate == rate and np.allclose(heard, tone, atol=1e-3)
        else:
            assert r["user_audio"] is None and r["stages"] == {}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["systems"]["example-echo"]["options"] == {"style": "upper"}
    assert manifest["systems"]["example-echo:style=reverse"]["options"] == {"style": "reverse"}
    assert manifest["systems"]["example-echo:style=reverse"]["modes"] == ["t2t", "s2t"]


def test_entry_point_plugin_errors(plugin_site, tmp_path):
    task = write_task(tmp_path / "task", DIALOGUES)
    common = ["--task", str(task), "--warmup", "0", "--out", "run", "--no-progress", "--device", "cpu"]
    typo = _run_with_plugin(plugin_site, tmp_path, "eval", "--system", "example-eco", *common)
    assert typo.returncode != 0
    assert "unknown system 'example-eco'. Did you mean 'example-echo'?" in typo.stderr
    assert "Traceback" not in typo.stderr
    # The plugin's own validation of an option value, reported as a clear error.
    bad_value = _run_with_plugin(plugin_site, tmp_path, "eval", "--system", "example-echo:style=sideways", *common)
    assert bad_value.returncode != 0
    assert "style 'sideways' is not one of upper, reverse" in bad_value.stderr
    assert "Traceback" not in bad_value.stderr
    bad_name = _run_with_plugin(plugin_site, tmp_path, "eval", "--system", "example-echo:stlye=upper", *common)
    assert bad_name.returncode != 0
    assert "example-echo" in bad_name.stderr and "stlye" in bad_name.stderr
    assert "Traceback" not in bad_name.stderr
    assert not (tmp_path / "run").exists()


# --- (c) a module:Object spec ---------------------------------------------------------------

def test_module_object_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    package = tmp_path / "site" / "acme_voice_ai"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(MY_SYSTEM, package / "systems.py")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    task = write_task(tmp_path / "task", DIALOGUES)
    result = _ivbench("eval", "--task", str(task), "--system", "acme_voice_ai.systems:MySystem",
                      "--mode", "t2t", "--warmup", "0", "--out", "run", "--no-progress")
    assert result.exit_code == 0, result.output
    records = _records(tmp_path / "run")
    assert [(r["system"], r["dialogue_id"], r["turn_index"], r["reply_text"]) for r in records] == [
        ("acme_voice_ai.systems:MySystem", "d0", 0, "You said: Hello there. (1 so far)"),
        ("acme_voice_ai.systems:MySystem", "d0", 1, "You said: What is the weather like? (2 so far)"),
        ("acme_voice_ai.systems:MySystem", "d1", 0, "You said: Tell me a joke. (1 so far)"),
    ]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["systems"]["acme_voice_ai.systems:MySystem"]["class"] == "acme_voice_ai.systems.MySystem"

    missing = _ivbench("eval", "--task", str(task), "--system", "acme_voice_ai.nothing_here:MySystem",
                       "--warmup", "0", "--out", "run2", "--no-progress")
    assert_user_error(missing, "cannot import 'acme_voice_ai.nothing_here'", "installed")
    assert not (tmp_path / "run2").exists()


# --- (d) unknown names suggest close matches -------------------------------------------------

def test_unknown_system_suggests_close_match(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _ivbench("eval", "--system", "parot", "--out", "run", "--no-progress")
    assert_user_error(result, "unknown system 'parot'", "Did you mean 'parrot'?", "ivbench list")
    assert not (tmp_path / "run").exists()


def test_unknown_task_suggests_close_match(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _ivbench("eval", "--task", "mt-bnech", "--out", "run", "--no-progress")
    assert_user_error(result, "unknown task 'mt-bnech'", "Did you mean 'mt-bench'")  # or 'urobench'
    result = _ivbench("eval", "--task", "vicuan", "--out", "run", "--no-progress")
    assert_user_error(result, "unknown task 'vicuan'", "'vicuna'")
    # Nothing close: no suggestion, but the known names.
    result = _ivbench("eval", "--task", "zzzzzz", "--out", "run", "--no-progress")
    assert_user_error(result, "unknown task 'zzzzzz'", "Known tasks: ", "demo, ")
    assert "Did you mean" not in result.output
    assert not (tmp_path / "run").exists()


# --- (e) options reach the constructor with YAML types -------------------------------------

def test_options_reach_constructor_with_yaml_types(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(OPTIONS_SYSTEM, tmp_path / "configurable.py")
    task = write_task(tmp_path / "task", [["Hi."]])
    spec = "./configurable.py:Configurable:speed=2,stream=true,temperature=0.7,name=fast one,extra=null"
    result = _ivbench("eval", "--task", str(task), "--system", spec, "--warmup", "0", "--out", "run",
                      "--no-progress")
    assert result.exit_code == 0, result.output
    (record,) = _records(tmp_path / "run")
    assert record["status"] == "ok"
    assert record["reply_text"] == repr(sorted([
        ("extra", "NoneType", None), ("name", "str", "fast one"), ("speed", "int", 2),
        ("stream", "bool", True), ("temperature", "float", 0.7)]))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    (described,) = manifest["systems"].values()
    assert described["options"] == {"speed": 2, "stream": True, "temperature": 0.7,
                                    "name": "fast one", "extra": None}

    # The same options from a run config's mapping, with a label.
    (tmp_path / "run.yaml").write_text(
        f"task: {task}\nsystems:\n  - {{name: ./configurable.py:Configurable, label: mine, speed: 3, stream: false}}\n"
        "warmup: 0\nout: run-yaml\n")
    result = _ivbench("eval", "-c", "run.yaml", "--no-progress")
    assert result.exit_code == 0, result.output
    (record,) = _records(tmp_path / "run-yaml")
    assert record["system"] == "mine"
    assert ("speed", "int", 3) in eval(record["reply_text"])  # noqa: S307 - our own repr of a list
    assert ("stream", "bool", False) in eval(record["reply_text"])  # noqa: S307


def test_bad_option_name_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(OPTIONS_SYSTEM, tmp_path / "configurable.py")
    task = write_task(tmp_path / "task", [["Hi."]])
    result = _ivbench("eval", "--task", str(task), "--system", "./configurable.py:Configurable:sped=2",
                      "--warmup", "0", "--out", "run", "--no-progress")
    assert_user_error(result, "./configurable.py:Configurable", "bad options", "'sped'")
    assert not (tmp_path / "run").exists()
    # An option without '=' is not silently dropped.
    result = _ivbench("eval", "--task", str(task), "--system", "./configurable.py:Configurable:speed=2,fast",
                      "--warmup", "0", "--out", "run", "--no-progress")
    assert_user_error(result, "'fast' is not key=value")
    assert not (tmp_path / "run").exists()


def test_entry_point_metric_is_listed_and_scores(plugin_site, tmp_path):
    listed = _run_with_plugin(plugin_site, tmp_path, "list", "metrics")
    assert listed.returncode == 0, listed.stderr
    assert any(re.fullmatch(r"\s+example-words\s+\[package ivbench-example-plugin\].*", line)
               for line in listed.stdout.splitlines()), listed.stdout

    (tmp_path / "tiny.jsonl").write_text(
        json.dumps({"id": "d0", "turns": ["one two three", "four five"]}) + "\n")
    run = _run_with_plugin(plugin_site, tmp_path, "eval", "--task", "tiny.jsonl", "--system", "example-echo",
                           "--warmup", "0", "--out", "run", "--no-progress", "--device", "cpu",
                           "--metrics", "latency,example-words")
    assert run.returncode == 0, run.stderr
    scores = [json.loads(line) for line in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()]
    words = {s["turn_index"]: s["values"]["words"] for s in scores if s["metric"] == "example-words"}
    assert words == {0: 3.0, 1: 2.0}
    summary = (tmp_path / "run" / "summary.csv").read_text()
    assert "example-echo,example-words,words,2,0,2.5," in summary
