"""The report's plots, drawn with matplotlib (no pyplot, no display) as inline SVG.

Each function returns (title, svg text, caption) or None when the runs hold nothing to draw.
Text in an SVG is XML-escaped by matplotlib; labels are also stripped of mathtext, so a
system called "$x$" is drawn as it is written.

Layout is fixed geometry in inches, with every margin sized from the measured width of the
text that goes in it (system names, legends): nothing is cut off at the figure's edge, and
the figures stay under PAGE_WIDTH so a 1400 px window shows them at full size. Log axes
label only 1-2-5 or whole-decade ticks, as plain numbers, so their labels never collide.
tests/test_report_browser.py checks, in Chromium, that no two texts of a plot overlap and
none leaves its SVG.
"""
from __future__ import annotations

import functools
import io
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Optional, TypeVar
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..scoring.stats import bootstrap_ci
from .data import TRANSCRIPT_METRICS, ReportData
from .leaderboard import ARROWS, Column, Leaderboard, finite, is_percent

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Plot = tuple[str, str, str]
LATENCY = ("latency", "first_speech")
_counter = [0]
FONT = 9  # points: tick labels and axis titles
SMALL = 7  # points: legends and the system names of the small panels
PAGE_WIDTH = 13.5  # inches: a 1400 px window shows a figure this wide unscaled (1360 px of content)
F = TypeVar("F", bound=Callable[..., Any])


