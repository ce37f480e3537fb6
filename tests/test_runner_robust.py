"""Runs survive their systems: a system that raises, hangs, yields forever or yields nonsense
anywhere — warm-up, new_session(), a turn, session.close(), system.close() — costs a recorded
failure or a warning, never the run; audio is validated, clipped one way and saved exactly;
Ctrl-C while a system runs native code exits 130 with the run intact and resumable.

The misbehaving systems are `ivbench.testing.Scripted`, told what to do by its options."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from conftest import ROOT, write_task, INTERRUPTIBLE, SCRIPTED, TWO_BY_TWO, read_records as _records
from ivbench.audio import AudioError, check_audio, from_wav_bytes, to_wav_bytes
from ivbench.cli import main
from ivbench.registry import parse_spec
from ivbench.runner.clock import MAX_REPLY_EVENTS, time_turn
from ivbench.testing import Scripted
from ivbench.types import Audio, Mode, TurnInput



def _eval(task: Path, *systems: str, warmup: int = 0, timeout: float = 5, extra: tuple[str, ...] = ()):
    args = ["eval", "--task", str(task), "--warmup", str(warmup), "--turn-timeout", str(timeout),
            "--out", "run", "--no-progress", "--no-score"]
    for system in systems:
        args += ["--system", system]
    return CliRunner().invoke(main, args + list(extra), catch_exceptions=True)


def _by_turn(out: Path, system: str | None = None) -> dict[tuple[str, int], dict]:
    return {(r["dialogue_id"], r["turn_index"]): r for r in _records(out) if system is None or r["system"] == system}


def _label(spec: str) -> str:
    """The label a run gives a system named by `spec` (its options sorted)."""
    return parse_spec(spec).label


def _loaded(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["sessions"][-1]["loaded"]


# --- warm-up, sessions and closing ---------------------------------------------------------------

@pytest.mark.parametrize("options, reason", [
    ("raise_in=respond", "RuntimeError: scripted failure"),
    ("raise_in=new_session", "RuntimeError: scripted failure"),
    ("hang_in=new_session,hang_s=20", "TimeoutError: new_session() did not return within the turn timeout of 1 s"),
    ("hang_in=respond,hang_s=20", "TimeoutError: no end of reply within the turn timeout of 1 s"),
    ("raise_in=session_close", "session.close(): RuntimeError: scripted failure"),
    ("bad=nan,modes=t2s", "warm-up reply: AudioChunk: audio contains NaN or infinite samples"),
    ("forever=text", "ReplyTooLong: the reply passed 1,000,000 characters of text"),
])
def test_a_failing_warm_up_is_a_warning_and_the_dialogues_run(here, options, reason):
    """Session 0 is the warm-up's: it misbehaves, every later session is fine."""
    task = write_task(here / "task", TWO_BY_TWO)
    system = f"{SCRIPTED}:session=0,{options}"
    started = time.monotonic()
    result = _eval(task, system, warmup=1, timeout=1)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 15, "the run waited for a hung warm-up"
    assert f"warm-up of {_label(system)!r} failed ({reason}" in result.output
    assert reason in _loaded(here / "run")[_label(system)]["warmup_failed"]
    records = _records(here / "run")
    assert len(records) == 4 and all(r["status"] == "ok" for r in records), records


@pytest.mark.parametrize("options, error_type, message", [
    ("raise_in=new_session", "RuntimeError", "scripted failure"),
    ("hang_in=new_session,hang_s=20", "TimeoutError", "new_session() did not return within the turn timeout of 1 s"),
])
def test_a_failing_new_session_fails_its_dialogue_only(here, options, error_type, message):
    task = write_task(here / "task", TWO_BY_TWO)
    result = _eval(task, f"{SCRIPTED}:session=0,{options}", timeout=1)
    assert result.exit_code == 0, result.output
    turns = _by_turn(here / "run")
    assert sorted(turns) == [("d0", 0), ("d0", 1), ("d1", 0), ("d1", 1)]
    for index in (0, 1):
        assert turns[("d0", index)]["status"] == "failed"
        assert turns[("d0", index)]["error"]["type"] == error_type
        assert turns[("d0", index)]["error"]["message"] == message
        assert turns[("d1", index)]["status"] == "ok"


