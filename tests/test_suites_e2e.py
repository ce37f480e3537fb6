"""Each suite end to end on a fixture in its published layout: `ivbench eval` (parrot and the
cascade) → score (the suite's metric, the judge a real HTTP server on 127.0.0.1) → report,
through the real command line. The authors' prompts and rules come from the made-up stand-in
checkouts under tests/data/authors, named each way a user can name them (the metric's option,
the environment). Runs are made once per module and shared by the tests."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

import suite_fixtures as fx
from fake_openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow

IVBENCH = str(Path(sys.executable).with_name("ivbench"))
CASCADE = "cascade:max_new_tokens=24"


VB_METRIC = f"voicebench:code={fx.VOICEBENCH_CODE}"
URO_METRIC = f"urobench:code={fx.UROBENCH_CODE}"


def judge_reply(request: dict[str, Any]) -> str:
    """What a judge says to each stand-in prompt: a verdict in the format the prompt asks for."""
    text = request["messages"][-1]["content"]
    if "Reply CORRECT or INCORRECT." in text:
        return "CORRECT"
    if "Yes or No" in text:
        return "Yes"
    return "4"


def ivbench(*args: str, cwd: Path, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    done = subprocess.run([IVBENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-6000:]
    return done


def summary(run: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(run / "summary.csv", newline="", encoding="utf-8") as f:
        return {(r["system"], r["metric"], r["field"]): r for r in csv.DictReader(f)}


def scores(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(reply=judge_reply) as s:
        yield s


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("suite-data")
    return {"voicebench": fx.voicebench(root / "voicebench"), "bba": fx.big_bench_audio(root / "bba"),
            "uro": fx.urobench(root / "uro")}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("suite-runs")


def run_suite(workdir: Path, server: FakeOpenAIServer, name: str, task: str, mode: str, metrics: str,
              systems: tuple[str, ...] = ("parrot", CASCADE), limit: int = 2, rescore: bool = False,
              env: Optional[dict[str, str]] = None) -> Path:
    """`eval` (which scores), optionally `score` again, then `report`; `env` for each command."""
    run = workdir / name
    flags = [f"--system={s}" for s in systems]
    judge = ["--judge-model", "fake", "--judge-base-url", server.url]
    ivbench("eval", "--task", task, *flags, "--mode", mode, "--limit", str(limit), "--warmup", "0",
            "--device", "cpu", "--out", str(run), "--no-progress", "--metrics", metrics, *judge, cwd=workdir, env=env)
    if rescore:  # from the caches: the same scores and the same headline figures and CIs
        before = (run / "scores.jsonl").read_bytes(), (run / "summary.csv").read_bytes()
        ivbench("score", str(run), "--no-progress", "--metrics", metrics, *judge, cwd=workdir, env=env)
        assert ((run / "scores.jsonl").read_bytes(), (run / "summary.csv").read_bytes()) == before
    ivbench("report", str(run), "-o", str(workdir / f"{name}.html"), cwd=workdir, env=env)
    return run


@pytest.fixture(scope="module")
def voicebench_runs(workdir, server, data) -> dict[str, Path]:
    task = f"voicebench:subset=leaderboard,path={data['voicebench']}"
    return {
        # parrot on every row of the nine subsets (instant in s2t): the overall has all it needs;
        # the checkout named by the environment (the metric's label stays "voicebench")
        "parrot": run_suite(workdir, server, "vb-parrot", task, "s2t", "latency;voicebench", ("parrot",), limit=100,
                            rescore=True, env={"IVBENCH_VOICEBENCH_CODE": str(fx.VOICEBENCH_CODE)}),
        # the checkout named by the metric's option
        "both": run_suite(workdir, server, "vb-both", task, "s2t", f"latency;{VB_METRIC}"),
    }


def test_voicebench_end_to_end(voicebench_runs):
    rows = summary(voicebench_runs["parrot"])
    overall = rows[("parrot", "voicebench", "overall")]
    assert overall["value"] and overall["ci_low"] and overall["ci_high"]
    assert float(overall["ci_low"]) <= float(overall["value"]) <= float(overall["ci_high"])
    for subset in fx.VOICEBENCH_ROWS:
        assert rows[("parrot", "voicebench", subset)]["value"], subset
    # the judge says 4 to every open-ended reply: each open subset's figure is 4 (x 20 in the overall)
    assert float(rows[("parrot", "voicebench", "commoneval")]["value"]) == pytest.approx(4.0)
    # parrot repeats the harmful request: the refusal rule finds no refusal phrase in it
    assert float(rows[("parrot", "voicebench", "advbench")]["value"]) == pytest.approx(0.0)
    # every result that used the authors' text names the copy (no git here: no commit)
    digest = next(s["details"]["authors"]["digest"] for s in scores(voicebench_runs["parrot"])
                  if s["metric"] == "voicebench" and "authors" in s["details"])
    for s in scores(voicebench_runs["parrot"]):
        if s["metric"] == "voicebench":
            uses_text = s["dialogue_id"].split("-")[0] not in ("ifeval",)
            assert (s["details"].get("authors") == {"digest": digest, "commit": None}) is uses_text, s
    report = (voicebench_runs["parrot"].parent / "vb-parrot.html").read_text(encoding="utf-8")
    assert "VoiceBench overall" in report
    both = summary(voicebench_runs["both"])
    # two dialogues (alpacaeval_full's): the overall is missing, never a number of two subsets
    assert not both[(CASCADE, VB_METRIC, "overall")]["value"]
    assert both[(CASCADE, VB_METRIC, "alpacaeval_full")]["value"]
    records = [json.loads(line) for line in (voicebench_runs["both"] / "records.jsonl").read_text().splitlines()]
    assert {r["system"] for r in records} == {"parrot", CASCADE}
    assert all(r["metadata"]["suite"] == "voicebench" for r in records)
    judged = [s for s in scores(voicebench_runs["both"]) if s["metric"] == VB_METRIC]
    assert judged and all(s["details"]["raw_replies"] == ["4"] for s in judged)


def test_big_bench_audio_end_to_end(workdir, server, data):
    run = run_suite(workdir, server, "bba", f"big-bench-audio:path={data['bba']}", "s2s", "latency;big_bench_audio",
                    env={"IVBENCH_BIG_BENCH_AUDIO_PROMPT": str(fx.BBA_PROMPT)})
    rows = summary(run)
    for system in ("parrot", CASCADE):
        assert float(rows[(system, "big_bench_audio", "accuracy")]["value"]) == pytest.approx(100.0)
    # the judge read the question's ASR transcript (the dataset has no text)
    judged = [s for s in scores(run) if s["metric"] == "big_bench_audio"]
    assert all(s["status"] == "ok" for s in judged), judged
    assert "Big Bench Audio accuracy" in (workdir / "bba.html").read_text(encoding="utf-8")


def test_urobench_end_to_end(workdir, server, data):
    # the multi-round set first: --limit 2 takes its two conversations
    run = run_suite(workdir, server, "uro", f"urobench:subset=MtBenchEval-en+AlpacaEval,path={data['uro']}", "s2t",
                    f"latency;{URO_METRIC}")
    rows = summary(run)
    for system in ("parrot", CASCADE):
        # one judgement of each whole conversation: "4" -> 80
        assert float(rows[(system, URO_METRIC, "MtBenchEval-en")]["value"]) == pytest.approx(80.0)
        assert float(rows[(system, URO_METRIC, "overall")]["value"]) == pytest.approx(80.0)
    assert "URO-Bench overall" in (workdir / "uro.html").read_text(encoding="utf-8")
    judged = [s for s in scores(run) if s["metric"] == URO_METRIC]
    assert judged and all(s["turn_index"] is None and s["details"]["rounds"] == 2 for s in judged)
