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

from conftest import ROOT, INTERRUPTIBLE, assert_user_error, write_task

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


def _eval_in_process(*args: str):
    from click.testing import CliRunner

    from ivbench.cli import main

    return CliRunner().invoke(main, ["eval", "--warmup", "0", "--no-progress", *args], catch_exceptions=True)


def test_resume_that_adds_records_drops_the_scores_of_the_earlier_ones(tmp_path, monkeypatch):
    """Scored, then resumed with --no-score over more dialogues: the old scores.jsonl covered only
    the first records, and the report showed its latency as the whole run's. It is removed (with
    the tables made from it), so the report reads latency off every record; scoring writes it again."""
    from ivbench.report.data import load_report_data

    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path / "task", [["a1", "a2"], ["b1"]])
    system = "ivbench.testing:Scripted:modes=t2t"
    first = _eval_in_process("--task", str(task), "--system", system, "--out", "run", "--limit", "1")
    assert first.exit_code == 0, first.output
    assert len((tmp_path / "run" / "scores.jsonl").read_text().splitlines()) == 2
    again = _eval_in_process("--task", str(task), "--system", system, "--out", "run", "--no-score")
    assert again.exit_code == 0, again.output
    assert "removed the scores of its earlier records (scores.jsonl, summary.csv" in again.output
    assert not any((tmp_path / "run" / name).exists()
                   for name in ("scores.jsonl", "summary.csv", "pairwise.csv", "crossmodal.csv"))
    data = load_report_data([tmp_path / "run"])
    assert sorted((r.dialogue_id, r.turn_index) for r in data.rows if r.metric == "latency") == [
        ("d0", 0), ("d0", 1), ("d1", 0)]
    # Nothing to add: the scores of a complete run stay.
    scored = _eval_in_process("--task", str(task), "--system", system, "--out", "run")
    assert scored.exit_code == 0, scored.output
    before = (tmp_path / "run" / "scores.jsonl").read_bytes()
    same = _eval_in_process("--task", str(task), "--system", system, "--out", "run", "--no-score")
    assert same.exit_code == 0 and "removed the scores" not in same.output
    assert (tmp_path / "run" / "scores.jsonl").read_bytes() == before


def test_resume_with_other_system_options_under_the_same_label_is_refused(tmp_path, monkeypatch):
    """A label names what the user chose to call a system, not what it runs: resuming with other
    options under the same label would mix replies of two systems in one row of the results."""
    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path / "task", [["a1"], ["b1"]])
    run_yaml = "task: {task}\nsystems: [{{name: ivbench.testing:Scripted, label: mine, text: '{text}'}}]\n" \
               "mode: t2t\nout: run\nlimit: {limit}\n"
    (tmp_path / "run.yaml").write_text(run_yaml.format(task=task, text="one {text}", limit=1))
    assert _eval_in_process("-c", "run.yaml").exit_code == 0
    (tmp_path / "run.yaml").write_text(run_yaml.format(task=task, text="two {text}", limit=2))
    result = _eval_in_process("-c", "run.yaml")
    assert_user_error(result, "holds a run with another 'system_options' for 'mine'", "'text': 'one {text}'",
                      "'text': 'two {text}'", "--fresh")
    assert [r["reply_text"] for r in _records(tmp_path / "run")] == ["one a1"]

    # A run made before the manifest recorded system options resumes as before.
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    del manifest["identity"]["system_options"]
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "run.yaml").write_text(run_yaml.format(task=task, text="one {text}", limit=2))
    resumed = _eval_in_process("-c", "run.yaml")
    assert resumed.exit_code == 0, resumed.output
    assert [r["reply_text"] for r in _records(tmp_path / "run")] == ["one a1", "one b1"]


