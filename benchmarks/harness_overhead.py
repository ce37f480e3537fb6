"""Harness overhead: how exactly the runner's clock measures a known first-packet delay, what
the harness itself costs per turn, and how long `ivbench --help` takes; with the system in a
worker process (the default) and in ivbench's own process (--in-process).

    python benchmarks/harness_overhead.py [--turns 200]

For each injected delay the synthetic system stamps, with the same perf_counter_ns clock,
the moment respond() started running and the moment it yields its first packet, and reports
the interval in a StageMark (so it reaches the record from a worker process too); the
measurement error is the runner's first-packet latency minus that self-measured interval
(the harness's own contribution), and also minus the nominal delay (adds sleep overshoot).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ivbench.config import EvalConfig, SystemConfig
from ivbench.registry import Spec, parse_spec
from ivbench.runner import run_eval
from ivbench.systems import Session, System
from ivbench.types import AudioChunk, Mode, StageMark, TextDelta

AUDIO = np.zeros(1600, dtype=np.float32)


class DelaySession(Session):
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def respond(self, turn):
        start = time.perf_counter_ns()
        time.sleep(self.delay_s)
        self_ms = (time.perf_counter_ns() - start) / 1e6
        yield AudioChunk(AUDIO, 16000)
        yield TextDelta("ok")
        yield StageMark("self", {"ms": self_ms})  # after the packet: outside what it measures


class InjectedDelay(System):
    modes = (Mode.T2S,)

    def __init__(self, delay_ms: float = 0.0) -> None:
        super().__init__(delay_ms=delay_ms)
        self.delay_s = delay_ms / 1000

    def new_session(self) -> DelaySession:
        return DelaySession(self.delay_s)


def _task(folder: Path, turns: int) -> Path:
    lines = [json.dumps({"id": f"d{i:04d}", "turns": ["hello"]}) for i in range(turns)]
    (folder / "t.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "t.jsonl"


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _run(task: Path, tmp: Path, delay: int, turns: int, in_process: bool) -> tuple[list[float], list[float], float]:
    """(error vs self-measured, error vs nominal, wall-clock s minus the turns' own time)."""
    tag = "in" if in_process else "worker"
    config = EvalConfig(task=parse_spec(str(task)), limit=turns, warmup=3, in_process=in_process,
                        systems=[SystemConfig(Spec(f"{Path(__file__).resolve()}:InjectedDelay",
                                                   (("delay_ms", delay),)), f"delay{delay}")],
                        out=tmp / f"run{delay}-{turns}-{tag}", cache_dir=tmp / "cache")
    start = time.perf_counter()
    result = run_eval(config, progress=False)
    wall = time.perf_counter() - start
    vs_self = [r.first_audio_ms - r.stage_data["self"]["ms"] for r in result.records]
    vs_nominal = [r.first_audio_ms - delay for r in result.records]
    system_time = sum(r.end_ms for r in result.records) / 1000 + 3 * delay / 1000  # + warm-up turns
    return vs_self, vs_nominal, wall - system_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        task = _task(Path(tmp), args.turns)
        for in_process in (False, True):
            for delay in (0, 10, 50, 200):
                turns = args.turns if delay <= 50 else max(20, args.turns // 4)
                vs_self, vs_nominal, harness_s = _run(task, Path(tmp), delay, turns, in_process)
                # The marginal cost of a turn: the same run with half the turns, subtracted (this
                # leaves out what a run pays once: starting the worker, loading, the manifest).
                _, _, half_s = _run(task, Path(tmp), delay, turns // 2, in_process)
                rows.append(("in-process" if in_process else "worker", delay, len(vs_self), _pct(vs_self, 50),
                             _pct(vs_self, 99), max(vs_self), _pct(vs_nominal, 50), _pct(vs_nominal, 99),
                             harness_s / len(vs_self) * 1000, (harness_s - half_s) / (turns - turns // 2) * 1000))
    print(f"runner clock on {args.turns} turns per delay (ms; error = measured − true)")
    print(f"{'where':>10} {'delay':>6} {'turns':>6} {'err p50':>8} {'err p99':>8} {'err max':>8} "
          f"{'vs nominal p50':>15} {'vs nominal p99':>15} {'harness ms/turn':>16} {'marginal ms/turn':>17}")
    for row in rows:
        print(f"{row[0]:>10} {row[1]:>6} {row[2]:>6} {row[3]:>8.3f} {row[4]:>8.3f} {row[5]:>8.3f} "
              f"{row[6]:>15.3f} {row[7]:>15.3f} {row[8]:>16.2f} {row[9]:>17.2f}")
    print("harness ms/turn = (wall time of run_eval − the turns' own end-of-reply time) / turns; "
          "it includes task loading, manifest, provenance, starting the worker, writing WAVs and fsynced records. "
          "marginal ms/turn: the same, for the second half of the turns only.")

    times = []
    for _ in range(10):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ivbench.cli", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    print(f"\n`ivbench --help`: median {statistics.median(times) * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms over 10 runs (python start-up included)")


if __name__ == "__main__":
    main()
