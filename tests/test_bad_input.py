"""Bad input gives a clear error (naming the file and line or field, or the dialogue and turn)
or a recorded failed turn, and never loses what a run has already written."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from conftest import ROOT, SCRIPTED, TWO_BY_TWO, assert_user_error, write_task
from ivbench.cli import main
from ivbench.store.lock import LOCK
from ivbench.store.run_store import RECORDS, RunStore, read_jsonl_records

# Systems that misbehave in one way each (ivbench.testing.Scripted, told how); `Good` is the control.
SYSTEMS = {
    "Good": f"{SCRIPTED}:modes=t2t+t2s+s2t",
    "RaisesOnFirstTurn": f"{SCRIPTED}:modes=t2t+t2s+s2t,raise_in=respond,dialogue=d0,turn=0,"
                         "message=the model exploded on d0",
    "Hangs": f"{SCRIPTED}:modes=t2t+t2s+s2t,hang_in=respond,dialogue=d0,turn=0,hang_s=30",
    "LoadFails": f"{SCRIPTED}:modes=t2t+t2s+s2t,raise_in=load,error=OSError,message=weights file model.bin not found",
    "YieldsTensor": f"{SCRIPTED}:modes=t2s,bad=tensor",
    "BadStageData": f"{SCRIPTED}:modes=t2s,bad=stage_data,stage=false",
    "YieldsNaN": f"{SCRIPTED}:modes=t2s,bad=nan",
}


def _ivbench(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def _eval(task: Path, system: str, *extra: str, out: str = "run"):
    return _ivbench("eval", "--task", str(task), "--system", SYSTEMS[system], "--warmup", "0",
                    "--out", out, "--no-progress", *extra)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / RECORDS).read_text().splitlines() if line.strip()]




# --- run configuration ----------------------------------------------------------------------

def test_malformed_run_config_yaml(here):
    (here / "bad.yaml").write_text("task: demo\nsystems: [parrot\nlimit: 2\n")
    result = _ivbench("eval", "-c", "bad.yaml", "--out", "run", "--no-progress")
    assert_user_error(result, "bad.yaml:3: not valid YAML")
    assert not (here / "run").exists()


@pytest.mark.parametrize("text, message", [
    ("task: demo\nlimt: 2\n", "bad.yaml:2: field 'limt': unknown key (did you mean 'limit'?); keys: cache_dir,"),
    ("- demo\n- parrot\n", "bad.yaml: a run config is a YAML mapping"),
    ("limit: two\n", "bad.yaml:1: field 'limit': expected an integer, got a string ('two')"),
    ("limit: 0\n", "bad.yaml:1: field 'limit': must be at least 1"),
    ("warmup: -1\n", "bad.yaml:1: field 'warmup': must be at least 0"),
    ("mode: 5\n", "bad.yaml:1: field 'mode': must be a mode or a list of modes"),
    ("mode: [s3s]\n", "bad.yaml:1: field 'mode[0]': unknown mode 's3s'"),
    ("systems: []\n", "bad.yaml:1: field 'systems': must be a non-empty list"),
    ("systems:\n  - {label: mine}\n", "bad.yaml:2: field 'systems[0]': a system mapping needs 'name'"),
    ("task: 42\n", "bad.yaml:1: field 'task': give a name"),
])
def test_bad_run_config_values(here, text, message):
    (here / "bad.yaml").write_text(text)
    result = _ivbench("eval", "-c", "bad.yaml", "--out", "run", "--no-progress")
    assert_user_error(result, message)
    assert not (here / "run").exists()


def test_missing_run_config_file(here):
    assert_user_error(_ivbench("eval", "-c", "nope.yaml", "--no-progress"), "nope.yaml: config file not found")


# --- recorded user audio in a task ----------------------------------------------------------

def _write_audio(path: Path, kind: str) -> None:
    rate = 16000
    tone = (0.3 * np.sin(np.arange(rate // 4) * 0.07)).astype(np.float32)
    if kind == "ok":
        soundfile.write(path, tone, rate, subtype="PCM_16")
    elif kind == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif kind == "empty":
        soundfile.write(path, np.zeros(0, dtype=np.float32), rate, subtype="PCM_16")
    elif kind == "nan":
        tone[1000] = np.nan
        soundfile.write(path, tone, rate, subtype="FLOAT")
    elif kind == "stereo":
        soundfile.write(path, np.stack([tone, tone], axis=1), rate, subtype="PCM_16")
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind, message", [
    ("corrupt", "cannot be read as audio"),
    ("empty", "audio is empty"),
    ("nan", "audio contains NaN"),
    ("stereo", "2 channels; ivbench needs mono audio"),
])
def test_bad_recorded_audio(here, kind, message):
    task_dir = here / "task"
    task_dir.mkdir()
    _write_audio(task_dir / "good.wav", "ok")
    _write_audio(task_dir / "bad.wav", kind)
    (task_dir / "tiny.jsonl").write_text(
        json.dumps({"id": "d0", "turns": [{"text": "Hello.", "audio": "good.wav"}]}) + "\n"
        + json.dumps({"id": "d1", "turns": [{"text": "Hi.", "audio": "good.wav"},
                                            {"text": "Bye.", "audio": "bad.wav"}]}) + "\n")
    result = _eval(task_dir / "tiny.jsonl", "Good", "--mode", "s2t")
    assert_user_error(result, "dialogue 'd1' turn 1", str((task_dir / "bad.wav").resolve()), message)
    assert not (here / "run").exists()  # stopped before the run directory was made


def test_good_recorded_audio_is_what_the_system_hears(here):
    """The control for the cases above: the same task with a good file runs."""
    task_dir = here / "task"
    task_dir.mkdir()
    _write_audio(task_dir / "good.wav", "ok")
    (task_dir / "tiny.jsonl").write_text(
        json.dumps({"id": "d0", "turns": [{"text": "Hello.", "audio": "good.wav"}]}) + "\n")
    result = _eval(task_dir / "tiny.jsonl", "Good", "--mode", "s2t")
    assert result.exit_code == 0, result.output
    (record,) = _records(here / "run")
    assert record["status"] == "ok" and record["reply_text"] == "reply to Hello."
    original, _ = soundfile.read(task_dir / "good.wav", dtype="float32")
    heard, rate = soundfile.read(here / "run" / record["user_audio"], dtype="float32")
    assert rate == 16000 and np.allclose(heard, original, atol=1e-4)


def test_missing_recorded_audio_file(here):
    task_dir = here / "task"
    task_dir.mkdir()
    (task_dir / "tiny.jsonl").write_text(
        json.dumps({"id": "d0", "turns": ["Hello."]}) + "\n"
        + json.dumps({"id": "d1", "turns": ["Hi.", {"text": "Bye.", "audio": "audio/gone.wav"}]}) + "\n")
    result = _eval(task_dir / "tiny.jsonl", "Good")
    assert_user_error(result, "tiny.jsonl:2: field 'turns[1].audio'", "gone.wav not found")
    assert not (here / "run").exists()


def test_audio_path_escaping_the_task_folder(here):
    task_dir = here / "task"
    task_dir.mkdir()
    _write_audio(here / "outside.wav", "ok")  # exists, but outside the task's folder
    (task_dir / "tiny.jsonl").write_text(
        json.dumps({"id": "d0", "turns": [{"text": "Hello.", "audio": "../outside.wav"}]}) + "\n")
    result = _eval(task_dir / "tiny.jsonl", "Good", "--mode", "s2t")
    assert_user_error(result, "tiny.jsonl:1: field 'turns[0].audio'", "'../outside.wav' leaves the task's folder")
    (task_dir / "tiny.jsonl").write_text(
        json.dumps({"id": "d0", "turns": [{"text": "Hello.", "audio": str(here / "outside.wav")}]}) + "\n")
    result = _eval(task_dir / "tiny.jsonl", "Good", "--mode", "s2t")
    assert_user_error(result, "leaves the task's folder")
    assert not (here / "run").exists()


# --- systems that fail --------------------------------------------------------------------

def test_respond_raises_on_one_turn(here):
    task = write_task(here / "task", TWO_BY_TWO)
    result = _eval(task, "RaisesOnFirstTurn")
    assert result.exit_code == 0, result.output
    assert "1 turns failed" in result.output
    turns = {(r["dialogue_id"], r["turn_index"]): r for r in _records(here / "run")}
    assert sorted(turns) == [("d0", 0), ("d0", 1), ("d1", 0), ("d1", 1)]
    failed = turns[("d0", 0)]
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "RuntimeError"
    assert failed["error"]["message"] == "the model exploded on d0"
    assert "Traceback" in failed["error"]["traceback"]
    assert "ivbench/testing.py" in failed["error"]["traceback"] and "_fault" in failed["error"]["traceback"]
    assert failed["reply_text"] is None
    for key in [("d0", 1), ("d1", 0), ("d1", 1)]:
        assert turns[key]["status"] == "ok" and turns[key]["error"] is None
    assert turns[("d0", 1)]["reply_text"] == "reply to How are you?"
    assert turns[("d0", 1)]["stage_data"] == {"heard": {"transcript": "how are you?", "words": 3}}
    assert "heard" in turns[("d0", 1)]["stages"] and failed["stage_data"] == {}
    shown = _ivbench("show", "run")
    assert shown.exit_code == 0, shown.output
    assert "failed turns (1):" in shown.output
    assert "d0 turn 0: RuntimeError: the model exploded on d0" in shown.output


def test_hanging_system_times_out(tmp_path):
    """A turn past --turn-timeout is recorded as a timeout, the rest of its dialogue as skipped,
    later dialogues run, and the process does not wait for the hung worker to finish."""
    task = write_task(tmp_path / "task", [["one", "two", "three"], ["four", "five"]])
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "eval", "--task", str(task), "--system", SYSTEMS["Hangs"],
         "--turn-timeout", "1", "--warmup", "0", "--out", "run", "--no-progress", "--device", "cpu"],
        cwd=tmp_path, capture_output=True, text=True, timeout=25, env=dict(os.environ))
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < 12, f"took {elapsed:.1f} s: the run waited for the hung system"
    turns = {(r["dialogue_id"], r["turn_index"]): r for r in _records(tmp_path / "run")}
    assert sorted(turns) == [("d0", 0), ("d0", 1), ("d0", 2), ("d1", 0), ("d1", 1)]
    assert turns[("d0", 0)]["status"] == "timeout"
    assert turns[("d0", 0)]["error"]["type"] == "TimeoutError"
    assert "turn timeout of 1 s" in turns[("d0", 0)]["error"]["message"]
    for index in (1, 2):
        skipped = turns[("d0", index)]
        assert skipped["status"] == "failed" and skipped["error"]["type"] == "Skipped"
        assert "turn 0 of this dialogue timed out" in skipped["error"]["message"]
    assert turns[("d1", 0)]["status"] == "ok" and turns[("d1", 0)]["reply_text"] == "reply to four"
    assert turns[("d1", 1)]["status"] == "ok" and turns[("d1", 1)]["reply_text"] == "reply to five"
    assert "3 turns failed" in done.stdout


def test_load_failure_fails_every_turn(here):
    task = write_task(here / "task", TWO_BY_TWO)
    result = _eval(task, "LoadFails")
    assert result.exit_code == 0, result.output
    assert "failed to load: OSError: weights file model.bin not found" in result.output
    records = _records(here / "run")
    assert len(records) == 4
    for r in records:
        assert r["status"] == "failed"
        assert r["error"]["type"] == "OSError"
        assert r["error"]["message"] == "weights file model.bin not found"
        assert ", in load\n" in r["error"]["traceback"]


@pytest.mark.parametrize("system, message", [
    pytest.param("YieldsTensor", "AudioChunk.samples is a torch.Tensor; yield numpy arrays on the CPU",
                 marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")),
    ("YieldsNaN", "audio contains NaN or infinite samples"),
    ("BadStageData", "StageMark('heard').data is not a dict of JSON values (Object of type set is not JSON "
                     "serializable); give str, numbers"),
])
def test_invalid_reply_audio(here, system, message):
    task = write_task(here / "task", [["Hello."], ["Again."]])
    result = _eval(task, system)
    assert result.exit_code == 0, result.output
    records = _records(here / "run")
    assert [(r["dialogue_id"], r["status"]) for r in records] == [("d0", "failed"), ("d1", "failed")]
    for r in records:
        assert r["error"]["type"] == "InvalidReply"
        assert message in r["error"]["message"]
        assert f"turn {r['turn_index']}" in r["error"]["message"] and repr(r["dialogue_id"]) in r["error"]["message"]
        assert r["reply_audio"] is None
        assert r["reply_text"] == f"reply to {r['user_text']}"  # the text it did give is kept


# --- nothing already written is lost --------------------------------------------------------

def test_failed_invocations_leave_an_existing_run_untouched(here):
    task = write_task(here / "task", TWO_BY_TWO)
    first = _eval(task, "Good")
    assert first.exit_code == 0, first.output
    run = here / "run"
    # The lock file says who last held the run (ivbench/store/lock.py): not part of the run.
    snapshot = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK}
    assert len(_records(run)) == 4

    bad_task_dir = here / "bad-task"
    bad_task_dir.mkdir()
    _write_audio(bad_task_dir / "bad.wav", "corrupt")
    (bad_task_dir / "bad.jsonl").write_text(
        json.dumps({"id": "x", "turns": [{"text": "a", "audio": "bad.wav"}]}) + "\n")
    (here / "bad.yaml").write_text("task: demo\nsytems: [parrot]\n")
    attempts = [
        ("eval", "--task", str(task), "--system", "parot", "--out", "run", "--no-progress"),
        ("eval", "--task", str(task), "--system", "parot", "--out", "run", "--fresh", "--no-progress"),
        ("eval", "-c", "bad.yaml", "--out", "run", "--fresh", "--no-progress"),
        ("eval", "--task", str(bad_task_dir / "bad.jsonl"), "--system", SYSTEMS["Good"], "--mode", "s2t",
         "--out", "run", "--fresh", "--no-progress"),
        # Another task into the same run directory: refused, not mixed in.
        ("eval", "--task", "demo", "--system", SYSTEMS["Good"], "--out", "run", "--no-progress"),
    ]
    for args in attempts:
        result = _ivbench(*args)
        assert result.exit_code != 0, (args, result.output)
        assert "Traceback" not in result.output
        after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK}
        assert after == snapshot, args
    assert "holds a run with another 'task'" in result.output


# --- the store ------------------------------------------------------------------------------

def _good_lines(here: Path) -> list[bytes]:
    task = write_task(here / "task", TWO_BY_TWO)
    assert _eval(task, "Good").exit_code == 0
    return (here / "run" / RECORDS).read_bytes().splitlines(keepends=True)


def test_read_records_tolerates_a_torn_last_line(here):
    lines = _good_lines(here)
    path = here / "torn.jsonl"
    path.write_bytes(b"".join(lines[:3]) + lines[3][:50])
    with pytest.warns(UserWarning, match=r"torn\.jsonl:4: skipping a torn last line"):
        records = read_jsonl_records(path)
    assert [(r.dialogue_id, r.turn_index) for r in records] == [("d0", 0), ("d0", 1), ("d1", 0)]
    # Trailing blank lines after the torn line do not make it a middle line.
    path.write_bytes(b"".join(lines[:3]) + lines[3][:50] + b"\n\n")
    with pytest.warns(UserWarning):
        assert len(read_jsonl_records(path)) == 3


@pytest.mark.parametrize("bad_line", [b'{"system": "x", "dialogue_id": \n', b"[1, 2, 3]\n", b'{"system": "x"}\n'])
def test_read_records_rejects_a_corrupt_middle_line(here, bad_line):
    lines = _good_lines(here)
    path = here / "corrupt.jsonl"
    path.write_bytes(lines[0] + bad_line + b"".join(lines[1:]))
    with pytest.raises(ValueError, match=r"corrupt\.jsonl:2: corrupt record"):
        read_jsonl_records(path)


def test_resume_after_a_torn_first_record_of_a_dialogue(here):
    """kill -9 while the first record of d1 was being written: the torn bytes are dropped on
    resume, not glued to the next record."""
    lines = _good_lines(here)
    records_path = here / "run" / RECORDS
    records_path.write_bytes(lines[0] + lines[1] + lines[2][:60])
    task = here / "task" / "tiny.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _eval(task, "Good")
    assert result.exit_code == 0, result.output
    raw = records_path.read_bytes().splitlines(keepends=True)
    assert raw[:2] == lines[:2]  # d0 was finished and is kept as it was
    assert len(raw) == 4 and all(line.endswith(b"\n") for line in raw)
    records = RunStore(here / "run").records()  # every line parses
    assert sorted((r.dialogue_id, r.turn_index, r.status) for r in records) == [
        ("d0", 0, "ok"), ("d0", 1, "ok"), ("d1", 0, "ok"), ("d1", 1, "ok")]
