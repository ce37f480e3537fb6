"""What the scoring phase lends its metrics (docs/architecture.md, "Scoring"): the device, the
judge, where caches live, and the models that several metrics share.

Every field is typed: a metric reads `context.judge_client` or `context.asr_models`, never a
key it has to spell the same way as another module. This module imports nothing of the
metrics (they import it), and nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from ..asr.whisper import WhisperASR
    from ..judge.client import JudgeClient
    from ..judge.settings import JudgeSettings


@dataclass(frozen=True)
class AsrKey:
    """Everything that makes two transcript metrics' Whisper models one and the same loaded model
    (speed options too: a model loaded with other batch sizes or workers is another object)."""

    backend: str
    model: Optional[str]
    device: str
    compute_type: Optional[str]
    language: Optional[str]
    beam_size: int
    batch_size: Optional[int]
    workers: Optional[int]
    pack: bool
    word_times: bool
    encoder: Optional[str]


@dataclass
class ScoringContext:
    """One scoring run's shared state, handed to every metric's `load`."""

    device: str = "cpu"
    # How to reach the judge: its settings (a client is made on first use, `shared_client`), a
    # ready client, or None (no judge configured: judge metrics are missing).
    judge: Optional[Union[JudgeSettings, JudgeClient]] = None
    # Where the run keeps its caches (None: ivbench.cache.default_cache_dir()), and whether to use
    # them (None: each cache's own setting).
    cache_dir: Optional[Path] = None
    use_cache: Optional[bool] = None
    # The run's one judge client, made by the first judge metric that loads, so that every judge
    # metric shares its request cache, its concurrency and its token counts; the scoring run
    # reads its usage afterwards (judge.json) and closes it.
    judge_client: Optional[JudgeClient] = None
    # Whisper models loaded by the transcript metrics, one per distinct AsrKey.
    asr_models: dict[AsrKey, WhisperASR] = field(default_factory=dict)
