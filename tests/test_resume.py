"""Kill a run mid-dialogue (SIGKILL, and Ctrl-C), run the same command again: the records equal
those of an uninterrupted run, none twice, and the cut dialogue was redone from its first turn."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
import pytest

from conftest import ROOT, write_task, INTERRUPTIBLE

# Slow enough to be cut mid-dialogue; its replies show the session's history (a real module, by path).
SYSTEM = Path(__file__).resolve().parent / "plugins" / "counting.py"


def _command(task: Path, system: Path, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "eval", "--task", str(task),
            "--system", f"{system}:CountingSystem", "--out", str(out), "--warmup", "0", "--no-progress"]


def _records(out: Path) -> list[dict]:
    path = out / "records.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _essence(records: list[dict]) -> list[tuple]:
    return sorted((r["system"], r["dialogue_id"], r["turn_index"], r["status"], r["reply_text"],
                   r["reply_audio"]) for r in records)


def _interrupt_then_resume(tmp_path: Path, sig: int) -> tuple[list[dict], list[dict], Path, Path]:
    task = write_task(tmp_path / "task", [["a1", "a2", "a3"], ["b1", "b2", "b3"], ["c1", "c2"]])
    system = tmp_path / "counting.py"
    shutil.copy(SYSTEM, system)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    reference = tmp_path / "uninterrupted"
    subprocess.run(_command(task, system, reference), check=True, env=env, capture_output=True)

    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_command(task, system, out), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **INTERRUPTIBLE)
    deadline = time.monotonic() + 60
    while len(_records(out)) < 4 and time.monotonic() < deadline:  # dialogue b is under way
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    cut = _records(out)
    assert 4 <= len(cut) < 8, "the kill should land inside the second dialogue"
    subprocess.run(_command(task, system, out), check=True, env=env, capture_output=True)
    return _records(reference), _records(out), reference, out


def _check(reference: list[dict], resumed: list[dict], ref_dir: Path, out: Path) -> None:
    assert len(resumed) == len(reference) == 8
    keys = [(r["dialogue_id"], r["turn_index"]) for r in resumed]
    assert len(keys) == len(set(keys)), "a record appears twice"
    assert _essence(resumed) == _essence(reference)
    by_key = {(r["dialogue_id"], r["turn_index"]): r for r in resumed}
    # Redone from its first turn: the last reply of dialogue b heard all three turns of b only.
    assert by_key[("d1", 2)]["reply_text"] == "reply 3 after b1 / b2 / b3"
    for r in reference:
        assert (out / r["reply_audio"]).read_bytes() == (ref_dir / r["reply_audio"]).read_bytes()


def test_sigkill_mid_dialogue_then_resume(tmp_path):
    reference, resumed, ref_dir, out = _interrupt_then_resume(tmp_path, signal.SIGKILL)
    _check(reference, resumed, ref_dir, out)
    # The half-done dialogue's records were set aside, not lost.
    partial = (out / "records.partial.jsonl").read_text().splitlines()
    assert partial and all(json.loads(line)["dialogue_id"] == "d1" for line in partial)
    assert {r["attempt"] for r in resumed if r["dialogue_id"] == "d1"} == {2}


def test_ctrl_c_mid_dialogue_then_resume(tmp_path):
    reference, resumed, ref_dir, out = _interrupt_then_resume(tmp_path, signal.SIGINT)
    _check(reference, resumed, ref_dir, out)


def test_files_carry_a_format_version_and_newer_ones_are_refused(tmp_path):
    """manifest.json, each line of records.jsonl and of scores.jsonl carry `format_version`; a
    file without one is format 1 (written before versions); a newer one is refused with a message
    that says to upgrade, never misread."""
    import json

    from ivbench.errors import RunDirError
    from ivbench.store import RunStore
    from ivbench.store.formats import KEY
    from ivbench.store.scores import ScoreRow, read_scores, write_scores
    from ivbench.types import MetricResult, TurnRecord

    store = RunStore(tmp_path)
    store.write_manifest({"config": {}})
    record = TurnRecord(system="s", task="t", dialogue_id="d", turn_index=0, n_turns=1, mode="t2t", attempt=1,
                        status="ok", user_text="hi", user_audio=None, reference=None, reply_text="hello",
                        reply_audio=None, reply_sample_rate=None, reply_duration_s=None, first_audio_ms=None,
                        first_text_ms=1.0, end_ms=2.0, rtf=None, events=[], stages={})
    store.append(record)
    write_scores(tmp_path, [ScoreRow("latency", "s", "d", 0, "t2t", MetricResult({"end_ms": 2.0}))])
    assert json.loads(store.manifest_path.read_text())[KEY] == 1
    assert json.loads(store.records_path.read_text())[KEY] == 1
    assert json.loads((tmp_path / "scores.jsonl").read_text())[KEY] == 1
    assert store.records() == [record] and read_scores(tmp_path)[0].result.values == {"end_ms": 2.0}

    # Without a version (an older run): read as format 1.
    line = json.loads(store.records_path.read_text())
    del line[KEY]
    store.records_path.write_text(json.dumps(line) + "\n")
    assert store.records() == [record]

    for path, write in ((store.records_path, lambda d: json.dumps(d) + "\n"),
                        (tmp_path / "scores.jsonl", lambda d: json.dumps(d) + "\n"),
                        (store.manifest_path, json.dumps)):
        data = json.loads(path.read_text().splitlines()[0] if path.suffix == ".jsonl" else path.read_text())
        data[KEY] = 2
        path.write_text(write(data))
        with pytest.raises(RunDirError, match=r"written by a newer ivbench \(format 2; this one reads up to 1\)"):
            if path.name == "records.jsonl":
                store.records()
            elif path.name == "scores.jsonl":
                read_scores(tmp_path)
            else:
                store.read_manifest()
