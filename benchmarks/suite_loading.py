"""Loading a suite's dataset: time and peak memory for a 10k-row parquet with audio.

Writes a VoiceBench-layout subset (``commoneval/test-00000-of-00001.parquet``: ``audio`` as the
`datasets` Audio feature with WAV bytes, ``prompt``; row groups of 100 rows, as `datasets`
writes audio) and measures, each in a fresh process (so each peak RSS is its own):

1. ``task``: building the task (`voicebench:subset=commoneval,path=…`): the text columns only;
2. ``limit 2``: taking the first two dialogues, as ``--limit 2`` does (their audio decoded);
3. ``all rows, cold``: taking every dialogue, as a full run does: each row's audio decoded to a
   16 kHz WAV in the cache folder, one row group in memory at a time;
4. ``all rows, warm``: the same again, the WAV files already in the cache;
5. ``pandas.read_parquet``: for contrast, the whole file in memory at once.

Each line gives the process's RSS after its imports (before the step), its peak RSS (VmHWM)
and the peak of pyarrow's memory pool (where parquet row groups are decoded).

    python benchmarks/suite_loading.py [--rows 10000] [--seconds 2.0] [--rate 24000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GROUP = 100


def write_dataset(folder: Path, rows: int, seconds: float, rate: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile
    from datasets import Audio, Features, Value

    features = Features({"audio": Audio(), "prompt": Value("string")})
    schema = features.arrow_schema  # carries the "huggingface" metadata `datasets` reads back
    path = folder / "commoneval" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    with pq.ParquetWriter(str(path), schema) as writer:
        for start in range(0, rows, GROUP):
            audio, prompts = [], []
            for i in range(start, min(rows, start + GROUP)):
                samples = (0.1 * np.sin(2 * np.pi * (200 + i % 300) * t) + 0.01 * rng.standard_normal(t.size))
                buf = io.BytesIO()
                soundfile.write(buf, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
                audio.append({"bytes": buf.getvalue(), "path": None})
                prompts.append(f"Question number {i}: what is a good way to spend a rainy afternoon?")
            writer.write_table(pa.table({"audio": audio, "prompt": prompts}, schema=schema))
    return folder


STEP = r'''
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import pyarrow, pandas, ivbench.registry, ivbench.suites.voicebench  # imports out of the step's memory
def rss(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))
before = rss("VmRSS:")
step, data = sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
if step == "pandas":
    import pandas as pd
    frame = pd.read_parquet(data + "/commoneval/test-00000-of-00001.parquet")
    n = len(frame)
else:
    from ivbench import registry
    task = registry.create("tasks", registry.parse_spec(f"voicebench:subset=commoneval,path={data}"))
    t_task = time.perf_counter() - t0
    if step == "limit":
        n = len(task.dialogues[:2])
    elif step == "all":
        n = len(list(task.dialogues))
    else:
        n = len(task.dialogues)
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": n, "before_mib": before,
                  "peak_rss_mib": rss("VmHWM:"), "arrow_peak_mib": pyarrow.default_memory_pool().max_memory() / 2**20}))
'''


def measure(step: str, data: Path, cache: Path) -> dict[str, float]:
    env = {**os.environ, "IVBENCH_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", STEP, str(ROOT), step, str(data)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per row")
    parser.add_argument("--rate", type=int, default=24000, help="the audio's sample rate (resampled to 16 kHz)")
    parser.add_argument("--keep", type=Path, help="build the dataset here and keep it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ivbench-suite-bench-"))
    data = args.keep or work / "voicebench"
    try:
        t0 = time.perf_counter()
        if not (data / "commoneval").is_dir():
            write_dataset(data, args.rows, args.seconds, args.rate)
        built = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (data / "commoneval").glob("*.parquet")) / 2**20
        print(f"dataset: {args.rows} rows, {args.seconds:g} s of {args.rate} Hz audio each, parquet {size:.0f} MiB "
              f"(written in {built:.1f} s)")
        cache = work / "cache"
        print(f"{'step':<26}{'rows':>8}{'seconds':>10}{'RSS before':>12}{'peak RSS':>10}{'arrow peak':>12}  (MiB)")
        for label, step in (("task (text columns)", "task"), ("limit 2", "limit"), ("all rows, cold", "all"),
                            ("all rows, warm", "all"), ("pandas.read_parquet", "pandas")):
            r = measure(step, data, cache)
            print(f"{label:<26}{r['rows']:>8}{r['seconds']:>10.2f}{r['before_mib']:>12.0f}{r['peak_rss_mib']:>10.0f}"
                  f"{r['arrow_peak_mib']:>12.0f}")
        wavs = list((cache / "suites").rglob("*.wav"))
        print(f"cache: {len(wavs)} WAV files, {sum(w.stat().st_size for w in wavs) / 2**20:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
