"""Scale-out: throughput with 1 and 2 Ray workers on this machine (docs/architecture.md, "Workers").

    python benchmarks/scale_out.py [--dialogues 10] [--cascade-dialogues 4] [--score-dialogues 30]
                                   [--skip-cascade] [--skip-scoring] [--skip-generation]

Generation: dialogues per minute of `ivbench eval --workers N` (N = 1, 2) with parrot and with
the cascade on the demo task, in one local Ray cluster started once; each run starts its actors
and loads its system, so "wall" includes that and "steady" leaves out the slowest worker's load.
The user turns' speech is cached by an untimed first run, as it is for any repeated evaluation.
Scoring: audio minutes scored per minute of `ivbench score --workers N` with CPU-bound metrics
(Whisper transcripts and WER, DNSMOS; see SCORING_SETS), cache off, over parrot's spoken replies to the first
mt-bench questions (generated untimed, t2s); and whether its scores.jsonl is byte-identical to a
local score (one process, every core; a worker is one CPU).

Timings on a shared machine are not comparable under load: the script prints `uptime` before and
after, and the scaling goal (2 workers ≥ 1.6× one on CPU-bound scoring) is to be read at load ≤ 1.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from ivbench.config import EvalConfig, system_config
from ivbench.registry import parse_spec
from ivbench.runner import run_eval

# Each set scored locally, on 1 and on 2 workers. onnxruntime left to its default pins one thread per
# core of the machine, whatever cores its process was given; DNSMOS sizes its threads by the cores
# its process may use (threads=0), and `threads=1` (speed only, not part of the identity) checks
# that nothing else in it oversubscribes a worker's core.
SCORING_SETS = (("asr_wer,dnsmos", "defaults"), ("asr_wer,dnsmos:threads=1", "DNSMOS on one thread per process"))


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _generate(tmp: Path, system: str, dialogues: int, workers: Optional[int], tag: str, task: str = "demo",
              modes: Optional[list[str]] = None) -> dict[str, Any]:
    config = EvalConfig(task=parse_spec(task), systems=[system_config(system)], limit=dialogues, warmup=1,
                        workers=workers, out=tmp / f"{tag}", cache_dir=tmp / "cache", metrics=[], modes=modes or [])
    start = time.perf_counter()
    result = run_eval(config, progress=False, echo=lambda line: None)
    wall = time.perf_counter() - start
    session = json.loads((result.run_dir / "manifest.json").read_text())["sessions"][-1]
    load = max((w.get("load_s", 0.0) for w in session.get("workers", {}).values()), default=0.0)
    failed = sum(1 for r in result.records if not r.ok)
    return {"wall": wall, "load": load, "dialogues": dialogues, "turns": len(result.records), "failed": failed,
            "run": result.run_dir}


def _audio_minutes(run: Path) -> float:
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines() if line.strip()]
    return sum(r.get("reply_duration_s") or 0.0 for r in records) / 60


def _score(run: Path, tmp: Path, metrics: str, workers: Optional[int]) -> tuple[float, bytes]:
    """Seconds to score `run` (a copy of it) with `metrics`, and the scores.jsonl it wrote."""
    from ivbench.provenance import resolve_device
    from ivbench.scoring import ScoreConfig, score_run

    copy = tmp / f"score-{workers or 'local'}"
    subprocess.run(["rm", "-rf", str(copy)], check=True)
    subprocess.run(["cp", "-r", str(run), str(copy)], check=True)
    config = ScoreConfig(metrics=[parse_spec(m) for m in metrics.split(",")], device=resolve_device("cpu"),
                         cache_dir=tmp / "score-cache", use_cache=False, workers=workers)
    start = time.perf_counter()
    score_run(copy, config, progress=False, echo=lambda line: None)
    return time.perf_counter() - start, (copy / "scores.jsonl").read_bytes()


def _driver_ceiling(tmp: Path, turns: int = 200) -> tuple[float, float]:
    """What the single writer costs per turn (reply WAV of 8 s at 24 kHz, user WAV of 3 s at
    16 kHz, the record appended and fsynced) and per cache entry (one SQLite commit each), ms."""
    import numpy as np

    from ivbench.audio import write_wav
    from ivbench.cache import SqliteCache
    from ivbench.store import RunStore
    from ivbench.types import Audio, TurnRecord

    store = RunStore(tmp / "ceiling")
    store.write_manifest({"config": {}})
    reply = Audio((0.1 * np.random.default_rng(0).standard_normal(8 * 24000)).astype(np.float32), 24000)
    user = Audio((0.1 * np.random.default_rng(1).standard_normal(3 * 16000)).astype(np.float32), 16000)
    start = time.perf_counter()
    for i in range(turns):
        write_wav(store.audio_path("user", f"d{i}", 0), user)
        write_wav(store.audio_path("s", f"d{i}", 0), reply)
        store.append(TurnRecord(system="s", task="t", dialogue_id=f"d{i}", turn_index=0, n_turns=1, mode="s2s",
                                attempt=1, status="ok", user_text="hello " * 20, user_audio="a", reference=None,
                                reply_text="reply " * 60, reply_audio="b", reply_sample_rate=24000,
                                reply_duration_s=8.0, first_audio_ms=1.0, first_text_ms=1.0, end_ms=1.0, rtf=0.1,
                                events=[["audio", 1.0, 480]] * 40, stages={}))
    per_turn = (time.perf_counter() - start) / turns * 1000
    cache = SqliteCache(tmp / "ceiling.sqlite")
    blob = b"x" * 400  # a score row's size
    start = time.perf_counter()
    for i in range(turns):
        cache.put(f"key{i}", blob)
    per_put = (time.perf_counter() - start) / turns * 1000
    cache.close()
    return per_turn, per_put


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogues", type=int, default=10)
    parser.add_argument("--cascade-dialogues", type=int, default=4)
    parser.add_argument("--score-dialogues", type=int, default=30)
    parser.add_argument("--skip-cascade", action="store_true")
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    args = parser.parse_args()
    import ray

    print(f"before: {_uptime()}   ({os.cpu_count()} cores)")
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False,
             logging_level=logging.WARNING)
    systems = [("parrot", args.dialogues)] + ([] if args.skip_cascade else [("cascade", args.cascade_dialogues)])
    rows = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for system, dialogues in [] if args.skip_generation else systems:
            _generate(tmp, system, dialogues, None, f"{system}-warm")  # caches the user turns' speech
            base: Optional[float] = None
            for workers in (1, 2):
                got = _generate(tmp, system, dialogues, workers, f"{system}-{workers}")
                per_min = dialogues / got["wall"] * 60
                steady = dialogues / max(1e-9, got["wall"] - got["load"]) * 60
                base = base or per_min
                rows.append((system, workers, dialogues, got["turns"], got["failed"], got["wall"], got["load"],
                             per_min, steady, per_min / base))
        print("\ngeneration (demo task; user speech cached)")
        print(f"{'system':>8} {'workers':>7} {'dialogues':>9} {'turns':>6} {'failed':>6} {'wall s':>7} "
              f"{'load s':>7} {'dialogues/min':>13} {'steady/min':>10} {'speed-up':>8}")
        for row in rows:
            print(f"{row[0]:>8} {row[1]:>7} {row[2]:>9} {row[3]:>6} {row[4]:>6} {row[5]:>7.1f} {row[6]:>7.1f} "
                  f"{row[7]:>13.2f} {row[8]:>10.2f} {row[9]:>7.2f}×")
        if not args.skip_scoring:
            parrot_run = _generate(tmp, "parrot", args.score_dialogues, None, "corpus", "mt-bench", ["t2s"])["run"]
            minutes = _audio_minutes(parrot_run)
            print(f"\nscoring (cache off) of {minutes:.2f} audio minutes (parrot's replies to {args.score_dialogues} "
                  "mt-bench dialogues)")
            print(f"{'metrics':>26} {'workers':>7} {'wall s':>7} {'audio-min/min':>13} {'vs 1 worker':>11} "
                  f"{'scores.jsonl':>14}")
            for metrics, _ in SCORING_SETS:
                local_s, local_bytes = _score(parrot_run, tmp, metrics, None)
                print(f"{metrics:>26} {'local':>7} {local_s:>7.1f} {minutes / local_s * 60:>13.2f}")
                base_s: Optional[float] = None
                for workers in (1, 2):
                    seconds, scores = _score(parrot_run, tmp, metrics, workers)
                    base_s = base_s or seconds
                    same = "identical" if scores == local_bytes else "DIFFERENT"
                    print(f"{metrics:>26} {workers:>7} {seconds:>7.1f} {minutes / seconds * 60:>13.2f} "
                          f"{base_s / seconds:>10.2f}× {same:>14}")
            print("(local: one process, every core; a worker: one CPU, pinned to one core)")
        per_turn, per_put = _driver_ceiling(tmp)
        print(f"\nthe driver, the single writer: {per_turn:.2f} ms per turn written (two WAVs, one fsynced record), "
              f"{per_put:.2f} ms per cache entry (one SQLite commit each)")
    ray.shutdown()
    print(f"\nafter: {_uptime()}")


if __name__ == "__main__":
    main()
