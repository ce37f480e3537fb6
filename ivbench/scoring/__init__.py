"""The scoring phase (docs/architecture.md, "Scoring"): which metrics run (`plan`), running them
over a run directory with their caches (`run`), what they are lent (`context`), the tables
written from their scores (`summary`, with `stats` and the suites' `headlines`).

The names below load on first use: the metric interface (ivbench.metrics.base) imports
`ivbench.scoring.context`, and importing it must not pull in the phase that runs metrics.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import ScoringContext
    from .plan import DEFAULT_METRICS, default_metric_specs, plan_metrics
    from .run import ScoreConfig, ScoreOutcome, score_run

_WHERE = {"ScoringContext": "context", "DEFAULT_METRICS": "plan", "default_metric_specs": "plan",
          "plan_metrics": "plan", "ScoreConfig": "run", "ScoreOutcome": "run", "score_run": "run"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_METRICS", "ScoreConfig", "ScoreOutcome", "ScoringContext", "default_metric_specs",
           "plan_metrics", "score_run"]
