"""Suite headline figures for summary.csv: `Headline` declarations (ivbench.metrics.base) turned
into rows, each with a 95% bootstrap CI (dialogues resampled within their category, so every
category keeps its size, as a leaderboard's per-subset figures do).

For one metric and one system, each item (score row) belongs to its dialogue's category. A
category's figure is the mean of its ratios; the headline is the mean of the figures (times
`to_overall`), missing unless the run has every required category.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .stats import DEFAULT_RESAMPLES

if TYPE_CHECKING:
    import pandas as pd

    from ..metrics.base import Headline, Metric, Ratio
    from ..types import MetricInfo

SEED = 0


def _sums(items: pd.DataFrame, ratio: Ratio) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Per dialogue: (Σ numerator, Σ denominator) over its items; None when no item has a value."""
    if ratio.numerator not in items:
        return None
    num = items[ratio.numerator]
    den = items[ratio.denominator] if ratio.denominator else num.notna().astype(float)
    if ratio.denominator and ratio.denominator not in items:
        return None
    usable = num.notna() & den.notna()
    if not usable.any():
        return None
    grouped = (items[usable].assign(_num=num[usable].astype(float), _den=den[usable].astype(float))
               .groupby("dialogue_id", sort=True)[["_num", "_den"]].sum())
    return grouped["_num"].to_numpy(), grouped["_den"].to_numpy()


def _figure(parts: list[tuple[np.ndarray, np.ndarray, float]], picks: Optional[np.ndarray]) -> np.ndarray:
    """Each resample's category figure (a vector; one value when `picks` is None)."""
    values = []
    for num, den, scale in parts:
        if picks is None:
            values.append(np.array([num.sum() / den.sum() if den.sum() else np.nan]) * scale)
        else:
            n_sum, d_sum = num[picks].sum(axis=1), den[picks].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                values.append(np.where(d_sum > 0, n_sum / np.where(d_sum > 0, d_sum, 1), np.nan) * scale)
    return np.mean(values, axis=0)


def _ci(samples: np.ndarray) -> tuple[Optional[float], Optional[float]]:
    samples = samples[np.isfinite(samples)]
    if samples.size < 2:
        return None, None
    low, high = np.quantile(samples, [0.025, 0.975])
    return float(low), float(high)


def declared_headlines(metric: Any) -> tuple[Headline, ...]:
    """A metric's headlines: its own declaration, or for a `MetricInfo` (what a report knows of a
    metric, read from summary.csv) the built-in suites' by the metric's name."""
    if hasattr(metric, "headlines"):
        return tuple(metric.headlines)
    from ..suites.catalog import SUITE_HEADLINES

    return SUITE_HEADLINES.get(getattr(metric, "name", ""), ())


def headline_rows(frame: pd.DataFrame, metrics: Mapping[str, Union[Metric, MetricInfo]],
                  categories: dict[str, Optional[str]]) -> list[dict[str, Any]]:
    """summary.csv rows for every headline of every metric in `frame` (the long score frame)."""
    out: list[dict[str, Any]] = []
    for label, metric in metrics.items():
        for headline in declared_headlines(metric):
            mine = frame[frame["metric"] == label]
            for system, values in mine.groupby("system", sort=True):
                done = {(r["system"], r["field"]) for r in out if r["metric"] == label}
                wide = values.pivot_table(index=["dialogue_id", "turn_index"], columns="field", values="value",
                                          aggfunc="first", dropna=False).reset_index()
                wide["category"] = wide["dialogue_id"].map(lambda d: categories.get(str(d)))
                out += [{**r, "metric_name": metric.name} for r in _rows_for(str(system), label, headline, wide)
                        if (r["system"], r["field"]) not in done]
    return out


def _category_figures(headline: Headline, wide: pd.DataFrame) -> dict[str, tuple[float, np.ndarray, int]]:
    """category -> (its figure, the figure of each bootstrap resample, its dialogues)."""
    rng = np.random.default_rng(SEED)
    figures: dict[str, tuple[float, np.ndarray, int]] = {}
    for category, items in wide.dropna(subset=["category"]).groupby("category", sort=True):
        wanted = headline.ratios(str(category))
        parts = [(*s, r.scale) for r in wanted if (s := _sums(items, r)) is not None]
        # Every ratio must rest on the same dialogues, so one set of picks applies to all.
        if not parts or len(parts) < len(wanted) or len({len(p[0]) for p in parts}) != 1:
            continue
        n = len(parts[0][0])
        picks = rng.integers(0, n, size=(DEFAULT_RESAMPLES, n))
        figures[str(category)] = (float(_figure(parts, None)[0]), _figure(parts, picks), n)
    return figures


def _rows_for(system: str, label: str, headline: Headline, wide: pd.DataFrame) -> list[dict[str, Any]]:
    figures = _category_figures(headline, wide)
    rows = [_row(system, label, name, value, samples, n, f"{name}: one category's figure of {headline.name}")
            for name, (value, samples, n) in figures.items()]
    counted = headline.require or headline.only or tuple(figures)
    used = {c: figures[c] for c in counted if c in figures}
    if used and all(c in figures for c in headline.require):
        scale = [headline.to_overall.get(c, 1.0) for c in used]
        value = float(np.mean([f[0] * k for f, k in zip(used.values(), scale)]))
        samples = np.mean([f[1] * k for f, k in zip(used.values(), scale)], axis=0)
        rows.append(_row(system, label, headline.name, value, samples, sum(f[2] for f in used.values()),
                         headline.description))
    else:  # missing, never a mean of fewer categories than the suite's figure has
        rows.append({"system": system, "metric": label, "field": headline.name, "n": len(figures),
                     "missing": len([c for c in headline.require if c not in figures]), "mean": None,
                     "value": None, "higher_is_better": True, "unit": "", "description": headline.description})
    return rows


def _row(system: str, label: str, name: str, value: float, samples: np.ndarray, n: int,
         description: str) -> dict[str, Any]:
    low, high = _ci(samples)
    finite = value if np.isfinite(value) else None
    return {"system": system, "metric": label, "field": name, "n": n, "missing": 0, "mean": finite,
            "ci_low": low, "ci_high": high, "value": finite, "higher_is_better": True, "unit": "",
            "description": description}
