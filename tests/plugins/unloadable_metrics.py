"""Metrics for the tests of a metric that cannot load (tests/test_scoring_files.py): a transcript
metric whose model is absent, and a metric that reads its transcript."""
from __future__ import annotations

from typing import Any, Optional

from ivbench.metrics.base import Metric, MetricResult, Need, ScoringContext
from ivbench.types import FieldInfo


class AbsentTranscript(Metric):
    """Takes the transcript metric's place, and cannot load."""

    name = "transcript"

    def load(self, context: ScoringContext) -> None:
        raise ImportError("this metric needs pip install something-absent")

    def cache_inputs(self, item: Any) -> Optional[dict[str, Any]]:
        return None

    def score(self, items: list[Any]) -> list[MetricResult]:
        raise AssertionError("a metric that did not load is never asked to score")


class ReadsTranscript(Metric):
    """Words in the reply's transcript."""

    name = "transcript_words"
    needs = frozenset({Need.TRANSCRIPT})
    fields = {"words": FieldInfo(True, "words")}

    def cache_inputs(self, item: Any) -> Optional[dict[str, Any]]:
        return {"transcript": item.transcript}

    def score(self, items: list[Any]) -> list[MetricResult]:
        return [MetricResult({"words": float(len(item.transcript.split()))}) for item in items]
