"""What a report shows, read from one or more run directories and combined.

Several runs (other systems, other versions of one system) combine into one set of
records and score rows. A system label that occurs in more than one run gets the run's
name appended, so nothing is merged by accident. Summaries, paired tests and cross-modal
gaps are recomputed over the combined scores with the functions that write summary.csv,
so a single run's report shows exactly the numbers of its summary.csv.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError
from ..store import RunStore
from ..types import (
    REFERENCES_ANSWERS,
    REFERENCES_EXPECTED_WORDS,
    MetricInfo,
    TurnRecord,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..store.judge_usage import JudgeUsage
    from ..store.scores import ScoreRow

TRANSCRIPT_METRICS = ("transcript", "user_transcript")
NO_TURNS = "none yet (no turn recorded)"  # a run's systems, before its first record


@dataclass
class Run:
    path: Path
    name: str
    manifest: dict[str, Any]
    records: list[TurnRecord]
    rows: list[ScoreRow]
    labels: dict[str, str] = field(default_factory=dict)  # system label in the run -> in the report
    derived_latency: bool = False  # latency read off the records (no latency in its scores.jsonl)
    scored: bool = False  # it has a scores.jsonl with rows (perhaps of other metrics than latency)
    judge: Optional[JudgeUsage] = None  # judge.json: what its scoring asked of the judge


@dataclass
class ReportData:
    runs: list[Run]
    records: list[TurnRecord]
    rows: list[ScoreRow]
    systems: list[str]
    metrics: dict[str, MetricInfo]  # metric label -> its name and fields
    frame: pd.DataFrame
    summary: pd.DataFrame
    pairwise: pd.DataFrame
    crossmodal: pd.DataFrame
    references: dict[str, str] = field(default_factory=dict)  # system -> what its task's references are

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r.task for r in self.records))

    def metric_name(self, label: str) -> str:
        return self.metrics[label].name if label in self.metrics else label.split(":", 1)[0]

    def wording_only(self, label: str, system: str) -> bool:
        """Whether metric `label` of `system` compares the reply's words with a free-form reference
        answer (ref_wer on a task declaring `references: answers`): kept, but no quality number."""
        return (self.metric_name(label) == "ref_wer"
                and self.references.get(system, REFERENCES_ANSWERS) != REFERENCES_EXPECTED_WORDS)

    def wording_only_base(self, label: str, base: str) -> bool:
        """`wording_only` for any system run from base system `base` (the cross-modal table,
        whose means would mix it in)."""
        from ..scoring.summary import base_system

        mine = [s for s in self.systems if base_system(s) == base] or [base]
        return any(self.wording_only(label, s) for s in mine)


def _run_names(paths: list[Path]) -> list[str]:
    names = [p.resolve().name or str(p) for p in paths]
    counts = Counter(names)
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        seen[name] += 1
        out.append(name if counts[name] == 1 else f"{name}#{seen[name]}")
    return out


def _latency_rows(records: list[TurnRecord], run_dir: Path) -> list[ScoreRow]:
    """Latency per turn straight from the records, for a run that was never scored."""
    from ..metrics.base import ScoreItem
    from ..metrics.latency import LatencyMetric
    from ..store.scores import ScoreRow

    results = LatencyMetric().evaluate([ScoreItem(record=record, run_dir=run_dir) for record in records])
    return [ScoreRow("latency", record.system, record.dialogue_id, record.turn_index, record.mode, result)
            for record, result in zip(records, results)]


def load_run(path: Path, name: str) -> Run:
    from ..store.judge_usage import read_judge_usage
    from ..store.scores import read_scores

    store = RunStore(path)
    manifest = store.read_manifest()
    records = store.records()
    rows = read_scores(path)
    scored = bool(rows)
    derived = False
    if records and not any(r.metric == "latency" for r in rows):
        rows = rows + _latency_rows(records, path)
        derived = True
    return Run(path=Path(path), name=name, manifest=manifest, records=records, rows=rows,
               derived_latency=derived, scored=scored, judge=read_judge_usage(path))


def _metric_infos(labels: list[str], runs: list[Run]) -> dict[str, MetricInfo]:
    """Each metric label's name and fields, as the runs' summary.csv files recorded them: the
    report imports no metric (a plugin metric need not be installed where a report is made).
    Latency read off the records of an unscored run is the built-in latency metric's."""
    from ..metrics.latency import LatencyMetric
    from ..scoring.summary import SUMMARY, read_metric_infos

    known: dict[str, MetricInfo] = {}
    for run in runs:
        for label, info in read_metric_infos(run.path / SUMMARY).items():
            fields = {**known[label].fields, **info.fields} if label in known else info.fields
            known[label] = MetricInfo(info.name, fields)
        if run.derived_latency and "latency" not in known:
            known["latency"] = MetricInfo(LatencyMetric.name, dict(LatencyMetric.fields))
    # A metric that gave no number (a transcript) is in no summary: its name is its label's.
    return {label: known.get(label) or _builtin_info(label) or MetricInfo(label.split(":", 1)[0], {})
            for label in labels}


