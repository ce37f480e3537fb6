"""The results table: one row per system, from a run's records (store → table)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Sequence

import numpy as np

from .types import TurnRecord


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The q-th percentile (linear interpolation); None when there is nothing to summarise."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def summarize(records: Sequence[TurnRecord]) -> list[dict[str, Any]]:
    """Per system: turns, failures, first-packet and first-text latency, end of reply, RTF."""
    by_system: "OrderedDict[str, list[TurnRecord]]" = OrderedDict()
    for r in records:
        by_system.setdefault(r.system, []).append(r)
    rows = []
    for system, recs in by_system.items():
        ok = [r for r in recs if r.ok]
        first_audio = [r.first_audio_ms for r in ok if r.first_audio_ms is not None]
        first_text = [r.first_text_ms for r in ok if r.first_text_ms is not None]
        end = [r.end_ms for r in ok if r.end_ms is not None]
        rtf = [r.rtf for r in ok if r.rtf is not None]
        rows.append({
            "system": system,
            "dialogues": len({r.dialogue_id for r in recs}),
            "turns": len(recs),
            "failed": len(recs) - len(ok),
            "first_audio_p50_ms": percentile(first_audio, 50),
            "first_audio_p95_ms": percentile(first_audio, 95),
            "first_text_p50_ms": percentile(first_text, 50),
            "end_p50_ms": percentile(end, 50),
            "rtf_mean": float(np.mean(rtf)) if rtf else None,
        })
    return rows


COLUMNS = (("system", "system"), ("dialogues", "dialogues"), ("turns", "turns"), ("failed", "failed"),
           ("first_audio_p50_ms", "1st audio p50 ms"), ("first_audio_p95_ms", "1st audio p95 ms"),
           ("first_text_p50_ms", "1st text p50 ms"), ("end_p50_ms", "end p50 ms"), ("rtf_mean", "RTF"))


def _cell(value: Any) -> str:
    if value is None:
        return "–"  # missing, never 0
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    header = [title for _, title in COLUMNS]
    body = [[_cell(row.get(key)) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in body]
    return "\n".join(lines)
