"""The scoring phase: store → scorers (batched, cached) → scores.jsonl + summary.csv.

`score_run` reads a run directory made anywhere, runs each requested metric over its
records (transcripts first when another metric needs them), and rewrites scores.jsonl in
a fixed order, so re-scoring from the cache reproduces it byte for byte. It never writes
manifest.json: what the judge was asked goes to judge.json (ivbench/store/judge_usage.py).
"""
from __future__ import annotations

import json
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..cache import SqliteCache, content_key, default_cache_dir
from ..metrics.base import DialogueItem, Metric, MetricResult, Need, ScoreItem, Status
from ..errors import RunDirError
from ..registry import Spec
from ..store import RunStore
from ..store.lock import writing
from ..store.judge_usage import JudgeUsage, remove_judge_usage, write_judge_usage
from ..store.scores import SCORES, ScoreRow, read_scores, write_scores
from ..types import TurnRecord
from .context import ScoringContext
from .plan import TRANSCRIPT_METRICS, default_metric_specs, plan_metrics, specs_by_label

if TYPE_CHECKING:
    from ..judge.settings import JudgeSettings

log = logging.getLogger("ivbench")

BATCH_SIZE = 16

Key = tuple[str, str, Optional[int]]  # (system, dialogue id, turn index; None for a dialogue)
Target = Union[ScoreItem, DialogueItem]


@dataclass
class ScoreConfig:
    metrics: Optional[list[Spec]] = None  # None: DEFAULT_METRICS
    judge: Optional[JudgeSettings] = None  # None: no judge (judge metrics are missing)
    device: str = "cpu"  # with workers, "auto" is decided by the cluster
    cache_dir: Optional[Path] = None
    use_cache: bool = True
    # Metric batches on Ray workers (docs/architecture.md, "Workers"): N actors of a local
    # cluster, or of the cluster at `ray_address`; None and None: in this process.
    workers: Optional[int] = None
    ray_address: Optional[str] = None

    @property
    def uses_ray(self) -> bool:
        return self.workers is not None or self.ray_address is not None


@dataclass
class ScoreOutcome:
    run_dir: Path
    rows: list[ScoreRow]
    metrics: dict[str, Metric]
    notes: list[str] = field(default_factory=list)


@dataclass
class MetricRun:
    """One metric's result for every target, and, when it could not be loaded (here or on a
    worker), the reason its results give: "LABEL could not be loaded: Type: message"."""

    results: dict[Key, MetricResult] = field(default_factory=dict)
    unloadable: Optional[str] = None
    cached: int = 0  # results read from the score cache


def _encode(result: MetricResult) -> bytes:
    return json.dumps(result.to_json(), sort_keys=True, separators=(",", ":"), default=str).encode()


def _decode(blob: bytes) -> MetricResult:
    return MetricResult.from_json(json.loads(blob))


def _items(records: list[TurnRecord], run_dir: Path) -> list[ScoreItem]:
    ordered = sorted(records, key=lambda r: (r.system, r.dialogue_id, r.turn_index))
    items = [ScoreItem(record=r, run_dir=run_dir) for r in ordered]
    for before, item in zip(items, items[1:]):
        a, b = before.record, item.record
        if (a.system, a.dialogue_id, a.turn_index + 1) == (b.system, b.dialogue_id, b.turn_index):
            item.previous = before
    return items


def _dialogue_items(items: list[ScoreItem]) -> list[DialogueItem]:
    grouped: dict[tuple[str, str], list[ScoreItem]] = defaultdict(list)
    for item in items:
        grouped[(item.record.system, item.record.dialogue_id)].append(item)
    return [DialogueItem(turns=sorted(turns, key=lambda t: t.record.turn_index))
            for _, turns in sorted(grouped.items())]


