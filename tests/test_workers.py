"""Systems run out of ivbench's process (docs/architecture.md, "Workers"): a system that exits,
segfaults, holds the interpreter, leaves a non-daemon thread, closes or redirects stdout or
changes the working directory fails at most its dialogue, with the reason, and the run finishes
with its table and report. A system entry's `python:` runs its worker in that interpreter.

The misbehaving system is `ivbench.testing.Scripted` (its `crash_in` / `crash` options)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import assert_user_error, write_task, SCRIPTED, TWO_BY_TWO, read_records as _records
from ivbench.cli import main
from ivbench.registry import parse_spec



def _eval(task: Path, *systems: str, timeout: float = 5, extra: tuple[str, ...] = ()):
    args = ["eval", "--task", str(task), "--warmup", "0", "--turn-timeout", str(timeout), "--out", "run",
            "--no-progress", "--metrics", "latency"]
    for system in systems:
        args += ["--system", system]
    return CliRunner().invoke(main, args + list(extra), catch_exceptions=True)


def _by_turn(out: Path) -> dict[tuple[str, int], dict]:
    return {(r["dialogue_id"], r["turn_index"]): r for r in _records(out)}


def _session(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["sessions"][-1]


def _finished_with_table_and_report(result, out: Path) -> None:
    assert result.exit_code == 0, result.output
    assert "turns  failed" in result.output, "no leaderboard printed"
    assert (out / "report.html").is_file() and (out / "scores.jsonl").is_file()


# --- a system that damages its process ------------------------------------------------------------

@pytest.mark.parametrize("crash, error_type, message", [
    ("os_exit", "WorkerDied", "the worker process running the system exited with code 3 during turn 1 of "
                              "dialogue 'd0'; it printed nothing"),
    ("segfault", "WorkerDied", "the worker process running the system was killed by SIGSEGV during turn 1 of "
                               "dialogue 'd0'; it printed nothing"),
    ("exit", "SystemExit", "3"),  # in the turn's thread: the system's exception, as any other
])
def test_a_system_that_ends_its_process_fails_its_dialogue_and_the_run_goes_on(here, crash, error_type, message):
    task = write_task(here / "task", TWO_BY_TWO)
    result = _eval(task, f"{SCRIPTED}:crash_in=respond,crash={crash},dialogue=d0,turn=1")
    _finished_with_table_and_report(result, here / "run")
    turns = _by_turn(here / "run")
    assert sorted(turns) == [("d0", 0), ("d0", 1), ("d1", 0), ("d1", 1)]
    assert turns[("d0", 0)]["status"] == "ok"
    assert turns[("d0", 1)]["status"] == "failed"
    assert turns[("d0", 1)]["error"]["type"] == error_type
    assert turns[("d0", 1)]["error"]["message"] == message
    assert turns[("d1", 0)]["status"] == turns[("d1", 1)]["status"] == "ok"
    workers = {r["worker"] for r in _records(here / "run")}
    if error_type == "WorkerDied":  # a fresh worker took the next dialogue, and says what it ran on
        assert turns[("d0", 0)]["worker"] == "w1" and turns[("d1", 0)]["worker"] == "w2"
        assert f"dialogue 'd0' of {parse_spec(turns[('d0', 0)]['system']).label!r}: {message}" in result.output
    else:
        assert workers == {"w1"}
    assert workers <= set(_session(here / "run")["workers"])


def test_no_fresh_worker_is_started_when_the_crashed_dialogue_was_the_last(here):
    """A fresh worker loads the system (minutes for a large model): started after a crash with
    no dialogue left, it would load only to close again."""
    task = write_task(here / "task", TWO_BY_TWO)
    result = _eval(task, f"{SCRIPTED}:crash_in=respond,crash=os_exit,dialogue=d1,turn=1")
    _finished_with_table_and_report(result, here / "run")
    turns = _by_turn(here / "run")
    assert turns[("d1", 1)]["error"]["type"] == "WorkerDied" and turns[("d0", 1)]["status"] == "ok"
    assert set(_session(here / "run")["workers"]) == {"w1"}


def test_the_reason_carries_what_the_worker_printed_last(here):
    """A dying system's last words (a C library's abort message, a warning) are in the record."""
    task = write_task(here / "task", [["Hello."]])
    result = _eval(task, f"{SCRIPTED}:crash_in=respond,crash=os_exit,exit_code=7,say=about to go")
    assert result.exit_code == 0, result.output
    (record,) = _records(here / "run")
    assert record["error"]["type"] == "WorkerDied"
    assert record["error"]["message"] == ("the worker process running the system exited with code 7 during turn 0 "
                                          "of dialogue 'd0'; its last output: about to go")
    assert "about to go" in result.output  # what a worker prints reaches the driver's stderr


def test_a_system_that_holds_the_interpreter_is_stopped(here):
    """A C call that never releases the GIL stops every thread of its process, the worker's
    timeouts included: the driver sees the worker fall silent and stops it."""
    task = write_task(here / "task", TWO_BY_TWO)
    started = time.monotonic()
    result = _eval(task, f"{SCRIPTED}:crash_in=respond,crash=gil,hang_s=120,dialogue=d0,turn=0", timeout=1)
    assert time.monotonic() - started < 60
    _finished_with_table_and_report(result, here / "run")
    turns = _by_turn(here / "run")
    error = turns[("d0", 0)]["error"]
    assert error["type"] == "WorkerDied"
    assert error["message"] == ("the worker process running the system said nothing for 6 s (the turn timeout + 5 s: "
                                "a call held the interpreter) and was stopped during turn 0 of dialogue 'd0'; "
                                "it printed nothing")
    assert turns[("d0", 1)]["error"]["message"] == "not run: the worker died in turn 0 of this dialogue"
    assert turns[("d1", 0)]["status"] == turns[("d1", 1)]["status"] == "ok"


@pytest.mark.parametrize("crash", ["thread", "close_stdout", "redirect_stdout", "chdir"])
def test_a_system_that_meddles_with_its_process_harms_nothing(here, crash):
    """A non-daemon thread would keep ivbench alive after the run; closed or redirected stdout
    would hide the results; chdir would send the run's files elsewhere. In a worker none of it
    reaches the driver: every turn is ok and lands in the run directory."""
    task = write_task(here / "task", TWO_BY_TWO)
    result = _eval(task, f"{SCRIPTED}:crash_in=respond+new_session,crash={crash}")
    _finished_with_table_and_report(result, here / "run")
    assert [r["status"] for r in _records(here / "run")] == ["ok"] * 4
    assert sorted(p.name for p in here.iterdir()) == ["run", "task"]


def test_a_non_daemon_thread_does_not_keep_the_command_alive(tmp_path):
    """The real command line, in its own process: it exits as soon as the run is written."""
    task = write_task(tmp_path / "task", [["Hello."]])
    command = [sys.executable, "-m", "ivbench.cli", "eval", "--task", str(task), "--warmup", "0", "--no-progress",
               "--system", f"{SCRIPTED}:crash_in=load+respond,crash=thread", "--out", str(tmp_path / "run"),
               "--metrics", "latency"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "run directory:" in done.stdout
    assert [r["status"] for r in _records(tmp_path / "run")] == ["ok"]


@pytest.mark.parametrize("crash, message", [
    ("exit", "SystemExit: 3"),
    ("os_exit", "WorkerDied: the worker process running the system exited with code 3 while loading the system"),
    ("segfault", "WorkerDied: the worker process running the system was killed by SIGSEGV while loading the system"),
])
def test_a_system_that_ends_its_process_in_load_fails_its_dialogues(here, crash, message):
    task = write_task(here / "task", TWO_BY_TWO)
    broken = f"{SCRIPTED}:crash_in=load,crash={crash}"
    result = _eval(task, broken, f"{SCRIPTED}:text=second {{text}}")
    _finished_with_table_and_report(result, here / "run")
    label = parse_spec(broken).label
    assert f"system {label!r} failed to load: {message}" in result.output
    records = _records(here / "run")
    assert len(records) == 8
    assert all(r["status"] == ("failed" if r["system"] == label else "ok") for r in records)


def test_in_process_runs_the_system_in_ivbench(here):
    task = write_task(here / "task", [["Hello."]])
    result = _eval(task, SCRIPTED, extra=("--in-process",))
    assert result.exit_code == 0, result.output
    (record,) = _records(here / "run")
    assert record["status"] == "ok" and record["worker"] == "in-process"
    import os

    assert _session(here / "run")["workers"]["in-process"]["pid"] == os.getpid()


# --- one clock across processes -------------------------------------------------------------------

def test_perf_counter_is_one_clock_across_processes():
    """The worker stamps events with time.perf_counter_ns: on Linux it reads CLOCK_MONOTONIC,
    which is system-wide, so stamps taken in two processes compare (a worker's t0 and the
    driver's clock are one timeline)."""
    assert time.get_clock_info("perf_counter").implementation == "clock_gettime(CLOCK_MONOTONIC)"
    for _ in range(3):
        before = time.perf_counter_ns()
        child = subprocess.run([sys.executable, "-c", "import time; print(time.perf_counter_ns())"],
                               capture_output=True, text=True, check=True)
        after = time.perf_counter_ns()
        assert before < int(child.stdout) < after


def test_a_worker_times_turns_like_the_driver(here):
    """The clock runs in the worker: a known 50 ms first-packet delay is measured the same
    there as in-process."""
    task = write_task(here / "task", [["one", "two"]])
    system = f"{SCRIPTED}:hang_in=respond,hang_s=0.05,modes=t2s"
    for extra in ((), ("--in-process",)):
        result = _eval(task, system, extra=(*extra, "--fresh"))
        assert result.exit_code == 0, result.output
        for record in _records(here / "run"):
            assert 50 <= record["first_text_ms"] <= 60, record


def test_a_resumed_run_gives_its_workers_ids_no_earlier_session_used(here):
    """A record's `worker` names one worker of the whole run: the second session's first worker
    is not another "w1", whose fingerprint (and the report's count of workers) it would replace."""
    task = write_task(here / "task", [["a"], ["b"]])
    assert _eval(task, SCRIPTED, extra=("--limit", "1")).exit_code == 0
    result = _eval(task, SCRIPTED)
    assert result.exit_code == 0, result.output
    manifest = json.loads((here / "run" / "manifest.json").read_text())
    assert [sorted(s["workers"]) for s in manifest["sessions"]] == [["w1"], ["w2"]]
    assert {r["dialogue_id"]: r["worker"] for r in _records(here / "run")} == {"d0": "w1", "d1": "w2"}


# --- a system in its own interpreter --------------------------------------------------------------

@pytest.fixture(scope="module")
def second_python(tmp_path_factory) -> str:
    """A second virtual environment (quick: no pip), which sees ivbench and its dependencies
    through a .pth file: another interpreter, as a system with its own dependencies would use."""
    venv = tmp_path_factory.mktemp("venv2")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "ivbench_parent.pth").write_text("\n".join(p for p in sys.path if p and Path(p).is_dir()) + "\n")
    return str(python)


