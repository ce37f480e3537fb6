"""The acceptance matrix: every built-in task × every built-in system × every mode it declares,
through the real command line — `ivbench eval` → `ivbench score` → `ivbench report` — with the
judge metrics against a real OpenAI-compatible HTTP server on 127.0.0.1.

Each task is one `eval` (all systems, `--mode all`, `--limit 1`, no warm-up), so each system's
models load once per task; `score` then re-reads the caches the eval filled. Beside the matrix:
a run where every turn fails, a run with one system and no references, and one report over
several runs. A new built-in task or system joins the matrix by itself (or fails
`test_every_builtin_system_has_a_matrix_entry` until it is given a cheap configuration).
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pytest
import yaml

from fake_openai_server import FakeOpenAIServer
from ivbench.registry import BUILTINS, entries
from ivbench.types import Mode

pytestmark = pytest.mark.slow

IVBENCH = str(Path(sys.executable).with_name("ivbench"))
# The judge reply carries every prompt's format: llama-omni and the dialogue judge read
# "Score: N", content-style "Content: N" / "Style: N", mt-bench "[[N]]".
JUDGE_REPLY = "Content: 4\nStyle: 3\nScore: 4\nRating: [[7]]"
# What the judge metrics are run as, besides the defaults for the CPU.
METRICS = "latency;first_speech;asr_wer;ref_wer;dnsmos;judge;judge:prompt=content-style;judge_dialogue"


def cheap_systems(url: str) -> dict[str, dict[str, Any]]:
    """One cheap configuration of each built-in system (its registry name -> YAML entry)."""
    return {
        "parrot": {"name": "parrot"},
        "cascade": {"name": "cascade", "max_new_tokens": 24},
        "cascade-openai": {"name": "cascade-openai", "llm_model": "fake", "base_url": url},
        "groupformer": {"name": "groupformer", "init": "random", "size": "tiny"},
        "groupformer-text-first": {"name": "groupformer-text-first", "init": "random", "size": "tiny"},
    }


# The suites (BUILTINS["tasks"]) need their datasets: tests/test_suites_e2e.py runs them on fixtures.
BUILTIN_TASKS = [e.name for e in entries("tasks") if e.origin == "built-in" and e.name not in BUILTINS["tasks"]]
ALL_MODES = [m.value for m in Mode]


def ivbench(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([IVBENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, (f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\n"
                                  f"stderr:\n{done.stderr[-6000:]}")
    assert "Traceback" not in done.stderr, done.stderr[-6000:]
    return done


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summary(run: Path) -> list[dict[str, str]]:
    with open(run / "summary.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(reply=JUDGE_REPLY) as s:
        yield s


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("acceptance")


def write_config(folder: Path, name: str, **config: Any) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def eval_score_report(workdir: Path, name: str, server: FakeOpenAIServer, systems: list[dict[str, Any]],
                      task: str, modes: Any = "all", judge: bool = True) -> Path:
    """`eval` (which scores and writes report.html), then `score` again and `report` again, as a
    user re-scoring and re-rendering would; returns the run directory."""
    run = workdir / name
    config = write_config(workdir, name, task=task, systems=systems, mode=modes, out=str(run), limit=1,
                          warmup=0, turn_timeout=300, device="cpu")
    judge_flags = ["--judge-model", "fake", "--judge-base-url", server.url] if judge else []
    ok(ivbench("eval", "-c", str(config), "--no-progress", "--metrics", METRICS, *judge_flags, cwd=workdir))
    assert (run / "report.html").is_file() and (run / "summary.csv").is_file()
    before = (run / "scores.jsonl").read_bytes()
    ok(ivbench("score", str(run), "--no-progress", "--metrics", METRICS, *judge_flags, cwd=workdir))
    after = (run / "scores.jsonl").read_bytes()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert after == before, f"a re-score from the caches changed scores.jsonl, first: {changed[:1]}"
    ok(ivbench("report", str(run), "-o", str(workdir / f"{name}.html"), cwd=workdir))
    ok(ivbench("show", str(run), cwd=workdir))
    return run


def untrained(system: str) -> bool:
    return system.startswith("groupformer")


def check_records(run: Path, labels: list[str], modes: list[str], n_turns: int) -> list[dict[str, Any]]:
    """Every (system, mode) has each turn once; trained systems answer every turn; a random-weight
    model may end a text reply at once, which is a recorded failure that says so."""
    records = jsonl(run / "records.jsonl")
    for label in labels:
        for mode in modes:
            unit = f"{label}@{mode}" if len(modes) > 1 else label
            mine = [r for r in records if r["system"] == unit]
            assert sorted(r["turn_index"] for r in mine) == list(range(n_turns)), (unit, mine)
            for r in mine:
                assert r["mode"] == mode
                if r["status"] == "ok":
                    speech_out = Mode(mode).speech_out
                    assert (r["reply_audio"] is not None) == speech_out, r
                    assert speech_out or r["reply_text"], r
                    assert (r["user_audio"] is not None) == Mode(mode).speech_in, r
                else:
                    assert untrained(label), (unit, r["error"])
                    assert r["error"]["type"] == "InvalidReply" and "no text" in r["error"]["message"], r
    return records


def check_scores(run: Path, records: list[dict[str, Any]], judge: bool = True) -> list[dict[str, Any]]:
    """Each metric scored each record (or dialogue) once, with a known status and, where a value is
    missing, a reason; the judge's scores come from the server."""
    scores = jsonl(run / "scores.jsonl")
    statuses = {"ok", "missing", "not_applicable", "failed"}
    for row in scores:
        assert row["status"] in statuses, row
        if row["status"] != "ok":
            assert row["reason"], row
            assert all(v is None for v in row["values"].values()), row
    turn_metrics = {"latency", "first_speech", "transcript", "asr_wer", "ref_wer", "dnsmos", "judge",
                    "judge:prompt=content-style"}
    for metric in turn_metrics:
        keys = sorted((r["system"], r["dialogue_id"], r["turn_index"]) for r in scores if r["metric"] == metric)
        assert keys == sorted((r["system"], r["dialogue_id"], r["turn_index"]) for r in records), metric
    by_key = {(r["metric"], r["system"], r["dialogue_id"], r["turn_index"]): r for r in scores}
    for rec in records:
        key = (rec["system"], rec["dialogue_id"], rec["turn_index"])
        judged = by_key[("judge", *key)]
        if rec["status"] != "ok":
            assert judged["status"] == "missing", judged
        elif judge:
            assert judged["status"] == "ok", judged
            assert by_key[("judge:prompt=content-style", *key)]["values"]["content"] == 4.0
        latency = by_key[("latency", *key)]
        if rec["status"] == "ok" and Mode(rec["mode"]).speech_out:
            assert latency["values"]["first_audio_ms"] is not None and latency["values"]["first_audio_ms"] > 0
        wer = by_key[("asr_wer", *key)]
        if rec["status"] == "ok" and Mode(rec["mode"]).speech_out and not untrained(rec["system"]):
            assert wer["status"] == "ok", wer
    return scores