def _builtin_info(label: str) -> Optional[MetricInfo]:
    """A built-in metric's name and fields, for a run whose summary.csv is missing or was cut short
    (scoring interrupted between scores.jsonl and summary.csv, a partial copy): without them its
    columns lost which way is better, and with it the best and the paired tests. Built-in metric
    modules import nothing heavy; a plugin's is never imported here."""
    from ..errors import IvbenchError
    from ..registry import BUILTINS, parse_spec
    from ..scoring.plan import instantiate

    try:
        spec = parse_spec(label)
        if spec.ref not in BUILTINS["metrics"]:
            return None
        metric = instantiate(spec)
    except (IvbenchError, ImportError):
        return None
    return MetricInfo(metric.name, dict(metric.fields)) if metric.fields else None


def _refuse_repeats(paths: list[Path]) -> None:
    """One run named twice would be compared with itself as two systems (paired tests of p = 1)."""
    seen: dict[Path, Path] = {}
    for path in paths:
        first = seen.setdefault(path.resolve(), path)
        if first is not path:
            also = "" if str(first) == str(path) else f" (as {first} and as {path})"
            raise ConfigError(f"report: the run directory {first} is named twice{also}; name each run once")


def _task_of(run: Run) -> str:
    return str((run.manifest.get("task") or {}).get("name") or (run.manifest.get("config") or {}).get("task"))


def _relabel(runs: list[Run]) -> tuple[list[str], list[TurnRecord], list[ScoreRow]]:
    """The report's system labels (a system of several runs is told apart by its run's name),
    and every run's records and score rows under them."""
    owners: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        for system in dict.fromkeys(r.system for r in run.records):
            owners[system].append(run.name)
    systems: list[str] = []
    records: list[TurnRecord] = []
    rows: list[ScoreRow] = []
    for run in runs:
        for system in dict.fromkeys([r.system for r in run.records] + [r.system for r in run.rows]):
            label = system if len(owners.get(system, [])) <= 1 else f"{system} [{run.name}]"
            run.labels[system] = label
            if label not in systems:
                systems.append(label)
        records += [dataclasses.replace(r, system=run.labels[r.system]) for r in run.records]
        rows += [dataclasses.replace(r, system=run.labels[r.system]) for r in run.rows]
    return systems, records, rows


def load_report_data(paths: list[Path]) -> ReportData:
    from ..scoring.summary import (
        crossmodal,
        pairwise_tests,
        references_of,
        score_frame,
        summarize_scores,
    )

    paths = [Path(p) for p in paths]
    if not paths:
        raise ConfigError("report: name at least one run directory")
    _refuse_repeats(paths)
    runs = [load_run(p, name) for p, name in zip(paths, _run_names(paths))]
    systems, records, rows = _relabel(runs)
    labels = list(dict.fromkeys(r.metric for r in rows))
    metrics = _metric_infos(labels, runs)
    frame = score_frame(rows)
    tasks = {label: _task_of(run) for run in runs for label in run.labels.values()}
    if len(set(tasks.values())) > 1:
        frame["task"] = frame["system"].map(tasks)
    categories = {r.dialogue_id: r.category for r in records}  # for the suites' headlines
    references = {label: references_of(run.manifest) for run in runs for label in run.labels.values()}
    return ReportData(runs=runs, records=records, rows=rows, systems=systems, metrics=metrics,
                      frame=frame, summary=summarize_scores(frame, metrics, categories),
                      pairwise=pairwise_tests(frame, metrics), crossmodal=crossmodal(frame),
                      references=references)


def judge_models(data: ReportData) -> list[str]:
    """The judge models named by the runs' judge.json or by the judge results themselves."""
    found: list[str] = []
    for run in data.runs:
        if run.judge is not None and run.judge.model:
            found.append(run.judge.model)
    for row in data.rows:
        model = row.result.details.get("judge_model") if isinstance(row.result.details, dict) else None
        if model:
            found.append(str(model))
    return list(dict.fromkeys(found))


def details_text(details: dict[str, Any], limit: int = 1500) -> str:
    """A metric's details, one "key: JSON value" line each, cut at `limit` characters."""
    text = "\n".join(f"{key}: {json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)}"
                     for key, value in sorted(details.items()))
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"
