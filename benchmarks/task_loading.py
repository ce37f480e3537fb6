"""What checking task files costs, and what the limits stop (ivbench.tasks.loader, ivbench.yaml_file).

Prints, for each case, the best wall-clock time of --repeats loads and the peak memory that
Python allocated (tracemalloc) during one load:

- the built-in tasks (JSONL dialogues behind a small YAML header);
- a synthetic task of N dialogues of two turns, as JSONL and as inline YAML, and the inline
  YAML read by plain `yaml.safe_load` (what the reader cost before it kept lines and bounds);
- a 9-level "billion laughs" YAML (under 500 bytes, 9**9 strings once expanded) in a task's
  metadata, which the alias limit refuses.

    python benchmarks/task_loading.py [--dialogues 5000] [--repeats 3]

The machine's load average is printed before and after: other work makes the times noisy.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any
from collections.abc import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivbench.errors import TaskFileError  # noqa: E402
from ivbench.tasks.loader import load_task_file  # noqa: E402
from ivbench.tasks.builtin import builtin_task_files  # noqa: E402

LAUGHS = "".join(f"    {c}: &{c} [{', '.join([f'*{p}'] * 9 if p else ['lol'] * 9)}]\n"
                 for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True))


def measure(load: Callable[[], Any], repeats: int) -> tuple[float, float, str]:
    """(best seconds, peak MiB, outcome) of `load`."""
    best = float("inf")
    outcome = "loaded"
    for _ in range(repeats):
        started = time.perf_counter()
        try:
            load()
        except TaskFileError as exc:
            outcome = "refused: " + str(exc).split(": ", 2)[-1][:50]
        best = min(best, time.perf_counter() - started)
    tracemalloc.start()
    with contextlib.suppress(TaskFileError):
        load()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return best, peak, outcome


def synthetic(folder: Path, n: int) -> tuple[Path, Path]:
    dialogues = [{"id": f"d{i}", "category": f"c{i % 7}", "metadata": {"n": i},
                  "turns": [{"text": f"Question number {i}, please answer it.", "reference": "An answer."},
                            "And a follow-up question?"]} for i in range(n)]
    jsonl = folder / "big.jsonl"
    jsonl.write_text("".join(json.dumps(d) + "\n" for d in dialogues), encoding="utf-8")
    inline = folder / "big.yaml"
    inline.write_text("name: big\ndialogues:\n" + "".join(f"- {json.dumps(d)}\n" for d in dialogues),
                      encoding="utf-8")
    return jsonl, inline


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import yaml

    print(f"load average before: {os.getloadavg()}")
    rows = []
    for name, (path, _) in sorted(builtin_task_files().items()):
        rows.append((f"built-in {name}", path.stat().st_size, *measure(lambda p=path: load_task_file(p), args.repeats)))
    with tempfile.TemporaryDirectory() as tmp:
        jsonl, inline = synthetic(Path(tmp), args.dialogues)
        rows.append((f"{args.dialogues} dialogues, JSONL", jsonl.stat().st_size,
                     *measure(lambda: load_task_file(jsonl), args.repeats)))
        rows.append((f"{args.dialogues} dialogues, inline YAML", inline.stat().st_size,
                     *measure(lambda: load_task_file(inline), args.repeats)))
        rows.append(("  same YAML, yaml.safe_load only", inline.stat().st_size,
                     *measure(lambda: yaml.safe_load(inline.read_text(encoding="utf-8")), args.repeats)))
        laughs = Path(tmp) / "laughs.yaml"
        laughs.write_text("name: laughs\ndialogues:\n- id: a\n  turns: [hi]\n  metadata:\n" + LAUGHS)
        rows.append(("billion laughs in metadata", laughs.stat().st_size,
                     *measure(lambda: load_task_file(laughs), args.repeats)))
    print(f"\n{'case':<40} {'bytes':>10} {'best s':>8} {'peak MiB':>9}  outcome")
    for case, size, seconds, peak, outcome in rows:
        print(f"{case:<40} {size:>10,} {seconds:>8.3f} {peak:>9.1f}  {outcome}")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