def check_summary(run: Path, records: list[dict[str, Any]]) -> None:
    rows = summary(run)
    systems = {r["system"] for r in records}
    assert systems <= {r["system"] for r in rows}
    for row in rows:
        for stat in ("mean", "p50", "value"):
            assert row[stat] not in ("0", "0.0") or row["metric"] in ("asr_wer", "ref_wer", "first_speech"), row


def check_report(path: Path, systems: list[str]) -> None:
    html = path.read_text(encoding="utf-8")
    assert "<html" in html.lower()
    for system in systems:
        assert system in html, system


def test_every_builtin_system_has_a_matrix_entry():
    assert set(cheap_systems("http://x")) == set(BUILTINS["systems"])
    assert set(BUILTIN_TASKS) >= {"demo", "instructs2s-eval", "mt-bench", "vicuna"}


@pytest.fixture(scope="module")
def runs(server, workdir) -> Callable[[str], Path]:
    """name -> its run directory, made (eval, score, report) the first time a test asks for it."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            if name == "all-failed":  # a system that cannot load: its model path does not exist
                systems = [{"name": "cascade", "label": "broken", "llm_model": str(workdir / "no-such-model")}]
                made[name] = eval_score_report(workdir, name, server, systems, "demo", modes="s2s")
            elif name == "single":  # one system, a task without reference answers
                made[name] = eval_score_report(workdir, name, server, [{"name": "parrot"}], "vicuna", modes="t2s")
            else:  # a built-in task through every system in every mode
                systems = [{**entry, "label": label} for label, entry in cheap_systems(server.url).items()]
                made[name] = eval_score_report(workdir, name, server, systems, name)
        return made[name]

    return get


@pytest.mark.parametrize("task", BUILTIN_TASKS)
def test_task_through_every_system_and_mode(task: str, runs):
    from ivbench.registry import create, parse_spec

    run = runs(task)
    n_turns = len(create("tasks", parse_spec(task)).dialogues[0].turns)
    records = check_records(run, list(cheap_systems("")), ALL_MODES, n_turns)
    check_scores(run, records)
    check_summary(run, records)
    check_report(run / "report.html", sorted({r["system"] for r in records}))


def test_a_run_where_every_turn_fails(runs, workdir):
    """Every turn is a recorded failure, every score is missing with the reason, and the summary and
    report are still written."""
    run = runs("all-failed")
    records = jsonl(run / "records.jsonl")
    assert records and all(r["status"] == "failed" for r in records)
    assert all(str(workdir / "no-such-model") in r["error"]["message"] for r in records)
    scores = check_scores(run, records)
    assert all(row["status"] in ("missing", "not_applicable") for row in scores), scores
    check_report(run / "report.html", ["broken"])


def test_one_system_without_references(runs):
    """vicuna gives no reference answers: ref_wer is not applicable on every turn, never a number."""
    run = runs("single")
    records = check_records(run, ["parrot"], ["t2s"], 1)
    scores = check_scores(run, records)
    ref = [row for row in scores if row["metric"] == "ref_wer"]
    assert ref and all(row["status"] == "not_applicable" for row in ref)
    check_report(run / "report.html", ["parrot"])


def test_one_report_over_several_runs(runs, workdir):
    paths = [runs(name) for name in ("vicuna", "all-failed", "single")]
    # The same run copied under another name: its one system is in two runs.
    again = workdir / "single-again"
    if not again.exists():
        shutil.copytree(paths[2], again)
    paths.append(again)
    for fmt in ("html", "md", "csv"):
        out = workdir / f"all.{fmt}"
        ok(ivbench("report", *map(str, paths), "-o", str(out), "--format", fmt, cwd=workdir))
        assert out.stat().st_size > 0
    html = (workdir / "all.html").read_text(encoding="utf-8")
    # parrot ran in two of them: each is told apart by its run's name; a system
    # in one run only keeps its own name.
    assert "parrot [single]" in html and "parrot [single-again]" in html
    assert "parrot@t2s" in html and "parrot@t2s [" not in html
    assert "broken" in html
