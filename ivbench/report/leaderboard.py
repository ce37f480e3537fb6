"""The leaderboard: one row per system, one column per headline number, each cell with its
confidence interval, how many values it rests on, why any are missing, whether it is the
best of its column, and how it compares with the best under the paired test.

Known metrics show the numbers of `ivbench.scoring.summary.HEADLINE`; any other metric shows the mean
of each of its fields, so a plugin metric appears without the report knowing it.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

from ..scoring.summary import HEADLINE, base_system, headline
from ..types import REFERENCES_ANSWERS
from .data import TRANSCRIPT_METRICS, ReportData

# Metric names in the order their columns appear; others follow in the order they were run.
ORDER = ("judge", "judge_dialogue", "asr_wer", "ref_wer", "utmos", "dnsmos", "distillmos",
         "latency", "first_speech")
# After a column title or axis label: which way is better (nothing where neither is).
ARROWS = {True: " ↑", False: " ↓", None: ""}
SIGNIFICANCE = 0.05
# A corpus-level number has no per-turn values to test; its per-turn counterpart is tested.
TEST_FIELD = {"wer_corpus": "wer", "wer_dialogue_mean": "wer"}
WORDING_ONLY = ("this system's task declares its references are free-form answers (`references: answers`): "
                "a WER against them measures wording, not quality; see the note below the leaderboard")


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
    if 0 < size < 0.01:  # two decimals would show it as 0.00 (an RTF of 0.0025): a zero it is not
        return f"{value:.2g}"
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


def _picks(data: ReportData, label: str, kinds: list[str], present: set[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(field, statistic, title) of each column metric `label` gets."""
    name = data.metric_name(label)
    if name in HEADLINE:  # the headline of any of the runs' tasks
        return list(dict.fromkeys(pick for kind in kinds for pick in headline(name, kind)))
    fields = getattr(data.metrics[label], "fields", {}) or {}
    # A metric the report does not know: every field's mean.
    return [(f, "mean", f"{label} {f}") for f in
            list(fields) + sorted(f for m, f in present if m == label and f not in fields)]


def _column(label: str, fields: dict[str, Any], field_name: str, stat: str, title: str) -> Column:
    info = fields.get(TEST_FIELD.get(field_name, field_name))
    hib = False if field_name in TEST_FIELD else info.higher_is_better if info is not None else None
    description = info.description if info is not None and info.description else f"{label} {field_name}"
    return Column(key=f"{label}|{field_name}|{stat}", title=title, metric=label, field=field_name, stat=stat,
                  higher_is_better=hib, unit=info.unit if info is not None else "", description=description)


def _columns(data: ReportData) -> list[Column]:
    labels = [label for label in data.metrics if data.metric_name(label) not in TRANSCRIPT_METRICS]
    labels.sort(key=lambda label: metric_rank(data.metric_name(label)))
    present = {(m, f) for m, f in zip(data.summary["metric"], data.summary["field"])}
    kinds = sorted(set(data.references.values()) or {REFERENCES_ANSWERS})
    names = Counter(data.metric_name(label) for label in labels)
    columns: list[Column] = []
    for label in labels:
        name = data.metric_name(label)
        fields = getattr(data.metrics[label], "fields", {}) or {}
        for field_name, stat, title in _picks(data, label, kinds, present):
            if (label, field_name) not in present:
                continue
            if name in HEADLINE and names[name] > 1:
                title = f"{title} ({label})"  # several configurations of one metric
            columns.append(_column(label, fields, field_name, stat, title))
    return columns


def _why(reasons: Counter, n: int, missing: int) -> str:
    listed = "; ".join(f"{reason} ({count})" if len(reasons) > 1 or count != missing else reason
                       for reason, count in reasons.most_common(4))
    more = f"; … {len(reasons) - 4} more reasons" if len(reasons) > 4 else ""
    if missing == n:
        return f"no value on any of its {n} results: {listed}{more}"
    return f"{missing} of {n} results have no value: {listed}{more}"


