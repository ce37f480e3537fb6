"""Statistics for results tables: bootstrap confidence intervals and paired tests.

Every resampling uses a fixed seed, so the same scores give the same table, byte for byte.
"""
from __future__ import annotations

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
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
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
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(arrays), size=(resamples, len(arrays)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


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
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(resamples, n))
    null = (signs * diff).mean(axis=1)
    # +1 in numerator and denominator: the observed labelling is one of the permutations.
    p_value = (np.sum(np.abs(null) >= abs(observed) - 1e-12) + 1) / (resamples + 1)
    sd = diff.std(ddof=1)
    effect = float(observed / sd) if sd > 0 else None
    low, high = bootstrap_ci(diff, seed=seed)
    return PairedTest(n=n, mean_difference=float(observed), p_value=float(p_value),
                      effect_size=effect, ci_low=low, ci_high=high)
