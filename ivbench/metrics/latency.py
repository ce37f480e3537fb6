"""Latency per turn, read off the runner's clock (docs/architecture.md, "Latency, one definition")."""
from __future__ import annotations

from typing import Any, Optional

from .base import FieldInfo, Metric, MetricResult, ScoreItem

LATENCY_FIELDS = ("first_audio_ms", "first_text_ms", "end_ms", "rtf")


class LatencyMetric(Metric):
    """Needs nothing beyond the record: the runner already stamped every event."""

    name = "latency"
    description = "first packet, first text, end of reply and real-time factor per turn"
    fields = {
        "first_audio_ms": FieldInfo(False, "ms", "first audio packet after the user turn was handed over"),
        "first_text_ms": FieldInfo(False, "ms", "first text after the user turn was handed over"),
        "end_ms": FieldInfo(False, "ms", "end of reply"),
        "rtf": FieldInfo(False, "", "real-time factor: compute time / reply audio duration"),
    }

    def cache_inputs(self, item: ScoreItem) -> Optional[dict[str, Any]]:
        return None  # reading four numbers needs no cache

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        results = []
        for item in items:
            values: dict[str, Optional[float]] = {f: getattr(item.record, f) for f in LATENCY_FIELDS}
            missing = [f for f, v in values.items() if v is None]
            reason = f"not produced in mode {item.record.mode}: {', '.join(missing)}" if missing else None
            results.append(MetricResult(values, "ok", reason))
        return results