@pytest.mark.parametrize("options, error_type, message", [
    ("raise_in=session_close", "RuntimeError", "scripted failure"),
    ("hang_in=session_close,hang_s=20", "TimeoutError",
     "session.close() did not return within the turn timeout of 1 s"),
])
def test_a_failing_session_close_fails_its_dialogue(here, options, error_type, message):
    """The dialogue's last record waits for close(): a session that cannot close fails its
    dialogue (so --retry-failed redoes it), keeping what the turn replied."""
    task = write_task(here / "task", TWO_BY_TWO)
    result = _eval(task, f"{SCRIPTED}:session=0,{options}", timeout=1)
    assert result.exit_code == 0, result.output
    turns = _by_turn(here / "run")
    assert turns[("d0", 0)]["status"] == "ok"
    last = turns[("d0", 1)]
    assert last["status"] == "failed" and last["error"]["type"] == error_type
    assert last["error"]["message"] == f"session.close() failed after the dialogue's last turn: {message}"
    assert last["reply_text"] == "reply to How are you?"
    assert turns[("d1", 0)]["status"] == turns[("d1", 1)]["status"] == "ok"


@pytest.mark.parametrize("options, message", [
    ("raise_in=close", "RuntimeError: scripted failure"),
    ("hang_in=close,hang_s=20", "TimeoutError: system.close() did not return within the turn timeout of 1 s"),
])
def test_a_failing_system_close_is_reported_and_the_next_system_runs(here, options, message):
    task = write_task(here / "task", TWO_BY_TWO)
    first, second = f"{SCRIPTED}:{options}", f"{SCRIPTED}:text=second {{text}}"
    started = time.monotonic()
    result = _eval(task, first, second, timeout=1)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 15, "the run waited for a hung close()"
    assert f"system {_label(first)!r} failed to close: {message}" in result.output
    records = _records(here / "run")
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    assert _by_turn(here / "run", _label(second))[("d1", 1)]["reply_text"] == "second Thanks."


def test_a_system_that_cannot_load_fails_its_dialogues_and_the_others_run(here):
    task = write_task(here / "task", TWO_BY_TWO)
    broken = _label(f"{SCRIPTED}:raise_in=load,error=OSError,message=no weights")
    odd = _label(f"{SCRIPTED}:raise_in=describe,message=describe broke")
    result = _eval(task, broken, odd, SCRIPTED, warmup=1)
    assert result.exit_code == 0, result.output
    assert f"system {broken!r} failed to load: OSError: no weights" in result.output
    failed = _records(here / "run")
    assert {(r["system"], r["status"]) for r in failed} == {(broken, "failed"), (odd, "ok"), (SCRIPTED, "ok")}
    assert all(r["error"]["message"] == "no weights" for r in failed if r["system"] == broken)
    assert _loaded(here / "run")[odd] == {"describe_failed": "RuntimeError: describe broke"}


def test_the_main_thread_takes_the_torch_threads_a_closed_system_left():
    """A system's load() (main thread) sets torch's thread count and its close() (a worker) gives
    it back: under OpenMP the count is per thread, so the runner takes the given-back one too."""
    torch = pytest.importorskip("torch")
    from ivbench.runner import runner, workers

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if before > 1 else 2)
        workers.call(lambda: torch.set_num_threads(before), 10, "close()")
        runner._take_torch_threads()
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


# --- replies without end -------------------------------------------------------------------------

def _scripted_turn(timeout: float, **options) -> tuple[Scripted, object]:
    system = Scripted(**options)
    timing = time_turn(system.new_session(), TurnInput(mode=Mode.T2S, text="hi"), timeout)
    return system, timing


def _stops_reading(system: Scripted) -> None:
    """The worker closed the generator: its count of yielded events no longer moves."""
    deadline = time.monotonic() + 10
    while system.replies_closed == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert system.replies_closed == 1
    seen = system.events_yielded
    time.sleep(0.2)
    assert system.events_yielded == seen


