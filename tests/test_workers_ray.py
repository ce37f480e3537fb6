"""Generation and scoring on Ray workers (docs/architecture.md, "Workers"): the same records
with 2 workers as with 1, and a distributed score byte-identical to a local one; a worker actor
killed mid-run costs nothing but a redo of its dialogue; the driver killed with SIGKILL resumes,
with any number of workers; a system that cannot load, or crashes, on a worker does what it does
locally; workers that share a machine's CPUs say so.

One local Ray cluster serves the module (started once, a few seconds); runs in this process
join it, runs in a subprocess join it with --ray-address or start their own with --workers."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_task
from ivbench.cli import main
from ivbench.registry import parse_spec

ray = pytest.importorskip("ray")

SCRIPTED = "ivbench.testing:Scripted"
SCORED = "transcript,asr_wer,dnsmos,latency"  # real models: Whisper tiny.en, DNSMOS
TIMING = ("first_audio_ms", "first_text_ms", "end_ms", "rtf", "stages", "worker")


@pytest.fixture(scope="module")
def cluster():
    """The module's Ray cluster; its address, for subprocesses that join it."""
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _records(out: Path) -> list[dict]:
    path = out / "records.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _session(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["sessions"][-1]


def _eval(*args: str):
    return CliRunner().invoke(main, ["eval", "--no-progress", "--warmup", "0", *args], catch_exceptions=True)


def _essence(record: dict) -> dict:
    """A record without what differs between two runs of the same thing: timings, the worker."""
    kept = {k: v for k, v in record.items() if k not in TIMING}
    kept["events"] = [[kind, size] for kind, _, size in record["events"]]
    return kept


def _keyed(out: Path) -> dict[tuple[str, str, int], dict]:
    records = _records(out)
    keys = [(r["system"], r["dialogue_id"], r["turn_index"]) for r in records]
    assert len(keys) == len(set(keys)), "a record appears twice"
    return dict(zip(keys, records, strict=True))


# --- the same records -----------------------------------------------------------------------------

def test_two_workers_give_the_records_of_one(cluster, here):
    """demo + parrot, user turns spoken by Piper in the workers: same records, same audio."""
    runs = {}
    for n in (1, 2):
        result = _eval("--task", "demo", "--system", "parrot", "--limit", "4", "--workers", str(n),
                       "--out", f"w{n}")
        assert result.exit_code == 0, result.output
        runs[n] = _keyed(here / f"w{n}")
    assert len(runs[1]) == len(runs[2]) > 4
    assert {k: _essence(r) for k, r in runs[1].items()} == {k: _essence(r) for k, r in runs[2].items()}
    for record in runs[2].values():
        assert record["status"] == "ok"
        for path in (record["reply_audio"], record["user_audio"]):
            assert (here / "w1" / path).read_bytes() == (here / "w2" / path).read_bytes()
    two = _session(here / "w2")
    assert {r["worker"] for r in runs[2].values()} <= set(two["workers"])
    assert all(w["actor"].startswith("ivbench-") and w["ray_node"] for w in two["workers"].values())
    # Two CPU workers on this machine: latency was measured under contention, and the run says so.
    assert two["contention"] == {"parrot": ["2 workers (w1, w2) shared the "
                                            f"{os.cpu_count()} CPU cores of {two['workers']['w1']['host']}"]}
    assert "contention" not in _session(here / "w1")
    assert "measured under contention" in (here / "w2" / "report.html").read_text()
    shown = CliRunner().invoke(main, ["show", "w2"])
    assert "workers:  2 (w1, w2)" in shown.output and "latency of parrot was measured under contention" in shown.output

    # Scoring the run on 2 workers writes the very bytes of a local score; the driver alone wrote
    # the cache, and a local score from that cache gives the same bytes again.
    scored = {}
    for name, flags in (("local", ["--no-cache"]), ("ray", ["--workers", "2"]), ("cached", [])):
        result = CliRunner().invoke(main, ["score", "w1", "--no-progress", "--metrics", SCORED, "--cache-dir",
                                           str(here / "cache"), *flags])
        assert result.exit_code == 0, result.output
        scored[name] = (here / "w1" / "scores.jsonl").read_bytes()
    assert scored["ray"] == scored["local"] == scored["cached"]
    rows = [json.loads(line) for line in scored["ray"].splitlines()]
    assert {r["metric"] for r in rows} == {"transcript", "asr_wer", "dnsmos", "latency"}
    assert all(r["status"] == "ok" for r in rows if r["metric"] in ("transcript", "dnsmos"))


# --- losing a worker, or the driver ---------------------------------------------------------------

SLOW = f"{SCRIPTED}:hang_in=respond,hang_s=1.5"  # each turn takes 1.5 s: a kill lands inside a dialogue


def _wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _cli(task: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "ivbench.cli", "eval", "--task", str(task), "--system", SLOW, "--warmup", "0",
            "--out", str(out), "--no-progress", "--metrics", "latency", *flags]


def _check_once_each(out: Path, dialogues: int, turns: int) -> list[dict]:
    records = _records(out)
    keys = sorted((r["dialogue_id"], r["turn_index"]) for r in records)
    assert keys == [(f"d{d}", t) for d in range(dialogues) for t in range(turns)], "a record is lost or doubled"
    assert all(r["status"] == "ok" for r in records)
    return records


