"""scores.jsonl: the on-disk schema of a score row, next to the record schema (run_store.py).

One line per (metric, system, dialogue, turn) — `turn_index` null for dialogue-level metrics —
holding the metric's `MetricResult` (values, status, reason, details). The file is rewritten
whole in a fixed order, so scoring the same run from the same caches gives the same bytes.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from collections.abc import Iterable

from ..errors import RunDirError
from ..types import MetricResult
from . import formats

SCORES = "scores.jsonl"
# The tables written from scores.jsonl (ivbench.scoring.summary).
SUMMARY = "summary.csv"
PAIRWISE = "pairwise.csv"
CROSSMODAL = "crossmodal.csv"


@dataclass
class ScoreRow:
    metric: str  # the metric's label: its spec, e.g. "judge:prompt=content-style"
    system: str
    dialogue_id: str
    turn_index: Optional[int]  # None: a dialogue-level metric
    mode: str
    result: MetricResult

    def to_json(self) -> dict[str, Any]:
        return formats.stamp({"metric": self.metric, "system": self.system, "dialogue_id": self.dialogue_id,
                              "turn_index": self.turn_index, "mode": self.mode, **self.result.to_json()},
                             formats.SCORES_FORMAT)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = SCORES) -> ScoreRow:
        data = formats.check(data, formats.SCORES_FORMAT, where)
        return cls(data["metric"], data["system"], data["dialogue_id"], data.get("turn_index"),
                   data.get("mode", ""), MetricResult.from_json(data))

    @property
    def sort_key(self) -> tuple[str, str, str, int]:
        return (self.metric, self.system, self.dialogue_id, -1 if self.turn_index is None else self.turn_index)


def read_scores(run_dir: Path) -> list[ScoreRow]:
    """The run's score rows; [] when it was never scored."""
    path = Path(run_dir) / SCORES
    if not path.exists():
        return []
    rows = []
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                data = json.loads(line.decode("utf-8"))
                if not isinstance(data, dict):
                    raise TypeError(f"a JSON {type(data).__name__}, not an object")
                if not isinstance(data.get("values"), dict):
                    raise TypeError(f"'values' is {type(data.get('values')).__name__}, not an object")
                rows.append(ScoreRow.from_json(data, where))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                raise RunDirError(f"{where}: corrupt score line ({exc}); the file was edited or damaged: "
                                  f"`ivbench score {run_dir}` rewrites it") from None
    return rows


def write_scores(run_dir: Path, rows: Iterable[ScoreRow]) -> None:
    """Replace scores.jsonl with `rows` in their fixed order (atomically: never half a file)."""
    tmp = Path(run_dir) / (SCORES + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in sorted(rows, key=lambda r: r.sort_key):
            f.write(json.dumps(row.to_json(), sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(Path(run_dir) / SCORES)


def discard_scores(run_dir: Path) -> list[str]:
    """Remove what scoring wrote (scores.jsonl, its tables, judge.json) and return the names removed.

    For a run whose records are about to change (a resume adding dialogues, --retry-failed): scores
    of other records would be shown as this run's, with nothing to say they are not. Scoring again
    rewrites them, from the caches for the records that were scored before."""
    from .judge_usage import JUDGE

    removed = []
    for name in (SCORES, SUMMARY, PAIRWISE, CROSSMODAL, JUDGE):
        path = Path(run_dir) / name
        if path.is_file():
            path.unlink()
            removed.append(name)
    return removed