def _styled(make: F) -> F:
    """Draw with the report's font size: a text's size is fixed when it is created, so the
    style must hold while drawing, not only while saving."""
    @functools.wraps(make)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({"font.size": FONT}):
            return make(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("$", r"\$")


def _width(text: str, size: float = FONT) -> float:
    """Inches that `text` takes at `size` points in the report's font (DejaVu Sans, also what
    the SVG names), a tenth added for a browser's rounding."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    width, _, _ = text_to_path.get_text_width_height_descent(text, FontProperties(size=size), ismath=False)
    return 1.1 * width / 72


def _fit(text: str, inches: float, size: float = FONT) -> str:
    """`text`, shortened in the middle (…) until it fits in `inches`: the head and the tail
    (a mode suffix such as @s2t) both stay readable."""
    if _width(text, size) <= inches:
        return text
    keep = len(text) - 1
    while keep > 2:
        head = (keep + 1) // 2
        short = text[:head] + "…" + text[len(text) - (keep - head):]
        if _width(short, size) <= inches:
            return short
        keep -= 1
    return text[:1] + "…"


def _names(systems: Sequence[str], inches: float, size: float = FONT) -> list[str]:
    """System names that fit in `inches`, escaped for matplotlib; shortened only while they
    stay distinct (two systems must never read the same), else written out in full."""
    short = [_fit(s, inches, size) for s in systems]
    chosen = short if len(set(short)) == len(short) else list(systems)
    return [_escape(s) for s in chosen]


def _names_width(names: Sequence[str], size: float = FONT) -> float:
    """The width of the widest of `names` (as _names returns them), in inches."""
    return max((_width(n.replace("\\$", "$").replace("\\\\", "\\"), size) for n in names), default=0.0)


def _grid(nrows: int, ncols: int, axes_w: float, axes_h: float, left: float = 0.65, right: float = 0.2,
          bottom: float = 0.5, top: float = 0.35, wgap: float = 0.7, hgap: float = 0.6,
          sharey: bool = False) -> tuple[Figure, np.ndarray]:
    """A figure of nrows × ncols axes with margins and gaps in inches: fixed geometry instead
    of constrained layout, which draws every figure twice and made plotting the slow part."""
    from matplotlib.figure import Figure

    width = left + right + ncols * axes_w + (ncols - 1) * wgap
    height = bottom + top + nrows * axes_h + (nrows - 1) * hgap
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wgap / axes_w, hspace=hgap / axes_h)
    return fig, fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)


def _panel_width(n: int, fixed: float, gap: float, most: float) -> float:
    """The width of each of `n` panels so the figure stays within PAGE_WIDTH (at most `most`)."""
    return max(1.6, min(most, (PAGE_WIDTH - fixed - (n - 1) * gap) / max(n, 1)))


def _svg(fig: Figure) -> str:
    import matplotlib

    _counter[0] += 1
    buf = io.StringIO()
    # Text stays text (small, searchable); each figure's ids are salted so that several
    # inline SVGs in one page never share an id.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"ivb{_counter[0]}",
                                "font.size": FONT}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def system_colors(systems: Sequence[str]) -> dict[str, str]:
    """One colour per system, the same in every plot and in the page (matplotlib's C0…C9)."""
    from matplotlib.colors import to_hex

    return {s: to_hex(f"C{i % 10}") for i, s in enumerate(systems)}


# A legend entry: the line handle and the gaps around it, in font sizes (matplotlib's defaults:
# handlelength 2, handletextpad 0.8, borderpad 0.4 and borderaxespad 0.5 on each side).
_LEGEND_EXTRA = 2.0 + 0.8 + 2 * 0.4 + 2 * 0.5
_LEGEND_MOST = 3.2  # inches a system name may take in a legend before it is shortened


def _legend(fig: Figure, systems: Sequence[str], colors: dict[str, str]) -> None:
    """One legend for the whole figure, in the right margin, naming every system drawn."""
    from matplotlib.lines import Line2D

    names = _names(systems, _LEGEND_MOST, SMALL)
    handles = [Line2D([], [], marker="o", linestyle="-", color=colors[s], label=n) for s, n in zip(systems, names)]
    fig.legend(handles=handles, loc="center right", fontsize=SMALL, frameon=False)


def _legend_width(systems: Sequence[str]) -> float:
    return _names_width(_names(systems, _LEGEND_MOST, SMALL), SMALL) + _LEGEND_EXTRA * SMALL / 72 + 0.1


def _values(data: ReportData, metric: str, field: str, system: str) -> np.ndarray:
    f = data.frame
    sel = f[(f["metric"] == metric) & (f["field"] == field) & (f["system"] == system)]
    return sel["value"].dropna().to_numpy(dtype=float)


def _number(value: float, _pos: Optional[int] = None) -> str:
    return f"{value:g}"


def _linear_ticks(ax: Axes, inches: float, axis: str = "x") -> None:
    """As many ticks as their labels fit in `inches` (their length guessed from the axis's range),
    written out in full: no offset or power text at the axis end, which lands on the axis
    title (callers scale very small or large numbers first, `_power`). The labels of a narrow
    panel cannot collide."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    if (ax.get_xscale() if axis == "x" else ax.get_yscale()) != "linear":
        return
    low, high = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    step = (high - low) / 4 or abs(high) or 1.0
    decimals = max(0, 1 - math.floor(math.log10(step)))
    chars = max(len(f"{v:.{decimals}f}") for v in (low, high))
    per_label = chars * 0.6 * FONT + 10  # points, with a gap
    target.set_major_locator(MaxNLocator(nbins=max(1, int(inches * 72 // per_label) - 1), steps=[1, 2, 2.5, 5, 10]))
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    target.set_major_formatter(formatter)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power(values: Sequence[Optional[float]]) -> tuple[float, str]:
    """A factor that brings values under 0.001 or from 100000 to a few digits, and the note
    that goes with it in the title ("[×10⁻⁴]": the axis shows multiples of 10⁻⁴)."""
    sizes = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not sizes:
        return 1.0, ""
    exponent = math.floor(math.log10(max(sizes)))
    if -3 <= exponent < 5:
        return 1.0, ""
    return 10.0 ** -exponent, f" [×10{str(exponent).translate(_SUPERSCRIPT)}]"


def _log_if_wide(ax: Axes, values: Iterable[Optional[float]], axis: str = "x") -> None:
    """A log axis where the values span more than 30×, labelled so its labels cannot collide:
    plain numbers at 1, 2, 5 × 10^k over two decades or less, else at whole decades, and
    unlabelled minor ticks (matplotlib's own labels every minor tick of a short log axis,
    "2×10²3×10²4×10²…", on top of each other)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [v for v in values if v is not None and v > 0]
    if not positive or max(positive) / min(positive) <= 30:
        return
    decades = math.log10(max(positive) / min(positive))
    subs = (1.0, 2.0, 5.0) if decades <= 2.2 else (1.0,)
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    target.set_major_formatter(FuncFormatter(_number))
    target.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=12))
    target.set_minor_formatter(NullFormatter())


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


