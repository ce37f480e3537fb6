"""Metrics for the scoring tests (tests/test_scoring.py). The tests copy this file into each
test's folder and load it by path, so every test has a module of its own and a fresh CALLS."""
from __future__ import annotations

from typing import Any, Optional

from ivbench.metrics.base import FieldInfo, Metric, MetricResult, Need, ScoreItem, ScoringContext

CALLS: list[int] = []  # the size of every batch Length really computed


class Length(Metric):
    """Characters of the reply text; counts how often it really computes."""

    name = "length"
    needs = frozenset({Need.REPLY_TEXT})
    fields = {"chars": FieldInfo(True, "chars")}

    def cache_inputs(self, item: ScoreItem) -> Optional[dict[str, Any]]:
        return {"text": item.record.reply_text}

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        CALLS.append(len(items))
        return [MetricResult({"chars": float(len(i.record.reply_text))}) for i in items]


class NeedsReference(Length):
    name = "needs_reference"
    needs = frozenset({Need.REPLY_TEXT, Need.REFERENCE})


class Broken(Length):
    name = "broken"

    def load(self, context: ScoringContext) -> None:
        raise ImportError("this metric needs pip install something-absent")


class Interrupted(Length):
    """Ctrl-C while it scores."""

    name = "interrupted"

    def cache_inputs(self, item: ScoreItem) -> Optional[dict[str, Any]]:
        return None

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        raise KeyboardInterrupt