@pytest.mark.parametrize("forever, reason", [
    ("audio", "the reply passed 600 s of audio (ivbench.runner.clock.MAX_REPLY_AUDIO_S)"),
    ("text", "the reply passed 1,000,000 characters of text (ivbench.runner.clock.MAX_REPLY_TEXT_CHARS)"),
    ("empty", "the reply passed 100,000 events (ivbench.runner.clock.MAX_REPLY_EVENTS)"),
])
def test_a_reply_without_end_is_cut_at_its_cap(forever, reason):
    system, timing = _scripted_turn(60, forever=forever)
    assert not timing.timed_out and timing.error["type"] == "ReplyTooLong"
    assert timing.error["message"] == f"{reason}; the rest of the reply was not read"
    assert len(timing.events) <= MAX_REPLY_EVENTS
    _stops_reading(system)


def test_a_turn_given_up_on_stops_being_read():
    system, timing = _scripted_turn(0.3, forever="text", pace_s=0.02)
    assert timing.timed_out
    _stops_reading(system)


def test_a_reply_without_end_is_a_failed_turn_and_the_run_goes_on(here):
    task = write_task(here / "task", [["Hello."], ["Again."]])
    result = _eval(task, f"{SCRIPTED}:forever=text,dialogue=d0")
    assert result.exit_code == 0, result.output
    turns = _by_turn(here / "run")
    assert turns[("d0", 0)]["status"] == "failed" and turns[("d0", 0)]["error"]["type"] == "ReplyTooLong"
    assert turns[("d1", 0)]["status"] == "ok"


# --- reply events --------------------------------------------------------------------------------

BAD_EVENTS = {
    "stereo": "AudioChunk: 2 channels; ivbench needs mono audio (mix it down first): an array of shape (1600, 2), "
              "read as (samples, channels)",
    "stereo_first": "AudioChunk: 2 channels; ivbench needs mono audio (mix it down first): an array of shape "
                    "(2, 1600), read as (channels, samples)",
    "nan": "AudioChunk: audio contains NaN or infinite samples (first at sample 700, nan)",
    "inf": "AudioChunk: audio contains NaN or infinite samples (first at sample 700, inf)",
    "float_rate": "AudioChunk: sample rate 16000.0 is a float; give an int number of Hz",
    "int_text": "TextDelta.text is a int (42); give str",
    "stage_name": "StageMark.name is a int (7); give str",
    "not_event": "yielded a dict; yield AudioChunk, TextDelta or StageMark from ivbench.types",
}


def test_bad_reply_events_are_named(here):
    """One run, one system per kind of bad event: each turn fails saying what was wrong."""
    task = write_task(here / "task", [["Hello."]])
    systems = {kind: _label(f"{SCRIPTED}:modes=t2s,bad={kind}") for kind in BAD_EVENTS}
    result = _eval(task, *systems.values())
    assert result.exit_code == 0, result.output
    by_system = {r["system"]: r for r in _records(here / "run")}
    for kind, system in systems.items():
        record = by_system[system]
        assert record["status"] == "failed" and record["error"]["type"] == "InvalidReply", kind
        assert record["error"]["message"] == f"reply of {system!r} to dialogue 'd0' turn 0: {BAD_EVENTS[kind]}"
        assert record["reply_audio"] is None


@pytest.mark.parametrize("samples, rate, message", [
    (np.zeros((2, 800), np.float32), 16000, "2 channels; ivbench needs mono audio (mix it down first): an array of "
                                            "shape (2, 800), read as (channels, samples)"),
    (np.zeros((800, 6), np.float32), 16000, "6 channels; ivbench needs mono audio (mix it down first): an array of "
                                            "shape (800, 6), read as (samples, channels)"),
    (np.zeros((100, 100), np.float32), 16000, "a 2-D array of shape (100, 100) is not audio"),
    (np.zeros((2, 2, 8), np.float32), 16000, "audio must be a 1-D array of samples, got shape (2, 2, 8)"),
    (np.zeros(800, np.uint8), 16000, "samples of dtype uint8 are not audio; give float32 in [-1, 1]"),
    (np.zeros(800, np.complex64), 16000, "samples of dtype complex64 are not audio"),
    (np.zeros(800, np.float32), True, "sample rate True is a bool; give an int number of Hz"),
    (np.zeros(800, np.float32), np.float64(16000), "sample rate 16000.0 is a float64; give an int number of Hz"),
    (np.zeros(800, np.float32), 4000, "sample rate 4000 is outside 8000–192000 Hz"),
    ([0.0] * 800, 16000, "samples are a list, not a numpy array"),
])
def test_check_audio_says_what_is_wrong(samples, rate, message):
    with pytest.raises(AudioError) as caught:
        check_audio(samples, rate, "here")
    assert str(caught.value).startswith("here: ") and message in str(caught.value)