def test_a_worker_actor_killed_mid_run_costs_only_a_redo(cluster, tmp_path):
    task = write_task(tmp_path / "task", [["a", "b"]] * 6)
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(task, out, "--ray-address", cluster, "--workers", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # A worker has finished the first turn of a dialogue and is inside its second: kill its actor.
    first: dict = {}

    def started() -> bool:
        first.update(next(iter(_records(out)), {}))
        return bool(first)

    _wait_for(started, what="a first record")
    victim = _session(out)["workers"][first["worker"]]["actor"]
    ray.kill(ray.get_actor(victim, namespace="ivbench"))
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert f"worker {first['worker']} was lost" in stderr
    records = _check_once_each(out, 6, 2)
    redone = [r for r in records if r["dialogue_id"] == first["dialogue_id"]]
    assert {r["attempt"] for r in redone} == {2} and {r["worker"] for r in redone} != {first["worker"]}
    partial = [json.loads(line) for line in (out / "records.partial.jsonl").read_text().splitlines()]
    assert [(r["dialogue_id"], r["turn_index"], r["attempt"]) for r in partial] == [(first["dialogue_id"], 0, 1)]


def test_the_driver_killed_mid_run_resumes_with_another_number_of_workers(tmp_path):
    """kill -9 of a driver that started its own Ray cluster (--workers 2); the same command with
    --workers 1 resumes it: nothing lost, nothing twice, the cut dialogues redone whole."""
    task = write_task(tmp_path / "task", [["a", "b"]] * 4)
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(task, out, "--workers", "2"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Two workers, one turn each every 1.5 s: the fifth record means the third and fourth dialogues
    # have begun; kill while their second turns run.
    _wait_for(lambda: len(_records(out)) >= 5, what="five records")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    cut = _records(out)
    assert 5 <= len(cut) < 8
    again = subprocess.run(_cli(task, out, "--workers", "1"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    records = _check_once_each(out, 4, 2)
    started = {r["dialogue_id"] for r in cut}
    finished = {r["dialogue_id"] for r in cut if r["turn_index"] == 1}
    assert started - finished, "the kill should cut a dialogue"
    for r in records:  # a cut dialogue was redone whole; the others were kept or run once
        assert r["attempt"] == (2 if r["dialogue_id"] in started - finished else 1), r
    partial = [json.loads(line) for line in (out / "records.partial.jsonl").read_text().splitlines()]
    assert {r["dialogue_id"] for r in partial} == started - finished


# --- a system's failures, on a worker as locally ------------------------------------------------------

def test_a_system_that_cannot_load_on_a_worker_fails_its_dialogues(cluster, here):
    task = write_task(here / "task", [["a"], ["b"], ["c"]])
    broken = f"{SCRIPTED}:raise_in=load,error=OSError,message=no weights"
    result = _eval("--task", str(task), "--system", broken, "--system", SCRIPTED, "--workers", "2",
                   "--out", "run", "--metrics", "latency")
    assert result.exit_code == 0, result.output
    label = parse_spec(broken).label
    assert result.output.count(f"system {label!r} failed to load: OSError: no weights") == 1
    records = _records(here / "run")
    assert sorted((r["system"], r["status"]) for r in records) == [(SCRIPTED, "ok")] * 3 + [(label, "failed")] * 3
    assert all(r["error"]["message"] == "no weights" for r in records if r["system"] == label)


def test_a_system_that_crashes_on_a_worker_fails_its_dialogue_only(cluster, here):
    task = write_task(here / "task", [["a", "b"], ["c", "d"], ["e", "f"]])
    result = _eval("--task", str(task), "--system", f"{SCRIPTED}:crash_in=respond,crash=segfault,dialogue=d1,turn=1",
                   "--workers", "2", "--out", "run", "--metrics", "latency")
    assert result.exit_code == 0, result.output
    turns = {(r["dialogue_id"], r["turn_index"]): r for r in _records(here / "run")}
    assert len(turns) == 6
    assert turns[("d1", 1)]["error"]["message"].startswith(
        "the worker process running the system was killed by SIGSEGV during turn 1 of dialogue 'd1'")
    assert [k for k, r in turns.items() if r["status"] != "ok"] == [("d1", 1)]


def test_a_lost_scoring_worker_leaves_its_batches_to_the_others(cluster, here):
    from ivbench.scoring.run import BATCH_SIZE, _items
    from ivbench.store import RunStore
    from ivbench.workers.scoring import ScoringWorkers

    task = write_task(here / "task", [["a"]] * (2 * BATCH_SIZE + 3))
    result = _eval("--task", str(task), "--system", f"{SCRIPTED}:modes=t2s", "--out", "run", "--no-score")
    assert result.exit_code == 0, result.output
    items = _items(RunStore(here / "run").records(), here / "run")
    batches = [items[i:i + BATCH_SIZE] for i in range(0, len(items), BATCH_SIZE)]
    said: list[str] = []
    with ScoringWorkers(2, None, "cpu", here / "run", said.append) as workers:
        ray.kill(workers.actors[0])
        answers = dict(workers.score("latency", parse_spec("latency"), batches))
    assert said == ["scoring worker s1 was lost; its batches go to the others"]
    assert sorted(answers) == [0, 1, 2]
    assert [len(answers[i]["results"]) for i in range(3)] == [BATCH_SIZE, BATCH_SIZE, 3]
    assert all(r.status == "ok" for answer in answers.values() for r in answer["results"])

