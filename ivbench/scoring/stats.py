"""Statistics for results tables: bootstrap confidence intervals and paired tests.

Every resampling uses a fixed seed, so the same scores give the same table, byte for byte.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional
from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[Optional[float], Optional[float]]:
    """Percentile bootstrap interval of the mean; (None, None) for fewer than two values."""
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return None, None
    means = data[_draws("integers", data.size, resamples, seed)].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def clustered_bootstrap_ci(groups: Sequence[Sequence[float]], confidence: float = 0.95,
                           resamples: int = DEFAULT_RESAMPLES, seed: int = 0
                           ) -> tuple[Optional[float], Optional[float]]:
    """Bootstrap over dialogues (clusters) of the mean over all their turns: turns of one
    dialogue are not independent, so resampling them one by one would make intervals too narrow."""
    arrays = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if len(arrays) < 2:
        return None, None
    sums = np.array([a.sum() for a in arrays])
    counts = np.array([a.size for a in arrays])
    picks = _draws("integers", len(arrays), resamples, seed)
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _draws(kind: str, n: int, resamples: int, seed: int) -> np.ndarray:
    """The random draws of one resampling: bootstrap picks ("integers") or sign flips ("signs"),
    a function of (n, resamples, seed) alone; kept for small n, since a report tests every pair
    of systems on every field and the same n recurs thousands of times."""
    if n * resamples <= _KEEP_DRAWS_UP_TO:
        return _kept_draws(kind, n, resamples, seed)
    return _new_draws(kind, n, resamples, seed)


def _new_draws(kind: str, n: int, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "signs":
        return rng.choice(np.array([-1.0, 1.0]), size=(resamples, n))
    return rng.integers(0, n, size=(resamples, n))


_KEEP_DRAWS_UP_TO = 1_000_000  # values per kept array: 8 MB


@functools.lru_cache(maxsize=32)
def _kept_draws(kind: str, n: int, resamples: int, seed: int) -> np.ndarray:
    draws = _new_draws(kind, n, resamples, seed)
    draws.flags.writeable = False  # shared between calls
    return draws


@dataclass
class PairedTest:
    n: int
    mean_difference: float  # mean of a − b
    p_value: float  # two-sided, paired sign-flip permutation test
    effect_size: Optional[float]  # Cohen's d_z: mean difference / sd of differences
    ci_low: Optional[float]
    ci_high: Optional[float]


def paired_permutation_test(a: Sequence[float], b: Sequence[float], resamples: int = 10000,
                            seed: int = 0) -> Optional[PairedTest]:
    """Two systems' scores on the same turns: is the mean difference beyond chance?"""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError("paired test needs the two systems' scores on the same items")
    diff = a_arr - b_arr
    n = diff.size
    if n < 2:
        return None
    observed = diff.mean()
    null = (_draws("signs", n, resamples, seed) * diff).mean(axis=1)
    # +1 in numerator and denominator: the observed labelling is one of the permutations.
    p_value = (np.sum(np.abs(null) >= abs(observed) - 1e-12) + 1) / (resamples + 1)
    sd = diff.std(ddof=1)
    effect = float(observed / sd) if sd > 0 else None
    low, high = bootstrap_ci(diff, seed=seed)
    return PairedTest(n=n, mean_difference=float(observed), p_value=float(p_value),
                      effect_size=effect, ci_low=low, ci_high=high)