def _missing_transcript(metric: Metric, item: Target,
                        transcripts: dict[str, dict[Key, MetricResult]]) -> Optional[MetricResult]:
    """A metric that reads a transcript gets MISSING when the transcript could not be made.
    (A transcript that does not apply, e.g. of a text-only reply, is the metric's own business.)"""
    if not isinstance(item, ScoreItem):
        return None
    for need, attr in ((Need.TRANSCRIPT, "transcript"), (Need.USER_TRANSCRIPT, "user_transcript")):
        if need not in metric.needs or getattr(item, attr) is not None:
            continue
        result = transcripts.get(attr, {}).get(item.key)
        if result is not None and result.status != Status.NOT_APPLICABLE.value:
            return MetricResult.unavailable(metric.fields, Status.MISSING,
                                            f"no {attr.replace('_', ' ')}: {result.reason}")
    return None


class _Unloadable(Exception):
    """A metric that could not be loaded: "Type: message", as every item's reason says."""


def _load(label: str, metric: Metric, context: ScoringContext, workers: Any, spec: Optional[Spec]) -> Any:
    """The metric's identity, loading it here or (remote) on a worker; raises _Unloadable."""
    if workers is None:
        try:
            metric.load(context)
            return metric.identity()
        except Exception as exc:
            raise _Unloadable(f"{type(exc).__name__}: {exc}") from None
    answer = workers.prepare(label, spec)
    if "error" in answer:
        raise _Unloadable(answer["error"])
    return answer["identity"]


def _scored(label: str, metric: Metric, batches: list[list[Any]], workers: Any,
            spec: Optional[Spec]) -> Iterator[tuple[int, list[MetricResult], Optional[str]]]:
    """(batch index, one result per item, why the metric could not be loaded or None) for every
    batch, scored here or on workers."""
    def failed(batch: list[Any], reason: str, status: Status = Status.FAILED) -> list[MetricResult]:
        return [MetricResult.unavailable(metric.fields, status, reason) for _ in batch]

    if workers is None:
        for index, batch in enumerate(batches):
            try:
                yield index, metric.score(batch), None
            except Exception as exc:
                reason = f"{label} failed: {type(exc).__name__}: {exc}"
                log.warning(reason, exc_info=True)
                yield index, failed(batch, reason), None
        return
    for index, answer in workers.score(label, spec, batches):
        if "results" in answer:
            yield index, answer["results"], None
        elif "unloadable" in answer:  # loaded on another worker, but not on this one
            reason = f"{label} could not be loaded: {answer['unloadable']}"
            yield index, failed(batches[index], reason, Status.MISSING), reason
        else:
            reason = f"{label} failed: {answer['failed']}"
            log.warning(reason)
            yield index, failed(batches[index], reason), None


def _unloaded(metric: Metric, targets: list[Target], reason: str) -> MetricRun:
    """A metric that cannot load is missing on every target (that its precheck does not settle),
    not a crashed run. Not logged: the score prints the reason once, as a note (`MetricRun.unloadable`)."""
    results = {target.key: (metric.precheck(target) or MetricResult.unavailable(metric.fields, Status.MISSING, reason))
               for target in targets}
    return MetricRun(results, unloadable=reason)


def _from_cache(metric: Metric, identity: Any, targets: list[Target], cache: SqliteCache,
                transcripts: dict[str, dict[Key, MetricResult]], run: MetricRun) -> list[tuple[Target, Optional[str]]]:
    """Settle what needs no computing (prechecks, missing transcripts, cache hits) into `run`;
    the rest, each with its cache key (None: not cached)."""
    pending: list[tuple[Target, Optional[str]]] = []
    for target in targets:
        early = metric.precheck(target) or _missing_transcript(metric, target, transcripts)
        if early is not None:
            run.results[target.key] = early
            continue
        try:
            inputs = metric.cache_inputs(target)
        except OSError:
            # An input file that cannot be read (a run copied without its audio/, a deleted
            # WAV) cannot be hashed: the item is not cached, and the metric's own scoring fails
            # it with its reason, as it fails any unreadable file, instead of the whole run.
            inputs = None
        key = None if inputs is None else content_key("metric", identity, inputs)
        cached = cache.get(key) if key is not None else None
        if cached is not None:
            run.results[target.key] = _decode(cached)
            run.cached += 1
        else:
            pending.append((target, key))
    return pending


