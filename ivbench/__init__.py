"""ivbench: benchmark voice-interaction LLMs through multi-turn spoken dialogues.

The public API is what `__all__` names: the base classes a plugin (system, task, metric,
voice) derives from, the data they exchange with ivbench, and the errors a caller can catch.
Everything else is machinery that may change between versions. Running, scoring and
reporting are the command line's (`ivbench eval | score | report`).

Importing ivbench imports nothing heavy: each name is imported from its home module on first
use (`from ivbench import System` loads the systems' base, no model), and models load inside
plugins' `load()`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> its home module (one home per name; tests/test_public_api.py checks they resolve)
_HOMES = {
    # systems: what a system plugin implements and yields
    "System": "ivbench.systems.base", "Session": "ivbench.systems.base",
    "Mode": "ivbench.types", "Audio": "ivbench.types", "TurnInput": "ivbench.types",
    "AudioChunk": "ivbench.types", "TextDelta": "ivbench.types", "StageMark": "ivbench.types",
    "ReplyEvent": "ivbench.types",
    # tasks: what a task plugin returns
    "Task": "ivbench.types", "Dialogue": "ivbench.types", "UserTurn": "ivbench.types",
    # metrics: what a metric plugin declares, reads and returns
    "Metric": "ivbench.metrics.base", "Need": "ivbench.metrics.base", "ScoreItem": "ivbench.metrics.base",
    "DialogueItem": "ivbench.metrics.base", "MetricResult": "ivbench.types", "FieldInfo": "ivbench.types",
    "Status": "ivbench.types", "Headline": "ivbench.metrics.base", "Ratio": "ivbench.metrics.base",
    "ScoringContext": "ivbench.scoring.context",
    # voices: what a TTS plugin implements
    "Voice": "ivbench.voices.base",
    # errors: what the user can fix (the command line prints these as one line)
    "IvbenchError": "ivbench.errors", "ConfigError": "ivbench.errors", "TaskFileError": "ivbench.errors",
    "PluginError": "ivbench.errors", "ModelFileError": "ivbench.errors", "EndpointError": "ivbench.errors",
    "AudioError": "ivbench.errors", "RunDirError": "ivbench.errors", "MissingDependency": "ivbench.errors",
}

# The same names as _HOMES (a literal, so linters and type checkers read it; a test compares them).
__all__ = ["Audio", "AudioChunk", "AudioError", "ConfigError", "Dialogue", "DialogueItem", "EndpointError",
           "FieldInfo", "Headline", "IvbenchError", "Metric", "MetricResult", "MissingDependency", "Mode",
           "ModelFileError", "Need", "PluginError", "Ratio", "ReplyEvent", "RunDirError", "ScoreItem",
           "ScoringContext", "Session", "StageMark", "Status", "System", "Task", "TaskFileError", "TextDelta",
           "TurnInput", "UserTurn", "Voice", "__version__"]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on use
    from .errors import (AudioError, ConfigError, EndpointError, IvbenchError, MissingDependency,
                         ModelFileError, PluginError, RunDirError, TaskFileError)
    from .metrics.base import DialogueItem, Headline, Metric, Need, Ratio, ScoreItem
    from .scoring.context import ScoringContext
    from .systems.base import Session, System
    from .types import (Audio, AudioChunk, Dialogue, FieldInfo, MetricResult, Mode, ReplyEvent, StageMark, Status,
                        Task, TextDelta, TurnInput, UserTurn)
    from .voices.base import Voice


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ivbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
