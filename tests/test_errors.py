"""What the command line does with errors: a user's mistake is one line and exit 2; a bug in
ivbench or in a plugin is its traceback, naming whose bug it is, and exit 1; nothing a command
has already written is lost."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT, assert_user_error, write_task
from ivbench.cli import EXIT_BUG, main

BUGGY = ROOT / "tests" / "plugins" / "buggy.py"


def _ivbench(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def assert_bug(result, whose: str, *fragments: str) -> None:
    assert result.exit_code == EXIT_BUG, (result.exit_code, result.output)
    assert "Traceback (most recent call last)" in result.output, result.output
    assert f"this is a bug in {whose}" in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    """A small finished run (a text-only system: no models), made through the real CLI."""
    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path, [["Hello there."], ["How are you?"]])
    result = _ivbench("eval", "--task", str(task), "--system", "parrot", "--mode", "t2t", "--warmup", "0",
                      "--out", "run", "--no-progress")
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def _plant(monkeypatch, target: str) -> None:
    """Make an internal function of ivbench raise, as a bug there would."""
    module_name, _, attr = target.rpartition(".")
    import importlib

    module = importlib.import_module(module_name)

    def broken(*args, **kwargs):
        raise RuntimeError("planted internal failure")

    monkeypatch.setattr(module, attr, broken)


@pytest.mark.parametrize("command, target", [
    (("score", "run"), "ivbench.scoring.score_run"),
    (("report", "run", "-o", "r.html"), "ivbench.report.data.load_report_data"),
    (("show", "run"), "ivbench.report.render_text.render_console"),
    (("list",), "ivbench.registry.entries"),
])
def test_an_internal_failure_in_each_command_is_a_bug_with_its_traceback(run_dir, monkeypatch, command, target):
    _plant(monkeypatch, target)
    assert_bug(_ivbench(*command), "ivbench", "planted internal failure")


def test_an_internal_failure_in_eval_is_a_bug_and_keeps_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path, [["Hello there."], ["How are you?"]])
    _plant(monkeypatch, "ivbench.scoring.summary.write_summary")  # after generation, while scoring
    result = _ivbench("eval", "--task", str(task), "--system", "parrot", "--mode", "t2t", "--warmup", "0",
                      "--out", "run", "--no-progress")
    assert_bug(result, "ivbench", "planted internal failure")
    records = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    assert len(records) == 2  # what was generated is kept


def test_a_bug_in_a_system_plugin_names_the_plugin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path, [["Hello there."]])
    result = _ivbench("eval", "--task", str(task), "--system", f"{BUGGY}:BrokenInit", "--warmup", "0",
                      "--out", "run", "--no-progress")
    assert_bug(result, f"plugin {BUGGY}", "TypeError")


def test_a_bug_in_a_task_plugin_names_the_plugin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _ivbench("eval", "--task", f"{BUGGY}:broken_task", "--system", "parrot", "--out", "run",
                      "--no-progress")
    assert_bug(result, f"plugin {BUGGY}", "KeyError")


@pytest.mark.parametrize("args, fragment", [
    (("eval", "--task", "no-such-task"), "unknown task 'no-such-task'"),
    (("eval", "--system", "parot"), "unknown system 'parot'"),
    (("score", "."), "not a run directory"),
    (("show", "."), "not a run directory"),
    (("report", "."), "not a run directory"),
])
def test_user_errors_are_one_line_with_exit_2(tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    assert_user_error(_ivbench(*args), fragment)