def test_check_audio_accepts_mono_in_any_layout_and_precision():
    ramp = np.linspace(-0.5, 0.5, 800)
    for samples in (ramp.astype(np.float32), ramp, ramp.astype(np.float16)[None, :], ramp[:, None]):
        audio = check_audio(samples, np.int64(16000), "here")
        assert audio.samples.dtype == np.float32 and audio.samples.shape == (800,) and audio.sample_rate == 16000
        assert np.allclose(audio.samples, ramp, atol=1e-3)


# --- exact 16-bit audio --------------------------------------------------------------------------

def test_int16_round_trips_exactly_through_check_and_wav():
    every = np.arange(-32768, 32768).astype(np.int16)
    audio = check_audio(every, 16000, "here")
    assert np.array_equal(audio.samples * 32768, every.astype(np.float32))
    back = from_wav_bytes(to_wav_bytes(audio), "here")
    assert np.array_equal(back.samples, audio.samples)
    data, _ = soundfile.read(io.BytesIO(to_wav_bytes(audio)), dtype="int16")
    assert np.array_equal(data, every)


@pytest.mark.parametrize("dtype", ["int16", "float32", "float64"])
def test_a_reply_is_saved_sample_for_sample(here, dtype):
    """Every int16 value once, yielded as int16 or as float k/32768: the saved WAV holds exactly it."""
    task = write_task(here / "task", [["Hello."]])
    result = _eval(task, f"{SCRIPTED}:modes=t2s,audio=ramp,dtype={dtype}")
    assert result.exit_code == 0, result.output
    (record,) = _records(here / "run")
    assert record["status"] == "ok" and record["warnings"] == []
    saved, rate = soundfile.read(here / "run" / record["reply_audio"], dtype="int16")
    assert rate == 16000 and np.array_equal(saved, np.arange(-32768, 32768).astype(np.int16))


# --- audio outside [-1, 1] -----------------------------------------------------------------------

def test_a_loud_reply_is_clipped_with_a_warning(here):
    task = write_task(here / "task", [["Hello."]])
    result = _eval(task, f"{SCRIPTED}:modes=t2s,amplitude=1.5")
    assert result.exit_code == 0, result.output
    (record,) = _records(here / "run")
    assert record["status"] == "ok"
    assert record["warnings"] == ["reply audio: 1600 samples (1e+02%) outside [-1, 1] clipped (peak 1.5)"]
    saved, _ = soundfile.read(here / "run" / record["reply_audio"], dtype="int16")
    assert np.all(saved == 32767)


def test_loud_recorded_user_audio_is_clipped_before_the_system_hears_it(here):
    task_dir = here / "task"
    task_dir.mkdir()
    tone = 1.4 * np.sin(np.arange(8000) * 0.05)
    soundfile.write(task_dir / "loud.wav", tone.astype(np.float32), 16000, subtype="FLOAT")
    (task_dir / "tiny.jsonl").write_text(json.dumps({"id": "d0", "turns": [{"text": "Hi.", "audio": "loud.wav"}]}))
    result = _eval(task_dir / "tiny.jsonl", SCRIPTED, extra=("--mode", "s2t"))
    assert result.exit_code == 0, result.output
    (record,) = _records(here / "run")
    outside = int(np.sum(np.abs(tone.astype(np.float32)) > 1))
    assert record["warnings"] == [f"user audio {task_dir.resolve() / 'loud.wav'}: {outside} samples "
                                  f"({100 * outside / 8000:.2g}%) outside [-1, 1] clipped (peak 1.4)"]
    assert record["stage_data"]["heard"]["peak"] == 1.0  # what the system was given
    saved, _ = soundfile.read(here / "run" / record["user_audio"], dtype="int16")
    assert saved.max() == 32767 and saved.min() == -32768


