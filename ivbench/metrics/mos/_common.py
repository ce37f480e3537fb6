"""Pieces the MOS metrics share: import errors that name the extra, the reply audio (at 16 kHz or
as written), per-item failures."""
from __future__ import annotations

import importlib
from typing import Any, Optional
from collections.abc import Callable, Sequence

import numpy as np

from ...errors import ConfigError
from ..base import MetricResult, ScoreItem, Status

SAMPLE_RATE = 16000  # every MOS model here listens at 16 kHz
INSTALL = "pip install 'ivbench[scoring]'"


def require(module: str, metric: str, dist: Optional[str] = None, hint: str = INSTALL) -> Any:
    """Import `module` or raise a MissingDependency that says what to install."""
    from ...errors import MissingDependency

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"the {metric} metric needs the {dist or module!r} package ({exc}); install it with `{hint}`"
        ) from None


def check_batch_size(metric: str, batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"{metric} batch_size={batch_size!r}: give an integer of at least 1")
    return batch_size


def reply_16k(item: ScoreItem) -> np.ndarray:
    """The reply's samples at 16 kHz, mono float32, clipped to [-1, 1] (resampling can overshoot)."""
    from ...audio import resample

    audio = item.reply_audio()
    if audio is None:  # precheck rules this out; a direct caller gets a clear message
        raise ValueError("the record has no reply audio")
    samples = resample(audio, SAMPLE_RATE).samples
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)


def reply_native(item: ScoreItem) -> tuple[np.ndarray, int]:
    """The reply's samples as written (mono float32) and their sample rate, for a model that
    resamples inside itself the way its reference implementation does."""
    audio = item.reply_audio()
    if audio is None:  # precheck rules this out; a direct caller gets a clear message
        raise ValueError("the record has no reply audio")
    return audio.samples.astype(np.float32, copy=False), int(audio.sample_rate)


def failed(fields: Any, exc: Exception) -> MetricResult:
    """The result of an item whose scoring raised `exc`: failed, with the reason."""
    return MetricResult.unavailable(fields, Status.FAILED, f"{type(exc).__name__}: {exc}")


def score_each(items: Sequence[ScoreItem], fields: Any,
               fn: Callable[[ScoreItem], MetricResult]) -> list[MetricResult]:
    """Score items one by one; an error in one item fails that item only, with its reason."""
    results = []
    for item in items:
        try:
            results.append(fn(item))
        except Exception as exc:  # a bad file or a model error must not lose the other turns
            results.append(failed(fields, exc))
    return results
