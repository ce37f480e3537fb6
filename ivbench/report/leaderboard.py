"""The leaderboard: one row per system, one column per headline number, each cell with its
confidence interval, how many values it rests on, why any are missing, whether it is the
best of its column, and how it compares with the best under the paired test.

Known metrics show the numbers of `ivbench.table.HEADLINE`; any other metric shows the mean
of each of its fields, so a plugin metric appears without the report knowing it.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

from ..table import HEADLINE, RTF, base_system
from .data import TRANSCRIPT_METRICS, ReportData

# Metric names in the order their columns appear; others follow in the order they were run.
ORDER = ("judge", "judge_dialogue", "asr_wer", "ref_wer", "utmos", "dnsmos", "distillmos",
         "latency", "first_speech")
# After a column title or axis label: which way is better (nothing where neither is).
ARROWS = {True: " ↑", False: " ↓", None: ""}
SIGNIFICANCE = 0.05
# A corpus-level number has no per-turn values to test; its per-turn counterpart is tested.
TEST_FIELD = {"wer_corpus": "wer", "wer_dialogue_mean": "wer"}


@dataclass
class Column:
    key: str
    title: str
    metric: Optional[str]  # metric label; None for the record counts
    field: str
    stat: str  # mean, p50, p95, value, or count
    higher_is_better: Optional[bool]
    unit: str = ""
    description: str = ""

    @property
    def test_field(self) -> str:
        return TEST_FIELD.get(self.field, self.field)


@dataclass
class Cell:
    value: Optional[float]
    ci: tuple[Optional[float], Optional[float]] = (None, None)
    n: int = 0
    missing: int = 0
    note: Optional[str] = None  # why the value, or some of the values it rests on, are missing
    best: bool = False
    significant: bool = False  # best, and better than every other system by the paired test
    tests: list[str] = field(default_factory=list)  # paired-test lines for the tooltip
    text: Optional[str] = None  # shown instead of the number (counts such as "1 / 8")


@dataclass
class Leaderboard:
    columns: list[Column]
    rows: dict[str, dict[str, Cell]]  # system -> column key -> cell
    notes: list[str]


def is_percent(field_name: str, unit: str = "") -> bool:
    return unit == "%" or field_name.split("_")[0] in ("wer", "cer")


def fmt(value: Optional[float], field_name: str = "", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if is_percent(field_name, unit):
        return f"{100.0 * value:.1f}%"
    size = abs(value)
    if size >= 100 or (unit == "ms" and size >= 10):
        return f"{value:.0f}"
    if size >= 10 or unit == "ms" and size >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"


def metric_rank(name: str) -> int:
    """Where metric `name` goes among the others (ORDER; unlisted ones last)."""
    return ORDER.index(name) if name in ORDER else len(ORDER)


def finite(value: Any) -> Optional[float]:
    """`value` as a float; None where it is missing, not a number or NaN."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _columns(data: ReportData) -> list[Column]:
    labels = [label for label in data.metrics if data.metric_name(label) not in TRANSCRIPT_METRICS]
    labels.sort(key=lambda label: metric_rank(data.metric_name(label)))
    present = {(m, f) for m, f in zip(data.summary["metric"], data.summary["field"])}
    columns: list[Column] = []
    for label in labels:
        name = data.metric_name(label)
        fields = getattr(data.metrics[label], "fields", {}) or {}
        if name in HEADLINE:
            picks = HEADLINE[name] + ([RTF[1:]] if name == RTF[0] else [])
        else:  # a metric the report does not know: every field's mean
            picks = [(f, "mean", f"{label} {f}") for f in
                     list(fields) + sorted(f for m, f in present if m == label and f not in fields)]
        for field_name, stat, title in picks:
            if (label, field_name) not in present:
                continue
            info = fields.get(TEST_FIELD.get(field_name, field_name))
            hib = info.higher_is_better if info is not None else None
            if field_name in TEST_FIELD:
                hib = False
            unit = info.unit if info is not None else ""
            if name in HEADLINE and sum(1 for other in labels if data.metric_name(other) == name) > 1:
                title = f"{title} ({label})"  # several configurations of one metric
            description = (info.description if info is not None and info.description else f"{label} {field_name}")
            columns.append(Column(key=f"{label}|{field_name}|{stat}", title=title, metric=label,
                                  field=field_name, stat=stat, higher_is_better=hib, unit=unit,
                                  description=description))
    return columns


def _why(reasons: Counter, n: int, missing: int) -> str:
    listed = "; ".join(f"{reason} ({count})" if len(reasons) > 1 or count != missing else reason
                       for reason, count in reasons.most_common(4))
    more = f"; … {len(reasons) - 4} more reasons" if len(reasons) > 4 else ""
    if missing == n:
        return f"no value on any of its {n} results: {listed}{more}"
    return f"{missing} of {n} results have no value: {listed}{more}"