def _axis_title(col: Column, inches: float) -> str:
    arrow = {True: " (↑ better)", False: " (↓ better)"}.get(col.higher_is_better, "")  # type: ignore[arg-type]
    percent = " %" if is_percent(col.field, col.unit) else ""
    return _escape(_fit(col.title, inches - _width(arrow + percent))) + arrow + percent


def _no_value(ax: Axes, y: float) -> None:
    """Mark a system's empty row in a panel: it has no value there, which is not 0."""
    ax.text(0.01, y, "no value", transform=ax.get_yaxis_transform(), fontsize=SMALL, color="#98a2b3",
            style="italic", va="center")


def _tradeoff_panel(ax: Axes, col: Column, latency: list[tuple[str, Any]], board: Leaderboard,
                    colors: dict[str, str], axes_w: float) -> None:
    xs = []
    scale = 100.0 if is_percent(col.field, col.unit) else 1.0
    for system, row in latency:
        cell = board.rows[system][col.key]
        if cell.value is None:
            continue
        x, p95 = float(row["p50"]), finite(row.get("p95")) or float(row["p50"])
        yerr = _err(cell.value, *cell.ci)
        ax.errorbar([x], [cell.value * scale], yerr=None if yerr is None else np.array(yerr) * scale,
                    xerr=_err(x, x, p95), fmt="o", color=colors[system], capsize=3)
        xs += [x, p95]
    _log_if_wide(ax, xs)
    _linear_ticks(ax, axes_w)
    _linear_ticks(ax, 2.6 * 2, "y")  # vertical labels have room; short ones leave the title room
    ax.set_xlabel(_fit("1st audio packet ms: p50 (dot) to p95", axes_w + 0.6))
    ax.set_ylabel(_axis_title(col, 2.5))
    ax.grid(alpha=0.3)


@_styled
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
    drawn = [s for s, _ in latency if any(board.rows[s][c.key].value is not None for c in quality)]
    legend = _legend_width(drawn)
    axes_w = _panel_width(len(quality), 0.85 + legend, 1.05, 3.0)
    fig, grid = _grid(1, len(quality), axes_w, 2.6, left=0.85, wgap=1.05, top=0.15, right=legend)
    for ax, col in zip(grid[0], quality):
        _tradeoff_panel(ax, col, latency, board, colors, axes_w)
    _legend(fig, drawn, colors)
    return ("Quality against latency", _svg(fig),
            "Each system's quality (mean with 95% bootstrap CI over dialogues; corpus WER without CI) "
            "against its first-packet latency. Up and to the left is better where higher quality is better.")


@_styled
def latency_distributions(data: ReportData) -> Optional[Plot]:
    fields = [(m, f, t) for m, f, t in (("latency", "first_audio_ms", "first audio packet"),
                                        ("first_speech", "first_speech_ms", "first audible speech"),
                                        ("latency", "end_ms", "end of reply"))
              if not data.frame[(data.frame["metric"] == m) & (data.frame["field"] == f)]["value"].dropna().empty]
    if not fields:
        return None
    colors = system_colors(data.systems)
    systems = [s for s in data.systems if any(_values(data, m, f, s).size for m, f, _ in fields)]
    names = _names(systems, 3.0)
    left = _names_width(names) + 0.15
    axes_w = _panel_width(len(fields), left + 0.2, 0.25, 3.2)
    fig, grid = _grid(1, len(fields), axes_w, 0.3 + 0.38 * len(systems), left=left, wgap=0.25, top=0.15,
                      sharey=True)
    for ax, (metric, field, title) in zip(grid[0], fields):
        # Every panel has a row for every system, at the same place: the axes share their labels.
        series = [(y, s, _values(data, metric, field, s)) for y, s in enumerate(systems, start=1)]
        drawn = [(y, s, v) for y, s, v in series if v.size]
        box = ax.boxplot([v for _, _, v in drawn], positions=[y for y, _, _ in drawn], orientation="horizontal",
                         widths=0.6, patch_artist=True, flierprops={"markersize": 3, "alpha": 0.5})
        for patch, (_, system, _) in zip(box["boxes"], drawn):
            patch.set_facecolor(colors[system])
            patch.set_alpha(0.6)
        _log_if_wide(ax, np.concatenate([v for _, _, v in drawn]))
        _linear_ticks(ax, axes_w)
        for y, _, v in series:
            if not v.size:
                _no_value(ax, y)
        ax.set_xlabel(f"{title}, ms")
        ax.grid(alpha=0.3, axis="x")
    ax = grid[0][0]
    ax.set_yticks(range(1, len(systems) + 1), names)
    ax.set_ylim(len(systems) + 0.5, 0.5)  # first system on top (the axes share y: no invert)
    return ("Latency distributions", _svg(fig),
            "Per-turn latencies from the moment the complete user turn was handed over: box = quartiles, "
            "line = median, whiskers = 1.5 IQR, dots = the turns beyond.")


