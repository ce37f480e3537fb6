"""The report's plots, drawn with matplotlib (no pyplot, no display) as inline SVG.

Each function returns (title, svg text, caption) or None when the runs hold nothing to draw.
Text in an SVG is XML-escaped by matplotlib; labels are also stripped of mathtext, so a
system called "$x$" is drawn as it is written.
"""
from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from ..stats import bootstrap_ci
from .data import TRANSCRIPT_METRICS, ReportData
from .leaderboard import ARROWS, Column, Leaderboard, finite, is_percent

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Plot = tuple[str, str, str]
LATENCY = ("latency", "first_speech")
_counter = [0]


def _label(text: str, limit: int = 40) -> str:
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("\\", "\\\\").replace("$", r"\$")


def _text_in(labels: Sequence[str], size: float = 9) -> float:
    """About how many inches the longest of `labels` takes at `size` points."""
    return max((len(t) for t in labels), default=0) * size * 0.58 / 72 + 0.15


def _grid(nrows: int, ncols: int, axes_w: float, axes_h: float, left: float = 0.65, right: float = 0.2,
          bottom: float = 0.5, top: float = 0.35, wgap: float = 0.7, hgap: float = 0.6,
          **kwargs: object) -> tuple["Figure", np.ndarray]:
    """A figure of nrows × ncols axes with margins and gaps in inches: fixed geometry instead
    of constrained layout, which draws every figure twice and made plotting the slow part."""
    from matplotlib.figure import Figure

    width = left + right + ncols * axes_w + (ncols - 1) * wgap
    height = bottom + top + nrows * axes_h + (nrows - 1) * hgap
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wgap / axes_w, hspace=hgap / axes_h)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def _svg(fig: "Figure") -> str:
    import matplotlib

    _counter[0] += 1
    buf = io.StringIO()
    # Text stays text (small, searchable); each figure's ids are salted so that several
    # inline SVGs in one page never share an id.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"ivb{_counter[0]}",
                                "font.size": 9}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def system_colors(systems: Sequence[str]) -> dict[str, str]:
    """One colour per system, the same in every plot and in the page (matplotlib's C0…C9)."""
    from matplotlib.colors import to_hex

    return {s: to_hex(f"C{i % 10}") for i, s in enumerate(systems)}