def _run_metric(label: str, metric: Metric, targets: list[Target], context: ScoringContext,
                cache: SqliteCache, transcripts: dict[str, dict[Key, MetricResult]],
                progress: Callable[[int], None], workers: Any = None,
                spec: Optional[Spec] = None) -> MetricRun:
    """Every target's result: precheck, cache, then the rest scored in batches. With `workers`
    (and a metric that needs no judge) the batches are scored on them; everything else, the
    cache included, happens here either way."""
    if workers is not None and Need.JUDGE in metric.needs:
        workers = None  # HTTP requests with their own concurrency, cache and accounting: here
    try:
        identity = _load(label, metric, context, workers, spec)
    except _Unloadable as exc:
        progress(len(targets))
        return _unloaded(metric, targets, f"{label} could not be loaded: {exc}")
    run = MetricRun()
    pending = _from_cache(metric, identity, targets, cache, transcripts, run)
    if Need.JUDGE in metric.needs and context.judge_client is not None:
        context.judge_client.count_cached(run.cached)  # judge.json counts them (they cost nothing)
    progress(len(targets) - len(pending))
    batches = [pending[start:start + BATCH_SIZE] for start in range(0, len(pending), BATCH_SIZE)]
    for index, computed, unloadable in _scored(label, metric, [[t for t, _ in b] for b in batches], workers, spec):
        batch = batches[index]
        if len(computed) != len(batch):
            raise RuntimeError(f"metric {label} returned {len(computed)} results for {len(batch)} items")
        run.unloadable = run.unloadable or unloadable
        for (target, key), result in zip(batch, computed):
            blob = _encode(result)
            # Round-trip through JSON, so a fresh result and a cached one are the same bytes.
            run.results[target.key] = _decode(blob)
            if key is not None and result.status in (Status.OK.value, Status.NOT_APPLICABLE.value):
                cache.put(key, blob)
        progress(len(batch))
    return run