def _quality_summary(data: ReportData) -> Any:
    """The summary rows the plots show: no transcripts, and no WER against free-form reference
    answers (a number on wording, not quality: see leaderboard.WORDING_ONLY)."""
    s = data.summary
    if s.empty:
        return s
    keep = [data.metric_name(m) not in TRANSCRIPT_METRICS and not data.wording_only(m, sy)
            for m, sy in zip(s["metric"], s["system"])]
    return s[keep]


def _means_panel(ax: Axes, data: ReportData, metric: str, field: str, names: list[str], axes_w: float) -> None:
    """One metric field's mean per system, each on its row; "no value" where it has none."""
    colors = system_colors(data.systems)
    info = getattr(data.metrics.get(metric), "fields", {}).get(field)
    unit = info.unit if info is not None else ""
    rows = [None if data.wording_only(metric, system) else _summary(data, metric, field, system)
            for system in data.systems]
    scale, power = (100.0, "") if is_percent(field, unit) else _power(
        [finite(r.get(k)) for r in rows if r for k in ("mean", "ci_low", "ci_high")])
    for y, row in enumerate(rows):
        mean = finite(row.get("mean")) if row else None
        if row is None or mean is None:
            _no_value(ax, y)
            continue
        xerr = _err(mean, finite(row.get("ci_low")), finite(row.get("ci_high")))
        ax.errorbar([mean * scale], [y], xerr=None if xerr is None else np.array(xerr) * scale, fmt="o",
                    color=colors[data.systems[y]], capsize=3)
    ax.set_yticks(range(len(data.systems)), names, fontsize=SMALL)
    ax.set_ylim(len(data.systems) - 0.5, -0.5)
    _linear_ticks(ax, axes_w)
    shown_unit = " [%]" if scale == 100.0 else (f" [{unit}]" if unit else "") + power
    arrow = ARROWS[info.higher_is_better] if info is not None else ""
    ax.set_title(_escape(_fit(f"{metric} · {field}", axes_w + 0.25 - _width(shown_unit + arrow, 8), 8))
                 + shown_unit + arrow, fontsize=8)
    ax.grid(alpha=0.3, axis="x")


@_styled
def metric_means(data: ReportData) -> Optional[Plot]:
    s = _quality_summary(data)
    if s.empty:
        return None
    # Count fields (no direction, such as a WER's reference words) are bookkeeping, not results.
    panels = [(m, f) for (m, f), g in s.groupby(["metric", "field"], sort=False)
              if g["mean"].notna().any() and g["higher_is_better"].notna().any()]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    names = _names(data.systems, 2.4, SMALL)
    left = _names_width(names, SMALL) + 0.15
    axes_w = 2.6
    fig, grid = _grid(nrows, ncols, axes_w, 0.25 + 0.28 * len(data.systems), left=left, wgap=left + 0.3,
                      hgap=0.75, bottom=0.5, top=0.3)
    axes = grid.ravel()
    for ax, (metric, field) in zip(axes, panels):
        _means_panel(ax, data, metric, field, names, axes_w)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return ("Every metric's mean with its 95% CI", _svg(fig),
            "Mean of each metric field per system; whiskers are 95% bootstrap intervals over dialogues "
            "(turns of one dialogue are resampled together). ↑ higher is better, ↓ lower is better.")