def test_resume_after_the_task_file_changed_a_recorded_dialogue_is_refused(tmp_path, monkeypatch):
    """Same spelling of the task, edited file: the recorded dialogue would be kept in its old
    version and the new ones run from the new file, two versions of a task in one run."""
    monkeypatch.chdir(tmp_path)
    system = "ivbench.testing:Scripted:modes=t2t"
    task = write_task(tmp_path / "task", [["a1", "a2"], ["b1"], ["c1"]])
    assert _eval_in_process("--task", str(task), "--system", system, "--out", "run", "--limit", "1",
                            "--no-score").exit_code == 0
    digests = json.loads((tmp_path / "run" / "manifest.json").read_text())["task"]["dialogue_digests"]
    assert list(digests) == ["d0"]

    # Dialogues not run yet may change; with the recorded one unchanged the run resumes.
    write_task(tmp_path / "task", [["a1", "a2"], ["b1 edited"], ["c1"]])
    assert _eval_in_process("--task", str(task), "--system", system, "--out", "run", "--limit", "2",
                            "--no-score").exit_code == 0
    assert [r["reply_text"] for r in _records(tmp_path / "run")][-1].endswith("b1 edited")

    write_task(tmp_path / "task", [["a1", "a2 edited"], ["b1 edited"], ["c1"]])
    result = _eval_in_process("--task", str(task), "--system", system, "--out", "run", "--no-score")
    assert_user_error(result, "dialogue 'd0' of task", "changed since the run recorded it", "--fresh")
    assert len(_records(tmp_path / "run")) == 3  # nothing lost, nothing added

    # A lower --limit does not forget a recorded dialogue's digest.
    result = _eval_in_process("--task", str(task), "--system", system, "--out", "run", "--limit", "1",
                              "--no-score")
    assert_user_error(result, "dialogue 'd0' of task")
    write_task(tmp_path / "task", [["a1", "a2"], ["b1 edited"], ["c1"]])
    assert _eval_in_process("--task", str(task), "--system", system, "--out", "run", "--limit", "1",
                            "--no-score").exit_code == 0
    kept = json.loads((tmp_path / "run" / "manifest.json").read_text())["task"]["dialogue_digests"]
    assert sorted(kept) == ["d0", "d1"]


# --- one writer per run directory ------------------------------------------------------------------

def test_a_second_command_on_a_run_being_written_is_refused_and_the_lock_dies_with_its_holder(tmp_path,
                                                                                                monkeypatch):
    """Two `ivbench eval` on one --out would run the same dialogues twice and interleave their
    records: the second (and a `score`) is refused in one line naming the first, and writes
    nothing; `show` still reads the run; once the first is killed (-9), its lock is gone."""
    from click.testing import CliRunner

    from ivbench.cli import main

    monkeypatch.chdir(tmp_path)
    task = write_task(tmp_path / "task", [["a", "b"]])
    stuck = "ivbench.testing:Scripted:hang_in=respond,hang_s=600,turn=1"  # turn 0 recorded, then it waits
    command = ["eval", "--task", str(task), "--system", stuck, "--out", "run", "--warmup", "0", "--no-progress",
               "--turn-timeout", "900", "--metrics", "latency"]
    first = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *command], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _records(tmp_path / "run") and time.monotonic() < deadline:
            time.sleep(0.02)
        written = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
        assert len(_records(tmp_path / "run")) == 1, "the first command wrote no record"
        second = CliRunner().invoke(main, [*command, "--turn-timeout", "1"])  # were it to run: 1 s, not 600
        assert_user_error(second, "run: another ivbench command is writing this run directory",
                          f"pid {first.pid}", "give another --out")
        assert_user_error(CliRunner().invoke(main, ["score", "run", "--no-progress", "--metrics", "latency"]),
                          "another ivbench command is writing", f"pid {first.pid}")
        assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == written
        shown = CliRunner().invoke(main, ["show", "run"])
        assert shown.exit_code == 0 and "0/1 dialogues" in shown.output, shown.output
    finally:
        first.kill()
        first.wait(timeout=30)
    scored = CliRunner().invoke(main, ["score", "run", "--no-progress", "--metrics", "latency"])
    assert scored.exit_code == 0, scored.output
