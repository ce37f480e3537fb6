"""The results table (pandas): scores → per-system summary with confidence intervals,
paired tests between systems, cross-modal gaps, and the console leaderboard.

Files written next to scores.jsonl:
- summary.csv: one row per system × metric × field: n, missing, mean with 95% CI
  (bootstrap over dialogues), p50, p95; WER metrics add corpus WER (Σerrors / Σreference
  words) and the per-dialogue mean (mean over turns, then over dialogues, as URO-Bench);
- pairwise.csv: each pair of systems on the turns both scored: mean difference, paired
  permutation p-value, effect size (Cohen's d_z);
- crossmodal.csv: for systems run in several modes, each mode's mean and the text-speech
  gap (S2T − S2S).
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from collections.abc import Mapping, Sequence

import numpy as np

from .stats import clustered_bootstrap_ci, paired_permutation_test
from ..store.scores import CROSSMODAL, PAIRWISE, SUMMARY
from ..types import (REFERENCE_KINDS, REFERENCES_ANSWERS, REFERENCES_EXPECTED_WORDS, FieldInfo, MetricInfo,
                    TurnRecord)

if TYPE_CHECKING:
    import pandas as pd

    from ..store.scores import ScoreRow

# A metric as the tables need it: anything with `name` and `fields` (a Metric, a MetricInfo).
Metrics = Mapping[str, Any]


# What the leaderboards show of each metric: (field, statistic, column title). A metric listed
# with no columns is known but no headline number.
HEADLINE: dict[str, list[tuple[str, str, str]]] = {
    "judge": [("score", "mean", "judge")],
    "judge_dialogue": [("score", "mean", "dialogue judge")],
    "asr_wer": [("wer_corpus", "value", "ASR-WER")],
    # Against a reference *answer* to a free-form question a good reply still scores 200-300 %
    # WER: it measures wording, not quality. Only where the task declares its references are the
    # words the reply should say (`references: expected-words`) is it a headline (below).
    "ref_wer": [],
    "utmos": [("mos", "mean", "UTMOS")],
    "dnsmos": [("ovrl", "mean", "DNSMOS")],
    "distillmos": [("mos", "mean", "DistillMOS")],
    "latency": [("first_audio_ms", "p50", "1st audio p50 ms"), ("first_audio_ms", "p95", "1st audio p95 ms")],
    "first_speech": [("first_speech_ms", "p50", "1st speech p50 ms")],
}
RTF = ("latency", "rtf", "mean", "RTF")
EXPECTED_WORDS_HEADLINE: dict[str, list[tuple[str, str, str]]] = {"ref_wer": [("wer_corpus", "value", "ref-WER")]}


def references_of(manifest: Optional[dict[str, Any]]) -> str:
    """What the run's task declared its references to be (`answers` for runs made before the
    task header said)."""
    task = manifest.get("task") if isinstance(manifest, dict) else None
    value = task.get("references") if isinstance(task, dict) else None
    return value if value in REFERENCE_KINDS else REFERENCES_ANSWERS


def headline(name: str, references: str = REFERENCES_ANSWERS) -> list[tuple[str, str, str]]:
    """The headline numbers of metric `name` on a task whose references are `references`."""
    picks = EXPECTED_WORDS_HEADLINE.get(name) if references == REFERENCES_EXPECTED_WORDS else None
    picks = list(HEADLINE.get(name, []) if picks is None else picks)
    return picks + [RTF[1:]] if name == RTF[0] else picks


def _suite_headlines() -> None:
    from ..suites.catalog import headline_columns

    HEADLINE.update(headline_columns())


_suite_headlines()


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The q-th percentile (linear interpolation); None when there is nothing to summarise."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def base_system(label: str) -> str:
    """`cascade@s2t` -> `cascade`: the runner suffixes the mode when a system ran in several."""
    return label.rsplit("@", 1)[0] if "@" in label else label


def score_frame(rows: Sequence[ScoreRow]) -> pd.DataFrame:
    """One row per (score row, field): the long form every summary is computed from."""
    import pandas as pd

    flat = [{"metric": r.metric, "system": r.system, "dialogue_id": r.dialogue_id,
             "turn_index": r.turn_index, "mode": r.mode, "status": r.result.status,
             "field": name, "value": value}
            for r in rows for name, value in r.result.values.items()]
    columns = ["metric", "system", "dialogue_id", "turn_index", "mode", "status", "field", "value"]
    frame = pd.DataFrame(flat, columns=columns)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame


def _stats_row(values: pd.DataFrame) -> dict[str, Any]:
    present = values.dropna(subset=["value"])
    data = present["value"].to_numpy(dtype=float)
    groups = [g["value"].to_numpy(dtype=float) for _, g in present.groupby("dialogue_id", sort=True)]
    low, high = clustered_bootstrap_ci(groups)
    return {"n": int(data.size), "missing": int(len(values) - data.size),
            "mean": float(data.mean()) if data.size else None, "ci_low": low, "ci_high": high,
            "p50": percentile(data, 50), "p95": percentile(data, 95)}


SUMMARY_COLUMNS = ["system", "metric", "field", "n", "missing", "mean", "ci_low", "ci_high", "p50", "p95",
                   "value", "metric_name", "higher_is_better", "unit", "description"]


def _metric_name(metrics: Metrics, label: str) -> str:
    return metrics[label].name if label in metrics else label.split(":", 1)[0]


def summarize_scores(frame: pd.DataFrame, metrics: Metrics,
                     categories: Optional[dict[str, Optional[str]]] = None) -> pd.DataFrame:
    """summary.csv: per system × metric × field statistics, with what each field is (metric name,
    direction, unit, description), so that tables and reports read it without metric objects.
    `categories` (dialogue id -> category) feeds the metrics' suite headlines (headlines.py)."""
    import pandas as pd

    from .headlines import headline_rows

    out: list[dict[str, Any]] = []
    for (system, metric, name), values in frame.groupby(["system", "metric", "field"], sort=True):
        info = metrics[metric].fields.get(name) if metric in metrics else None
        out.append({"system": system, "metric": metric, "field": name, **_stats_row(values),
                    "value": None, "metric_name": _metric_name(metrics, metric),
                    "higher_is_better": None if info is None else info.higher_is_better,
                    "unit": "" if info is None else info.unit,
                    "description": "" if info is None else info.description})
    for (system, metric), values in frame.groupby(["system", "metric"], sort=True):
        fields = set(values["field"])
        if {"errors", "ref_words"} <= fields:
            # pivot_table drops columns whose values are all missing (no turn had a reference, or
            # every turn failed): put them back so such a metric summarises to no value, not a crash.
            wide = (values.pivot_table(index=["dialogue_id", "turn_index"], columns="field", values="value",
                                       aggfunc="first", dropna=False)
                    .reindex(columns=sorted(fields)).dropna(subset=["errors", "ref_words"]))
            total_words = wide["ref_words"].sum()
            corpus = float(wide["errors"].sum() / total_words) if total_words > 0 else None
            per_dialogue = wide.groupby(level="dialogue_id")["wer"].mean() if "wer" in wide else pd.Series(dtype=float)
            name = _metric_name(metrics, metric)
            out.append({"system": system, "metric": metric, "field": "wer_corpus", "n": int(len(wide)),
                        "value": corpus, "metric_name": name, "higher_is_better": False, "unit": "",
                        "description": "corpus WER: Σ errors ÷ Σ reference words"})
            out.append({"system": system, "metric": metric, "field": "wer_dialogue_mean",
                        "n": int(per_dialogue.size),
                        "value": float(per_dialogue.mean()) if per_dialogue.size else None,
                        "metric_name": name, "higher_is_better": False, "unit": "",
                        "description": "mean over dialogues of the per-turn mean WER (URO-Bench)"})
    out += headline_rows(frame, metrics, categories or {})
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def read_metric_infos(path: Path) -> dict[str, MetricInfo]:
    """Each metric label's name and fields as a summary.csv recorded them; {} without one.
    (Summaries written before they recorded the name take it from the label.)"""
    import csv

    if not Path(path).exists():
        return {}
    names: dict[str, str] = {}
    fields: dict[str, dict[str, FieldInfo]] = {}
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            label = row.get("metric")
            if not label or not row.get("field"):  # a file cut short or damaged: what it lacks is not known
                continue
            names.setdefault(label, row.get("metric_name") or label.split(":", 1)[0])
            hib = {"True": True, "False": False}.get(row.get("higher_is_better") or "")
            fields.setdefault(label, {})[row["field"]] = FieldInfo(hib, row.get("unit") or "",
                                                                  row.get("description") or "")
    return {label: MetricInfo(names[label], fields[label]) for label in names}