def test_a_system_with_its_own_python_runs_in_that_interpreter(here, second_python):
    task = write_task(here / "task", TWO_BY_TWO)
    (here / "run.yaml").write_text(
        f"task: {task}\nwarmup: 0\nout: run\nmetrics: [latency]\n"
        f"systems:\n  - {{name: {SCRIPTED}, label: own, python: {second_python}}}\n"
        f"  - {{name: {SCRIPTED}, label: ours}}\n")
    result = CliRunner().invoke(main, ["eval", "-c", "run.yaml", "--no-progress"])
    _finished_with_table_and_report(result, here / "run")
    session = _session(here / "run")
    records = _records(here / "run")
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    ran = {r["system"]: session["workers"][r["worker"]]["python"] for r in records}
    assert ran == {"own": second_python, "ours": sys.executable}
    manifest = json.loads((here / "run" / "manifest.json").read_text())
    assert manifest["systems"]["own"]["python"] == second_python


def test_a_system_unknown_to_its_own_python_is_a_user_error(here, second_python):
    task = write_task(here / "task", [["Hello."]])
    (here / "run.yaml").write_text(f"task: {task}\nsystems:\n"
                                   f"  - {{name: no_such_module:Thing, python: {second_python}}}\n")
    result = CliRunner().invoke(main, ["eval", "-c", "run.yaml", "--no-progress"])
    assert_user_error(result, "system 'no_such_module:Thing'", f"(python {second_python})", "no_such_module")
    assert not (here / "runs").exists()