class _Results:
    """What a leaderboard cell is read from: the summary rows, and why values are missing."""

    def __init__(self, data: ReportData) -> None:
        # (system, metric, field) -> reasons of the missing values
        self.reasons: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
        for row in data.rows:
            for name, value in row.result.values.items():
                if value is None:
                    reason = row.result.reason or f"status {row.result.status}"
                    self.reasons[(row.system, row.metric, name)][reason] += 1
        self.summary = {(s, m, f): row for s, m, f, row in
                        zip(data.summary["system"], data.summary["metric"], data.summary["field"],
                            data.summary.to_dict("records"))}
        self.scored = {(r.system, r.metric) for r in data.rows}
        self.data = data

    def cell(self, system: str, col: Column) -> Cell:
        assert col.metric is not None
        if self.data.wording_only(col.metric, system):  # the column is another run's headline
            return Cell(None, note=WORDING_ONLY)
        hit = self.summary.get((system, col.metric, col.field))
        if hit is None:
            return Cell(None, note=(f"{col.metric} was not run for this system" if (system, col.metric) not in
                                    self.scored else f"{col.metric} gave no {col.field}"))
        value = finite(hit.get(col.stat))
        ci = (finite(hit.get("ci_low")), finite(hit.get("ci_high"))) if col.stat == "mean" else (None, None)
        n = int(finite(hit.get("n")) or 0)
        missing = int(finite(hit.get("missing")) or 0)
        if col.stat == "value":  # a corpus number: its missing turns are those of the per-turn field
            base = self.summary.get((system, col.metric, col.test_field))
            if base is not None:
                missing = int(finite(base.get("missing")) or 0)
                n = int(finite(base.get("n")) or 0) + missing
        else:
            n = n + missing
        why = self.reasons.get((system, col.metric, col.test_field))
        note = (_why(why, n, missing) if missing and why
                else f"{col.metric} gave no {col.field}" if value is None else None)
        cell = Cell(value, ci, n, missing, note)
        if col.field == "wer_corpus":  # the other aggregate peers report, named
            mean = finite((self.summary.get((system, col.metric, "wer_dialogue_mean")) or {}).get("value"))
            if mean is not None:
                cell.tests.append(f"corpus WER (Σ errors ÷ Σ reference words); mean over dialogues "
                                  f"of the per-turn mean (URO-Bench): {fmt(mean, 'wer')}")
        return cell


def _count_cells(data: ReportData, system: str) -> dict[str, Cell]:
    recs = [r for r in data.records if r.system == system]
    failed = sum(1 for r in recs if not r.ok)
    return {"turns": Cell(float(len(recs)), text=str(len(recs))),
            "failed": Cell(float(failed), text=f"{failed}",
                           note="; ".join(sorted({f"{r.dialogue_id} turn {r.turn_index}: {r.status}"
                                                  for r in recs if not r.ok}))[:600] or None)}


def build_leaderboard(data: ReportData) -> Leaderboard:
    columns = _columns(data)
    results = _Results(data)
    rows: dict[str, dict[str, Cell]] = {}
    for system in data.systems:
        rows[system] = _count_cells(data, system) | {col.key: results.cell(system, col) for col in columns}
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
        values: dict[str, float] = {s: v for s, cells in rows.items() if (v := cells[col.key].value) is not None}
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
    for scored, why in ((False, "the run was not scored"),
                        (True, "its scores.jsonl has no latency (scored with --metrics without latency)")):
        derived = [run.name for run in data.runs if run.derived_latency and run.scored == scored]
        if derived:
            notes.append(f"Latency of {', '.join(derived)} is read off the records: {why}.")
    mixed = _mixed_tasks_note(data)
    if mixed:
        notes.append(mixed)
    wording = _wording_only_note(data)
    if wording:
        notes.append(wording)
    return notes


def _mixed_tasks_note(data: ReportData) -> Optional[str]:
    """Runs of different tasks share the columns: say that their numbers are over other dialogues."""
    systems: dict[str, list[str]] = {}
    for record in data.records:
        systems.setdefault(record.task, [])
        if record.system not in systems[record.task]:
            systems[record.task].append(record.system)
    if len(systems) < 2:
        return None
    each = "; ".join(f"{task}: {', '.join(names)}" for task, names in systems.items())
    return (f"These runs are of different tasks ({each}): the numbers in a column are over different "
            "dialogues, and paired tests compare systems of the same task only.")


def _wording_only_note(data: ReportData) -> Optional[str]:
    """Why ref_wer is no headline (or n/a) for systems whose task's references are answers."""
    labels = [label for label in data.metrics if data.metric_name(label) == "ref_wer"]
    systems = [s for s in data.systems if any(data.wording_only(label, s) for label in labels)]
    if not systems:
        return None
    s = data.summary
    found = (finite(v) for v in s[s["metric"].isin(labels) & s["system"].isin(systems)
                                  & (s["field"] == "wer_corpus")]["value"])
    values = [v for v in found if v is not None]
    seen = f" (here {fmt(min(values), 'wer')}–{fmt(max(values), 'wer')})" if values else ""
    tasks = sorted({r.task for r in data.records if r.system in systems})
    return (f"ref_wer is not a quality number for {', '.join(tasks)}: the task declares its references are "
            "free-form answers (task header `references: answers`), and a good reply says the same in its own "
            f"words, so its WER against them is typically 200–300 %{seen} and measures wording, not quality. "
            "It is kept in summary.csv and in each reply's scores (\"ref_wer · wording vs the reference "
            "answer\"). A task whose references are the words the reply should say (read-aloud, T2S) declares "
            "`references: expected-words` and gets ref-WER as a headline column.")