def pairwise_tests(frame: pd.DataFrame, metrics: Metrics) -> pd.DataFrame:
    import pandas as pd

    out: list[dict[str, Any]] = []
    systems = sorted(frame["system"].unique())
    # A report of runs of several tasks gives each system its task: systems of different tasks
    # are never paired, though their dialogue ids may coincide (d0, d1… of two task files).
    task = dict(zip(frame["system"], frame["task"])) if "task" in frame.columns else {}
    for (metric, name), values in frame.groupby(["metric", "field"], sort=True):
        info = metrics[metric].fields.get(name) if metric in metrics else None
        if info is None or info.higher_is_better is None:
            continue
        # Each system's values by (dialogue, turn), in the frame's order: a pair is tested on the
        # turns both have, in system a's order (dicts here: a join per pair costs seconds for 20 systems).
        by_system = {s: dict(zip(zip(g["dialogue_id"], g["turn_index"]), g["value"]))
                     for s, g in values.dropna(subset=["value"]).groupby("system")}
        for a, b in combinations(systems, 2):
            if a not in by_system or b not in by_system or task.get(a) != task.get(b):
                continue
            a_values, b_values = by_system[a], by_system[b]
            shared = [key for key in a_values if key in b_values]
            test = paired_permutation_test([a_values[k] for k in shared], [b_values[k] for k in shared])
            if test is None:
                continue
            out.append({"metric": metric, "field": name, "system_a": a, "system_b": b, "n": test.n,
                        "mean_difference": test.mean_difference, "ci_low": test.ci_low,
                        "ci_high": test.ci_high, "p_value": test.p_value, "effect_size": test.effect_size,
                        "higher_is_better": info.higher_is_better})
    columns = ["metric", "field", "system_a", "system_b", "n", "mean_difference", "ci_low", "ci_high",
               "p_value", "effect_size", "higher_is_better"]
    return pd.DataFrame(out, columns=columns)