def build_leaderboard(data: ReportData) -> Leaderboard:
    columns = _columns(data)
    # (system, metric, field) -> reasons of the missing values
    reasons: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    for row in data.rows:
        for name, value in row.result.values.items():
            if value is None:
                reason = row.result.reason or f"status {row.result.status}"
                reasons[(row.system, row.metric, name)][reason] += 1
    summary = {(s, m, f): row for s, m, f, row in
               zip(data.summary["system"], data.summary["metric"], data.summary["field"],
                   data.summary.to_dict("records"))}
    scored = {(r.system, r.metric) for r in data.rows}
    rows: dict[str, dict[str, Cell]] = {}
    for system in data.systems:
        recs = [r for r in data.records if r.system == system]
        failed = sum(1 for r in recs if not r.ok)
        cells = {"turns": Cell(float(len(recs)), text=str(len(recs))),
                 "failed": Cell(float(failed), text=f"{failed}",
                                note="; ".join(sorted({f"{r.dialogue_id} turn {r.turn_index}: {r.status}"
                                                       for r in recs if not r.ok}))[:600] or None)}
        for col in columns:
            assert col.metric is not None
            hit = summary.get((system, col.metric, col.field))
            if hit is None:
                why = (f"{col.metric} was not run for this system" if (system, col.metric) not in scored
                       else f"{col.metric} gave no {col.field}")
                cells[col.key] = Cell(None, note=why)
                continue
            value = finite(hit.get(col.stat))
            ci = (finite(hit.get("ci_low")), finite(hit.get("ci_high"))) if col.stat == "mean" else (None, None)
            n = int(finite(hit.get("n")) or 0)
            missing = int(finite(hit.get("missing")) or 0)
            why = reasons.get((system, col.metric, col.test_field))
            note = None
            if col.stat == "value":  # a corpus number: its missing turns are those of the per-turn field
                base = summary.get((system, col.metric, col.test_field))
                if base is not None:
                    missing = int(finite(base.get("missing")) or 0)
                    n = int(finite(base.get("n")) or 0) + missing
            else:
                n = n + missing
            if missing and why:
                note = _why(why, n, missing)
            elif value is None:
                note = f"{col.metric} gave no {col.field}"
            cells[col.key] = Cell(value, ci, n, missing, note)
            if col.field == "wer_corpus":  # the other aggregate peers report, named
                mean = finite((summary.get((system, col.metric, "wer_dialogue_mean")) or {}).get("value"))
                if mean is not None:
                    cells[col.key].tests.append(f"corpus WER (Σ errors ÷ Σ reference words); mean over dialogues "
                                                f"of the per-turn mean (URO-Bench): {fmt(mean, 'wer')}")
        rows[system] = cells
    _mark(data, columns, rows)
    gap = _gap_columns(data, rows)
    notes = _notes(data, columns)
    return Leaderboard(columns=[Column("turns", "turns", None, "turns", "count", None),
                                Column("failed", "failed", None, "failed", "count", False)] + columns + gap,
                       rows=rows, notes=notes)


def _mark(data: ReportData, columns: list[Column], rows: dict[str, dict[str, Cell]]) -> None:
    tests = {}
    for t in data.pairwise.to_dict("records"):
        tests[(t["metric"], t["field"], t["system_a"], t["system_b"])] = t
    for col in columns:
        if col.higher_is_better is None:
            continue
        values = {s: cells[col.key].value for s, cells in rows.items() if cells[col.key].value is not None}
        if len(values) < 2:
            continue
        best_value = max(values.values()) if col.higher_is_better else min(values.values())
        best = [s for s, v in values.items() if v == best_value]
        for s in best:
            rows[s][col.key].best = True
        if len(best) != 1:
            continue
        winner = best[0]
        beaten = 0
        for other in values:
            if other == winner:
                continue
            a, b = sorted((winner, other))
            t = tests.get((col.metric, col.test_field, a, b))
            if t is None:
                rows[other][col.key].tests.append(f"no paired test against {winner} (too few shared turns)")
                continue
            diff = t["mean_difference"] if a == winner else -t["mean_difference"]
            better = (diff > 0) == bool(col.higher_is_better) and diff != 0
            p = float(t["p_value"])
            line = (f"{winner} − {other}: {diff:+.4g} on {int(t['n'])} shared turns, "
                    f"paired permutation p = {p:.3g}")
            rows[other][col.key].tests.append(line)
            rows[winner][col.key].tests.append(line)
            if better and p < SIGNIFICANCE:
                beaten += 1
        rows[winner][col.key].significant = beaten == len(values) - 1


def _gap_columns(data: ReportData, rows: dict[str, dict[str, Cell]]) -> list[Column]:
    """The text-speech gap (S2T − S2S) of the judge scores, where a system ran in both modes."""
    out: list[Column] = []
    frame = data.crossmodal
    if frame.empty:
        return out
    for (metric, field_name), group in frame.groupby(["metric", "field"], sort=False):
        if not data.metric_name(metric).startswith("judge") or group["gap_s2t_minus_s2s"].isna().all():
            continue
        key = f"gap|{metric}|{field_name}"
        out.append(Column(key, f"text−speech gap ({metric} {field_name})", metric, field_name, "gap", None,
                          description="mean in S2T minus mean in S2S of the same system: what speaking "
                                      "the reply costs in content"))
        gaps = {s: finite(g) for s, g in zip(group["system"], group["gap_s2t_minus_s2s"])}
        for system, cells in rows.items():
            gap = gaps.get(base_system(system))
            cells[key] = Cell(gap, note=None if gap is not None else "this system did not run in both S2T and S2S")
    return out


def _notes(data: ReportData, columns: list[Column]) -> list[str]:
    names = {data.metric_name(label) for label in data.metrics}
    notes = []
    if not any(n.startswith("judge") for n in names):
        notes.append("No judge scores: the judge metric was not run on these runs "
                     "(score them with `ivbench score RUN --metrics judge --judge-model … --judge-base-url …`).")
    missing = [n for n in ("asr_wer", "dnsmos", "distillmos", "utmos", "first_speech") if n not in names]
    if missing:
        notes.append(f"Not scored: {', '.join(missing)}.")
    derived = [run.name for run in data.runs if run.derived_latency]
    if derived:
        notes.append(f"Latency of {', '.join(derived)} is read off the records: the run was not scored.")
    return notes
