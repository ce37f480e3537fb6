"""Latency per turn, read off the runner's clock (DESIGN.md, Latency)."""
from __future__ import annotations

from typing import Any, Optional

from ..types import TurnRecord

LATENCY_FIELDS = ("first_audio_ms", "first_text_ms", "end_ms", "rtf")


class LatencyMetric:
    """Needs nothing beyond the record: the runner already stamped every event."""

    name = "latency"
    needs: tuple[str, ...] = ()
    uses_gpu = False

    def score(self, record: TurnRecord) -> dict[str, Optional[float]]:
        if not record.ok:
            return {field: None for field in LATENCY_FIELDS}
        return {field: getattr(record, field) for field in LATENCY_FIELDS}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "fields": list(LATENCY_FIELDS)}