def crossmodal(frame: pd.DataFrame) -> pd.DataFrame:
    """Each mode's mean per base system, and the text-speech gap S2T − S2S."""
    import pandas as pd

    frame = frame.assign(base=frame["system"].map(base_system))
    out: list[dict[str, Any]] = []
    for (base, metric, name), values in frame.groupby(["base", "metric", "field"], sort=True):
        means = values.dropna(subset=["value"]).groupby("mode")["value"].mean()
        if len(values["mode"].unique()) < 2:
            continue
        row: dict[str, Any] = {"system": base, "metric": metric, "field": name}
        for mode in ("s2s", "s2t", "t2s", "t2t"):
            row[mode] = float(means[mode]) if mode in means else None
        row["gap_s2t_minus_s2s"] = (row["s2t"] - row["s2s"]
                                    if row["s2t"] is not None and row["s2s"] is not None else None)
        out.append(row)
    columns = ["system", "metric", "field", "s2s", "s2t", "t2s", "t2t", "gap_s2t_minus_s2s"]
    return pd.DataFrame(out, columns=columns)


def write_summary(run_dir: Path, records: Sequence[TurnRecord], rows: Sequence[ScoreRow],
                  metrics: Metrics, manifest: dict[str, Any]) -> pd.DataFrame:
    frame = score_frame(rows)
    summary = summarize_scores(frame, metrics, {r.dialogue_id: r.category for r in records})
    summary.to_csv(run_dir / SUMMARY, index=False, float_format="%.6g")
    pairwise_tests(frame, metrics).to_csv(run_dir / PAIRWISE, index=False, float_format="%.6g")
    crossmodal(frame).to_csv(run_dir / CROSSMODAL, index=False, float_format="%.6g")
    return summary
