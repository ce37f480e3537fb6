"""Harness overhead: how exactly the runner's clock measures a known first-packet delay, what
the harness itself costs per turn, and how long `ivbench --help` takes.

    python benchmarks/harness_overhead.py [--turns 200]

For each injected delay the synthetic system stamps, with the same perf_counter_ns clock,
the moment respond() started running and the moment it yields its first packet; the
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
from ivbench.types import AudioChunk, Mode, TextDelta

SELF_MEASURED: dict[tuple[str, int], float] = {}  # (dialogue id, turn) -> ms, stamped by the system
AUDIO = np.zeros(1600, dtype=np.float32)


class DelaySession(Session):
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def respond(self, turn):
        start = time.perf_counter_ns()
        time.sleep(self.delay_s)
        SELF_MEASURED[(turn.dialogue_id, turn.turn_index)] = (time.perf_counter_ns() - start) / 1e6
        yield AudioChunk(AUDIO, 16000)
        yield TextDelta("ok")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        task = _task(Path(tmp), args.turns)
        for delay in (0, 10, 50, 200):
            turns = args.turns if delay <= 50 else max(20, args.turns // 4)
            SELF_MEASURED.clear()
            config = EvalConfig(task=parse_spec(str(task)), limit=turns, warmup=3,
                                systems=[SystemConfig(Spec("__main__:InjectedDelay", (("delay_ms", delay),)),
                                                      f"delay{delay}")],
                                out=Path(tmp) / f"run{delay}", cache_dir=Path(tmp) / "cache")
            start = time.perf_counter()
            result = run_eval(config, progress=False)
            wall = time.perf_counter() - start
            measured = {(r.dialogue_id, r.turn_index): r.first_audio_ms for r in result.records}
            vs_self = [measured[k] - SELF_MEASURED[k] for k in measured]
            vs_nominal = [measured[k] - delay for k in measured]
            system_time = sum(r.end_ms for r in result.records) / 1000 + 3 * delay / 1000  # + warm-up turns
            rows.append((delay, len(measured), _pct(vs_self, 50), _pct(vs_self, 99), max(vs_self),
                         _pct(vs_nominal, 50), _pct(vs_nominal, 99),
                         (wall - system_time) / len(measured) * 1000))
    print(f"runner clock on {args.turns} turns per delay (ms; error = measured − true)")
    print(f"{'delay':>6} {'turns':>6} {'err p50':>8} {'err p99':>8} {'err max':>8} "
          f"{'vs nominal p50':>15} {'vs nominal p99':>15} {'harness ms/turn':>16}")
    for row in rows:
        print(f"{row[0]:>6} {row[1]:>6} {row[2]:>8.3f} {row[3]:>8.3f} {row[4]:>8.3f} "
              f"{row[5]:>15.3f} {row[6]:>15.3f} {row[7]:>16.2f}")
    print("harness ms/turn = (wall time of run_eval − the turns' own end-of-reply time) / turns; "
          "it includes task loading, manifest, provenance, writing WAVs and fsynced records.")

    times = []
    for _ in range(10):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ivbench.cli", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    print(f"\n`ivbench --help`: median {statistics.median(times) * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms over 10 runs (python start-up included)")


if __name__ == "__main__":
    main()