def test_a_missing_interpreter_is_a_user_error(here):
    task = write_task(here / "task", [["Hello."]])
    (here / "run.yaml").write_text(f"task: {task}\nsystems:\n  - {{name: {SCRIPTED}, python: /no/such/python}}\n")
    result = CliRunner().invoke(main, ["eval", "-c", "run.yaml", "--no-progress"])
    assert_user_error(result, "'/no/such/python': no such interpreter")


# --- options --------------------------------------------------------------------------------------

@pytest.mark.parametrize("yaml, fragments", [
    ("workers: 0", ("run.yaml:1", "'workers'", "must be at least 1")),
    ("ray_address: nowhere", ("run.yaml:1", "'ray_address'", "expected auto, ray://host:port or host:port")),
    ("systems: [{name: parrot, python: 3}]", ("run.yaml:1", "python", "expected a path")),
    ("systems: [{name: parrot, resources: {num_gpus: -1}}]", ("run.yaml:1", "resources", "'num_gpus'")),
    ("systems: [{name: parrot, resources: 2}]", ("run.yaml:1", "resources", "expected a mapping")),
])
def test_bad_worker_options_are_user_errors(here, yaml, fragments):
    (here / "run.yaml").write_text(yaml + "\n")
    assert_user_error(CliRunner().invoke(main, ["eval", "-c", "run.yaml"]), *fragments)


def test_in_process_and_workers_do_not_mix(here):
    result = CliRunner().invoke(main, ["eval", "--in-process", "--workers", "2"])
    assert_user_error(result, "--in-process", "--workers")


def test_workers_without_ray_names_the_extra(here, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    task = write_task(here / "task", [["Hello."]])
    for flags in (["--workers", "2"], ["--ray-address", "auto"]):
        result = CliRunner().invoke(main, ["eval", "--task", str(task), "--system", SCRIPTED, *flags])
        assert_user_error(result, f"{flags[0]} runs workers on Ray, which is not installed: "
                                  "pip install 'ivbench[ray]'")
    assert not (here / "runs").exists()


def test_a_ray_cluster_that_is_not_there_is_a_user_error(here):
    pytest.importorskip("ray")
    task = write_task(here / "task", [["a"]])
    result = CliRunner().invoke(main, ["eval", "--task", str(task), "--system", SCRIPTED, "--ray-address",
                                       "127.0.0.1:1", "--out", "run"])
    assert_user_error(result, "--ray-address 127.0.0.1:1: no Ray head answers there", "ray start --head")
    assert not (here / "run").exists()