def _legend(fig: "Figure", systems: Sequence[str], colors: dict[str, str]) -> None:
    """One legend for the whole figure, in the right margin, naming every system drawn."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="-", color=colors[s], label=_label(s)) for s in systems]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)


def _legend_width(systems: Sequence[str]) -> float:
    return _text_in([_label(s) for s in systems], 7) + 0.45


def _values(data: ReportData, metric: str, field: str, system: str) -> np.ndarray:
    f = data.frame
    sel = f[(f["metric"] == metric) & (f["field"] == field) & (f["system"] == system)]
    return sel["value"].dropna().to_numpy(dtype=float)


def _log_if_wide(ax: "Axes", values: Sequence[float], axis: str = "x") -> None:
    positive = [v for v in values if v is not None and v > 0]
    if positive and max(positive) / min(positive) > 30:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _summary(data: ReportData, metric: str, field: str, system: str) -> Optional[dict]:
    s = data.summary
    hit = s[(s["metric"] == metric) & (s["field"] == field) & (s["system"] == system)]
    return None if hit.empty else hit.iloc[0].to_dict()


def _err(center: float, low: Optional[float], high: Optional[float]) -> Optional[list[list[float]]]:
    """Error-bar lengths of an interval around `center` (None without an interval). A bootstrap
    interval of a ratio of sums may miss the plain mean by a hair: never a negative length."""
    if low is None or high is None:
        return None
    return [[max(0.0, center - low)], [max(0.0, high - center)]]


def _axis_title(col: Column) -> str:
    arrow = {True: " (↑ better)", False: " (↓ better)"}.get(col.higher_is_better, "")  # type: ignore[arg-type]
    return _label(col.title, 60) + arrow


def tradeoff(data: ReportData, board: Leaderboard) -> Optional[Plot]:
    """Each quality number against first-packet latency, one point per system."""
    quality = [c for c in board.columns if c.metric and data.metric_name(c.metric) not in LATENCY
               and c.stat in ("mean", "value") and c.higher_is_better is not None
               and any(board.rows[s][c.key].value is not None for s in data.systems)][:4]
    latency = [(s, _summary(data, "latency", "first_audio_ms", s)) for s in data.systems]
    latency = [(s, row) for s, row in latency if row and finite(row.get("p50")) is not None]
    if not quality or not latency:
        return None
    colors = system_colors(data.systems)
    fig, grid = _grid(1, len(quality), 3.0, 2.6, left=0.75, wgap=0.95, top=0.15,
                      right=_legend_width(data.systems))
    axes = grid[0]
    drawn: list[str] = []
    for ax, col in zip(axes, quality):
        xs = []
        for system, row in latency:
            cell = board.rows[system][col.key]
            if cell.value is None:
                continue
            x, p95 = float(row["p50"]), finite(row.get("p95")) or float(row["p50"])
            yerr = _err(cell.value, *cell.ci)
            scale = 100.0 if is_percent(col.field, col.unit) else 1.0
            ax.errorbar([x], [cell.value * scale], yerr=None if yerr is None else np.array(yerr) * scale,
                        xerr=_err(x, x, p95), fmt="o", color=colors[system], capsize=3)
            xs += [x, p95]
            drawn.append(system)
        _log_if_wide(ax, xs)
        if ax.get_xscale() == "linear":
            ax.locator_params(axis="x", nbins=5)
        ax.set_xlabel("1st audio packet ms: p50 (dot) to p95")
        ax.set_ylabel(_axis_title(col) + (" %" if is_percent(col.field, col.unit) else ""))
        ax.grid(alpha=0.3)
    _legend(fig, [s for s in data.systems if s in drawn], colors)
    return ("Quality against latency", _svg(fig),
            "Each system's quality (mean with 95% bootstrap CI over dialogues; corpus WER without CI) "
            "against its first-packet latency. Up and to the left is better where higher quality is better.")


def latency_distributions(data: ReportData) -> Optional[Plot]:
    fields = [(m, f, t) for m, f, t in (("latency", "first_audio_ms", "first audio packet"),
                                        ("first_speech", "first_speech_ms", "first audible speech"),
                                        ("latency", "end_ms", "end of reply"))
              if not data.frame[(data.frame["metric"] == m) & (data.frame["field"] == f)]["value"].dropna().empty]
    if not fields:
        return None
    colors = system_colors(data.systems)
    fig, grid = _grid(1, len(fields), 3.2, 0.3 + 0.38 * len(data.systems),
                      left=_text_in([_label(s, 28) for s in data.systems]), wgap=0.25, top=0.15, sharey=True)
    axes = grid[0]
    for ax, (metric, field, title) in zip(axes, fields):
        series = [(s, _values(data, metric, field, s)) for s in data.systems]
        series = [(s, v) for s, v in series if v.size]
        if not series:
            continue
        box = ax.boxplot([v for _, v in series], orientation="horizontal", widths=0.6, patch_artist=True,
                         flierprops={"markersize": 3, "alpha": 0.5})
        for patch, (system, _) in zip(box["boxes"], series):
            patch.set_facecolor(colors[system])
            patch.set_alpha(0.6)
        ax.set_yticks(range(1, len(series) + 1), [_label(s, 28) for s, _ in series])
        _log_if_wide(ax, np.concatenate([v for _, v in series]))
        ax.set_xlabel(f"{title}, ms")
        ax.grid(alpha=0.3, axis="x")
        ax.set_ylim(len(series) + 0.5, 0.5)  # first system on top (the axes share y: no invert)
    return ("Latency distributions", _svg(fig),
            "Per-turn latencies from the moment the complete user turn was handed over: box = quartiles, "
            "line = median, whiskers = 1.5 IQR, dots = the turns beyond.")


def metric_means(data: ReportData) -> Optional[Plot]:
    s = data.summary
    if s.empty:
        return None
    s = s[~s["metric"].map(data.metric_name).isin(TRANSCRIPT_METRICS).astype(bool)]
    # Count fields (no direction, such as a WER's reference words) are bookkeeping, not results.
    panels = [(m, f) for (m, f), g in s.groupby(["metric", "field"], sort=False)
              if g["mean"].notna().any() and g["higher_is_better"].notna().any()]
    if not panels:
        return None
    colors = system_colors(data.systems)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    left = _text_in([_label(sy, 22) for sy in data.systems], 7)
    fig, grid = _grid(nrows, ncols, 2.4, 0.25 + 0.28 * len(data.systems), left=left, wgap=left + 0.3,
                      hgap=0.6, bottom=0.3, top=0.3)
    axes = grid.ravel()
    for ax, (metric, field) in zip(axes, panels):
        info = getattr(data.metrics.get(metric), "fields", {}).get(field)
        for y, system in enumerate(data.systems):
            row = _summary(data, metric, field, system)
            mean = finite(row.get("mean")) if row else None
            if mean is None:
                ax.plot([], [])
                continue
            xerr = _err(mean, finite(row.get("ci_low")), finite(row.get("ci_high")))
            ax.errorbar([mean], [y], xerr=xerr, fmt="o", color=colors[system], capsize=3)
        ax.set_yticks(range(len(data.systems)), [_label(sy, 22) for sy in data.systems], fontsize=7)
        ax.set_ylim(len(data.systems) - 0.5, -0.5)
        ax.locator_params(axis="x", nbins=5)
        unit = f" [{info.unit}]" if info is not None and info.unit else ""
        arrow = ARROWS[info.higher_is_better] if info is not None else ""
        ax.set_title(_label(f"{metric} · {field}{unit}{arrow}", 48), fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return ("Every metric's mean with its 95% CI", _svg(fig),
            "Mean of each metric field per system; whiskers are 95% bootstrap intervals over dialogues "
            "(turns of one dialogue are resampled together). ↑ higher is better, ↓ lower is better.")


def by_turn(data: ReportData, board: Leaderboard) -> Optional[Plot]:
    """Does a system degrade over a dialogue? Headline numbers by turn index."""
    f = data.frame[data.frame["turn_index"].notna()]
    if f.empty or f["turn_index"].max() < 1:
        return None
    picks: list[tuple[str, str, str]] = []
    for col in board.columns:
        if col.metric is None or col.stat == "gap":
            continue
        key = (col.metric, col.test_field)
        if key not in [(m, fl) for m, fl, _ in picks]:
            picks.append((col.metric, col.test_field, f"{col.metric} · {col.test_field}{ARROWS[col.higher_is_better]}"))
    picks = [p for p in picks if not f[(f["metric"] == p[0]) & (f["field"] == p[1])]["value"].dropna().empty][:4]
    if not picks:
        return None
    colors = system_colors(data.systems)
    fig, grid = _grid(1, len(picks), 3.0, 2.4, wgap=0.75, right=_legend_width(data.systems))
    axes = grid[0]
    drawn: list[str] = []
    for ax, (metric, field, title) in zip(axes, picks):
        sel = f[(f["metric"] == metric) & (f["field"] == field)].dropna(subset=["value"])
        for system in data.systems:
            mine = sel[sel["system"] == system]
            if mine.empty:
                continue
            xs, ys, lows, highs = [], [], [], []
            for turn, g in mine.groupby("turn_index", sort=True):
                values = g["value"].to_numpy(dtype=float)
                low, high = bootstrap_ci(values)
                xs.append(int(turn))
                ys.append(values.mean())
                lows.append(values.mean() if low is None else low)
                highs.append(values.mean() if high is None else high)
            ax.plot(xs, ys, "o-", color=colors[system], markersize=4)
            drawn.append(system)
            ax.fill_between(xs, lows, highs, color=colors[system], alpha=0.15, linewidth=0)
        ax.set_xlabel("turn index")
        ax.set_title(_label(title, 48), fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    _legend(fig, [s for s in data.systems if s in drawn], colors)
    return ("Quality by turn index", _svg(fig),
            "Mean per turn index with a 95% bootstrap band: a line that falls (or, for latency and WER, "
            "rises) along the dialogue means the system degrades as its history grows.")


def stage_breakdown(data: ReportData) -> Optional[Plot]:
    """Where a cascade's time goes: each stage mark's mean time since t0."""
    marks: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in data.records:
        if r.ok and r.stages:
            for name, ms in r.stages.items():
                marks[r.system][name].append(float(ms))
            if r.first_audio_ms is not None:
                marks[r.system]["first audio"].append(r.first_audio_ms)
            if r.end_ms is not None:
                marks[r.system]["end of reply"].append(r.end_ms)
    systems = [s for s in data.systems if s in marks]
    if not systems:
        return None
    from matplotlib import colormaps

    names = list(dict.fromkeys(n for s in systems for n in
                               sorted(marks[s], key=lambda n: np.mean(marks[s][n]))))
    palette = colormaps["tab20"].colors
    color = {n: palette[i % 20] for i, n in enumerate(names)}
    fig, grid = _grid(1, 1, 6.0, 0.3 + 0.4 * len(systems), left=_text_in([_label(s, 28) for s in systems]),
                      right=1.9, top=0.15)
    ax = grid[0][0]
    labelled: set[str] = set()
    for y, system in enumerate(systems):
        start = 0.0
        for name in sorted(marks[system], key=lambda n: np.mean(marks[system][n])):
            end = float(np.mean(marks[system][name]))
            ax.barh(y, end - start, left=start, color=color[name], edgecolor="white",
                    label=None if name in labelled else _label(name))
            labelled.add(name)
            start = end
    ax.set_yticks(range(len(systems)), [_label(s, 28) for s in systems])
    ax.invert_yaxis()
    ax.set_xlabel("mean ms since the user turn was handed over; each segment ends at its stage mark")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(alpha=0.3, axis="x")
    return ("Stage breakdown", _svg(fig),
            "Systems that report stage marks (cascades: ASR done, first LLM token, …): the mean time of each "
            "mark over the turns that have it, so each segment is the time spent until that mark.")


def all_plots(data: ReportData, board: Leaderboard) -> tuple[list[Plot], list[str]]:
    """Every plot there is data for, and a line for each one there is not."""
    plots, missing = [], []
    for make, why in ((lambda: tradeoff(data, board),
                       "Quality against latency: no quality metric (judge, WER, MOS) was scored."),
                      (lambda: latency_distributions(data), "Latency distributions: no latencies recorded."),
                      (lambda: metric_means(data), "Metric means: nothing was scored."),
                      (lambda: by_turn(data, board), "Quality by turn index: every dialogue has a single turn."),
                      (lambda: stage_breakdown(data), "Stage breakdown: no system reported stage marks.")):
        plot = make()
        if plot is None:
            missing.append(why)
        else:
            plots.append(plot)
    return plots, missing