def _by_turn_picks(data: ReportData, board: Leaderboard, f: Any) -> list[tuple[str, str, Column]]:
    picks: list[tuple[str, str, Column]] = []
    for col in board.columns:
        if col.metric is None or col.stat == "gap":
            continue
        if (col.metric, col.test_field) not in [(m, fl) for m, fl, _ in picks]:
            picks.append((col.metric, col.test_field, col))
    return [p for p in picks if not f[(f["metric"] == p[0]) & (f["field"] == p[1])]["value"].dropna().empty][:4]


def _turn_series(values: Any) -> tuple[list[int], list[float], list[float], list[float]]:
    """Turn number (from 1, as the dialogues show them), mean and its bootstrap band."""
    xs, ys, lows, highs = [], [], [], []
    for turn, g in values.groupby("turn_index", sort=True):
        v = g["value"].to_numpy(dtype=float)
        low, high = bootstrap_ci(v)
        xs.append(int(turn) + 1)
        ys.append(float(v.mean()))
        lows.append(float(v.mean()) if low is None else low)
        highs.append(float(v.mean()) if high is None else high)
    return xs, ys, lows, highs


@_styled
def by_turn(data: ReportData, board: Leaderboard) -> Optional[Plot]:
    """Does a system degrade over a dialogue? Headline numbers by turn."""
    f = data.frame[data.frame["turn_index"].notna()]
    if f.empty or f["turn_index"].max() < 1:
        return None
    picks = _by_turn_picks(data, board, f)
    if not picks:
        return None
    colors = system_colors(data.systems)
    drawn = [s for s in data.systems
             if any(not f[(f["metric"] == m) & (f["field"] == fl) & (f["system"] == s)]["value"].dropna().empty
                    and not data.wording_only(m, s) for m, fl, _ in picks)]
    legend = _legend_width(drawn)
    axes_w = _panel_width(len(picks), 0.65 + legend, 0.75, 3.0)
    fig, grid = _grid(1, len(picks), axes_w, 2.4, wgap=0.75, right=legend)
    for ax, (metric, field, col) in zip(grid[0], picks):
        sel = f[(f["metric"] == metric) & (f["field"] == field)].dropna(subset=["value"])
        scale = 100.0 if is_percent(field, col.unit) else 1.0
        for system in drawn:
            mine = sel[sel["system"] == system]
            if mine.empty or data.wording_only(metric, system):
                continue
            xs, ys, lows, highs = _turn_series(mine)
            ax.plot(xs, np.array(ys) * scale, "o-", color=colors[system], markersize=4)
            ax.fill_between(xs, np.array(lows) * scale, np.array(highs) * scale, color=colors[system], alpha=0.15,
                            linewidth=0)
        ax.set_xlabel("turn")
        suffix = (" [%]" if scale != 1.0 else "") + ARROWS[col.higher_is_better]
        ax.set_title(_escape(_fit(f"{metric} · {field}", axes_w + 0.3 - _width(suffix, 8), 8)) + suffix, fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _linear_ticks(ax, 2.4 * 2, "y")
        ax.grid(alpha=0.3)
    _legend(fig, drawn, colors)
    return ("Quality by turn", _svg(fig),
            "Mean per turn (numbered as in the dialogues below) with a 95% bootstrap band: a line that falls "
            "(or, for latency and WER, rises) along the dialogue means the system degrades as its history grows.")


def _stage_marks(data: ReportData) -> dict[str, dict[str, list[float]]]:
    marks: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in data.records:
        if r.ok and r.stages:
            for name, ms in r.stages.items():
                marks[r.system][name].append(float(ms))
            if r.first_audio_ms is not None:
                marks[r.system]["first audio"].append(r.first_audio_ms)
            if r.end_ms is not None:
                marks[r.system]["end of reply"].append(r.end_ms)
    return marks


@_styled
def stage_breakdown(data: ReportData) -> Optional[Plot]:
    """Where a cascade's time goes: each stage mark's mean time since t0."""
    marks = _stage_marks(data)
    systems = [s for s in data.systems if s in marks]
    if not systems:
        return None
    from matplotlib import colormaps

    names = list(dict.fromkeys(n for s in systems for n in
                               sorted(marks[s], key=lambda n: np.mean(marks[s][n]))))
    palette = colormaps["tab20"]
    color = {n: palette(i % 20) for i, n in enumerate(names)}
    labels = _names(systems, 3.0)
    left = _names_width(labels) + 0.15
    axes_w = min(8.0, PAGE_WIDTH - left - 0.3)
    # The legend goes under the axes, as many entries a row as fit: it can be as long as the
    # cascade has stages without ever leaving the figure.
    stage_names = [_escape(_fit(n, 2.5, SMALL)) for n in names]
    entry = _names_width(stage_names, SMALL) + (2.0 + 0.8 + 2.0) * SMALL / 72
    ncol = max(1, min(len(names), int(axes_w // entry)))
    rows = math.ceil(len(names) / ncol)
    fig, grid = _grid(1, 1, axes_w, 0.3 + 0.4 * len(systems), left=left, right=0.3, top=0.15,
                      bottom=0.55 + 0.2 * rows + 0.1)
    ax = grid[0][0]
    labelled: set[str] = set()
    for y, system in enumerate(systems):
        start = 0.0
        for name in sorted(marks[system], key=lambda n: np.mean(marks[system][n])):
            end = float(np.mean(marks[system][name]))
            ax.barh(y, end - start, left=start, color=color[name], edgecolor="white",
                    label=None if name in labelled else stage_names[names.index(name)])
            labelled.add(name)
            start = end
    ax.set_yticks(range(len(systems)), labels)
    ax.invert_yaxis()
    _linear_ticks(ax, axes_w)
    ax.set_xlabel(_fit("mean ms since the user turn was handed over; each segment ends at its stage mark", axes_w))
    ax.legend(fontsize=SMALL, loc="upper left", bbox_to_anchor=(0.0, -0.55 / (0.3 + 0.4 * len(systems))),
              ncol=ncol, frameon=False, borderaxespad=0.0)
    ax.grid(alpha=0.3, axis="x")
    return ("Stage breakdown", _svg(fig),
            "Systems that report stage marks (cascades: ASR done, first LLM token, …): the mean time of each "
            "mark over the turns that have it, so each segment is the time spent until that mark.")


def _missing_notes(data: ReportData) -> dict[str, str]:
    """Why each plot is absent, in terms of what the runs hold."""
    ok = [r for r in data.records if r.ok]
    multi = not data.frame.empty and data.frame["turn_index"].notna().any() and data.frame["turn_index"].max() >= 1
    return {"tradeoff": "Quality against latency: no system has both a quality number (judge, WER, MOS) and a "
                        "first-packet latency.",
            "latency": "Latency distributions: no latency was measured (no turn produced a reply).",
            "means": "Metric means: no metric gave a value.",
            "by_turn": ("Quality by turn: no headline metric gave per-turn values." if multi
                        else "Quality by turn: every dialogue has a single turn." if ok
                        else "Quality by turn: no turn gave a value."),
            "stages": "Stage breakdown: no system reported stage marks."}


def all_plots(data: ReportData, board: Leaderboard) -> tuple[list[Plot], list[str]]:
    """Every plot there is data for, and a line for each one there is not."""
    if data.records and not any(r.ok for r in data.records):
        return [], [f"No plots: every one of the {len(data.records)} turns failed; the leaderboard's notes and "
                    "the dialogues below give the errors."]
    why = _missing_notes(data)
    plots, missing = [], []
    for key, make in (("tradeoff", lambda: tradeoff(data, board)),
                      ("latency", lambda: latency_distributions(data)),
                      ("means", lambda: metric_means(data)),
                      ("by_turn", lambda: by_turn(data, board)),
                      ("stages", lambda: stage_breakdown(data))):
        plot = make()
        if plot is None:
            missing.append(why[key])
        else:
            plots.append(plot)
    return plots, missing