def score_run(run_dir: Path, config: Optional[ScoreConfig] = None, progress: bool = True,
              echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> ScoreOutcome:
    """Score every record of a run and write scores.jsonl, summary.csv (and judge.json)."""
    config = config or ScoreConfig()
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    store.read_manifest()  # not a run directory: said before anything else
    store.check_writable("scores.jsonl and summary.csv")  # now, not after the scoring's work
    # One writer at a time: an eval adding records (or another score) is refused (store/lock.py).
    with writing(run_dir), _workers(config, run_dir, echo) as workers:
        manifest = store.read_manifest()
        records = store.records()
        device = workers.device if workers is not None else config.device
        return _score(run_dir, manifest, records, config, device, workers, progress, echo)


@contextmanager
def _workers(config: ScoreConfig, run_dir: Path, echo: Callable[[str], None]) -> Iterator[Any]:
    if not config.uses_ray:
        yield None
        return
    from ..workers.ray_backend import require_ray
    from ..workers.scoring import ScoringWorkers

    require_ray("--workers" if config.workers is not None else "--ray-address")
    with ScoringWorkers(config.workers, config.ray_address, config.device, run_dir, echo) as workers:
        yield workers


def _take_transcripts(name: str, results: dict[Key, MetricResult], items: list[ScoreItem]) -> None:
    """Copy a transcript metric's text into the items, for the metrics that read it."""
    for item in items:
        result = results.get(item.key)
        if result is not None and result.status == Status.OK.value:
            setattr(item, name, result.details.get("text"))


def _rows(label: str, targets: list[Target], results: dict[Key, MetricResult]) -> list[ScoreRow]:
    rows = []
    for target in targets:
        first = target.record if isinstance(target, ScoreItem) else target.turns[0].record
        turn_index = target.record.turn_index if isinstance(target, ScoreItem) else None
        rows.append(ScoreRow(label, first.system, first.dialogue_id, turn_index, first.mode, results[target.key]))
    return rows


def _close_judge(context: ScoringContext) -> Optional[JudgeUsage]:
    """What the run's judge client was asked (for judge.json), closing it; None without a judge."""
    client = context.judge_client
    if client is None:
        return None
    context.judge_client = None
    try:
        return JudgeUsage(settings=client.settings.to_json(), usage=client.stats.to_json(client.settings))
    finally:
        client.close()


def _dropped(run_dir: Path, rows: list[ScoreRow]) -> list[str]:
    """What the scores.jsonl being replaced held that this score does not: a score writes the
    metrics it is given, so `--metrics utmos` after eval's defaults leaves only utmos, and the
    user should hear which results went (the cache may not have them: a run scored elsewhere)."""
    try:
        before = {row.metric for row in read_scores(run_dir)}
    except RunDirError:
        return []  # a damaged scores.jsonl: nothing to tell about
    gone = sorted(before - {row.metric for row in rows})
    if not gone:
        return []
    return [f"{run_dir / SCORES} no longer holds {', '.join(gone)} (scored before, not asked for now); "
            "name them in --metrics too to keep them (read from the cache where it has them)"]


def _score(run_dir: Path, manifest: dict[str, Any], records: list[TurnRecord], config: ScoreConfig,
           device: str, workers: Any, progress: bool, echo: Callable[[str], None]) -> ScoreOutcome:
    from tqdm import tqdm

    from . import summary

    specs = config.metrics if config.metrics is not None else default_metric_specs(manifest, device)
    by_label = specs_by_label(specs)
    planned = plan_metrics(specs)
    items = _items(records, run_dir)
    dialogues = _dialogue_items(items)
    cache_dir = config.cache_dir or default_cache_dir()
    context = ScoringContext(device=device, judge=config.judge, cache_dir=cache_dir, use_cache=config.use_cache)
    cache = SqliteCache(cache_dir / "scores.sqlite", enabled=config.use_cache)
    total = sum(len(dialogues) if m.level == "dialogue" else len(items) for _, m in planned)
    bar = tqdm(total=total, unit="score", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    rows: list[ScoreRow] = []
    transcripts: dict[str, dict[Key, MetricResult]] = {}
    notes: list[str] = []
    try:
        for label, metric in planned:
            bar.set_postfix_str(label, refresh=False)
            targets: list[Target] = list(dialogues) if metric.level == "dialogue" else list(items)
            run = _run_metric(label, metric, targets, context, cache, transcripts, bar.update, workers,
                              by_label.get(label))
            if metric.name in TRANSCRIPT_METRICS.values():
                transcripts[metric.name] = run.results
                _take_transcripts(metric.name, run.results, items)
            rows += _rows(label, targets, run.results)
            if run.unloadable is not None:
                notes.append(run.unloadable)
    finally:
        bar.close()
        cache.close()
        judge = _close_judge(context)
    rows.sort(key=lambda r: r.sort_key)
    notes += _dropped(run_dir, rows)
    write_scores(run_dir, rows)
    # judge.json goes with the scores.jsonl it describes: a score cut short (Ctrl-C) writes neither.
    if judge is None:
        remove_judge_usage(run_dir)  # an older score's judge.json would describe other scores
    else:
        write_judge_usage(run_dir, judge)
    metrics = {label: metric for label, metric in planned}
    summary.write_summary(run_dir, records, rows, metrics, manifest)
    for note in notes:
        echo(f"note: {note}")
    return ScoreOutcome(run_dir=run_dir, rows=rows, metrics=metrics, notes=notes)