def test_loud_synthesised_user_audio_is_clipped_the_same_way_fresh_or_cached(here):
    task = write_task(here / "task", [["Hello there."]])
    voice = ("--voice", "ivbench.testing:ScriptedVoice:amplitude=1.5", "--mode", "s2t")
    records = []
    for out in ("run", "again"):  # the second run reads the speech from the cache
        result = CliRunner().invoke(main, ["eval", "--task", str(task), "--system", SCRIPTED, "--warmup", "0",
                                           "--out", out, "--no-progress", "--no-score", *voice])
        assert result.exit_code == 0, result.output
        (record,) = _records(here / out)
        records.append(record)
    for record in records:
        assert record["status"] == "ok" and record["stage_data"]["heard"]["peak"] == 1.0
        (warning,) = record["warnings"]
        assert warning.startswith("user audio (synthesised): ") and warning.endswith("clipped (peak 1.5)")
    assert records[0]["warnings"] == records[1]["warnings"]
    heard = [(here / out / r["user_audio"]).read_bytes() for out, r in zip(("run", "again"), records, strict=True)]
    assert heard[0] == heard[1]


def test_clip_leaves_audio_in_range_alone():
    from ivbench.audio import clip_audio

    audio = Audio(np.array([-1.0, 0.0, 1.0], dtype=np.float32), 16000)
    same, warning = clip_audio(audio, "x")
    assert same is audio and warning is None


# --- Ctrl-C --------------------------------------------------------------------------------------

# Replies of two sentences, so that parrot spends a while synthesising each one in onnxruntime (in
# its worker thread), where an interrupt used to abort the process (exit 134). Mode t2s: no user
# speech is synthesised in the main thread between turns, so the interrupt lands in the worker.
TWO_SENTENCES = "The train leaves the station at nine in the morning. It arrives in the city before noon."


def _cli(task: Path, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "eval", "--task", str(task), "--system", "parrot:voice=piper:joe",
            "--mode", "t2s", "--warmup", "0", "--out", str(out), "--no-progress", "--no-score"]


def _records_intact(out: Path) -> list[dict]:
    raw = (out / "records.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.splitlines()]


@pytest.mark.slow
def test_ctrl_c_while_piper_synthesises_exits_130_and_resumes(tmp_path):
    task = write_task(tmp_path / "task", [[TWO_SENTENCES, TWO_SENTENCES], [TWO_SENTENCES, TWO_SENTENCES]])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(task, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **INTERRUPTIBLE)
    deadline = time.monotonic() + 120
    while not (out / "records.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.1)  # d0 turn 1 is being synthesised
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "waiting up to 10 s for the system's current call to return" in stderr  # it was inside the system
    assert "interrupted: what was finished is saved" in stderr
    cut = _records_intact(out)
    assert [(r["dialogue_id"], r["turn_index"]) for r in cut] == [("d0", 0)]

    again = subprocess.run(_cli(task, out), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = _records_intact(out)
    keys = [(r["dialogue_id"], r["turn_index"]) for r in resumed]
    assert sorted(keys) == [("d0", 0), ("d0", 1), ("d1", 0), ("d1", 1)], "a record is missing or appears twice"
    for r in resumed:
        assert r["status"] == "ok" and r["reply_text"] == TWO_SENTENCES
        assert r["attempt"] == (2 if r["dialogue_id"] == "d0" else 1)  # the cut dialogue was redone whole
        assert soundfile.info(out / r["reply_audio"]).duration > 3


def test_a_second_ctrl_c_stops_a_hung_system_at_once(tmp_path):
    task = write_task(tmp_path / "task", [["one", "two"]])
    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "cli.py"), "eval", "--task", str(task), "--system",
               f"{SCRIPTED}:hang_in=respond,turn=1,hang_s=120", "--turn-timeout", "0", "--warmup", "0",
               "--out", str(out), "--no-progress", "--no-score"]
    proc = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **INTERRUPTIBLE)
    deadline = time.monotonic() + 60
    while not (out / "records.jsonl").exists() and time.monotonic() < deadline:  # turn 0 done: turn 1 hangs
        time.sleep(0.01)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    lines = [proc.stderr.readline() for _ in range(1)]
    while "waiting up to" not in lines[-1] and lines[-1] and len(lines) < 20:
        lines.append(proc.stderr.readline())
    assert "waiting up to 10 s for the system's current call to return" in lines[-1], lines
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - started < 5
    assert _records_intact(out)[0]["turn_index"] == 0
