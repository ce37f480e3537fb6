"""The scoring phase: store → scorers (batched, cached) → scores.jsonl + summary.csv.

`score_run` reads a run directory made anywhere, runs each requested metric over its
records (transcripts first when another metric needs them), and rewrites scores.jsonl in
a fixed order, so re-scoring from the cache reproduces it byte for byte.
"""
from __future__ import annotations

import json
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional
from collections.abc import Callable, Iterable

from . import registry
from .cache import SqliteCache, content_key, default_cache_dir
from .metrics.base import (DialogueItem, Metric, MetricResult, Need, ScoreItem, ScoringContext,
                           Status)
from .registry import Spec, parse_spec
from .store import RunStore
from .store.scores import ScoreRow, write_scores
from .types import TurnRecord

log = logging.getLogger("ivbench")

DEFAULT_METRICS = ("latency", "first_speech", "asr_wer", "ref_wer", "dnsmos", "distillmos",
                   "judge", "judge_dialogue")
# Left out of the defaults on a CPU: DistillMOS takes about a minute per audio minute there.
GPU_ONLY_DEFAULTS = ("distillmos",)
BATCH_SIZE = 16


@dataclass
class ScoreConfig:
    metrics: Optional[list[Spec]] = None  # None: DEFAULT_METRICS
    judge: Optional[Any] = None  # ivbench.judge.JudgeSettings
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


def _encode(result: MetricResult) -> bytes:
    return json.dumps(result.to_json(), sort_keys=True, separators=(",", ":"), default=str).encode()


def _decode(blob: bytes) -> MetricResult:
    return MetricResult.from_json(json.loads(blob))


def default_metric_specs(manifest: dict[str, Any], device: str = "cpu") -> list[Spec]:
    """DEFAULT_METRICS (without the GPU-only ones on a CPU); the turn judge uses the prompt
    the task names (e.g. mt-bench)."""
    judge_prompt = (manifest.get("task") or {}).get("judge_prompt")
    specs = []
    for name in DEFAULT_METRICS:
        if not device.startswith("cuda") and name in GPU_ONLY_DEFAULTS:
            continue
        extra = {"prompt": judge_prompt} if name == "judge" and judge_prompt else None
        specs.append(parse_spec(name, extra=extra))
    # A suite's task names its own scorers (ivbench/suites): they join the defaults.
    specs += [parse_spec(str(name)) for name in ((manifest.get("task") or {}).get("options") or {}).get("scorers", [])]
    return specs


def _metric_label(spec: Spec) -> str:
    return spec.label


def _instantiate(spec: Spec) -> Metric:
    metric = registry.create("metrics", spec)
    if not isinstance(metric, Metric):
        raise registry.RegistryError(f"metric {spec.ref!r} made a {type(metric).__name__}, "
                                     "not an ivbench Metric (subclass ivbench.metrics.base.Metric)")
    return metric


def plan_metrics(specs: Iterable[Spec]) -> list[tuple[str, Metric]]:
    """Instantiate the metrics, adding the transcript metrics that others need, first."""
    chosen = [(_metric_label(s), _instantiate(s)) for s in specs]
    names = {m.name for _, m in chosen}
    prerequisites: list[tuple[str, Metric]] = []
    needs = set().union(*(m.needs for _, m in chosen)) if chosen else set()
    for need, name in ((Need.USER_TRANSCRIPT, "user_transcript"), (Need.TRANSCRIPT, "transcript")):
        if need in needs and name not in names:
            spec = parse_spec(name)
            prerequisites.append((spec.label, _instantiate(spec)))
    ordered = prerequisites + chosen
    # Transcript metrics always run before the metrics that read them.
    ordered.sort(key=lambda lm: 0 if lm[1].name in ("transcript", "user_transcript") else 1)
    return ordered


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


def _missing_transcript(metric: Metric, item: Any, transcripts: dict[str, dict]) -> Optional[MetricResult]:
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


class _Unloadable(Exception):
    """A metric that could not be loaded: "Type: message", as every item's reason says."""


def _scored(label: str, metric: Metric, batches: list[list[Any]], workers: Any,
            spec: Optional[Spec]) -> Iterator[tuple[int, list[MetricResult]]]:
    """(batch index, one result per item) for every batch, scored here or on workers."""
    def failed(batch: list[Any], reason: str, status: Status = Status.FAILED) -> list[MetricResult]:
        return [MetricResult.unavailable(metric.fields, status, reason) for _ in batch]

    if workers is None:
        for index, batch in enumerate(batches):
            try:
                yield index, metric.score(batch)
            except Exception as exc:
                reason = f"{label} failed: {type(exc).__name__}: {exc}"
                log.warning(reason, exc_info=True)
                yield index, failed(batch, reason)
        return
    for index, answer in workers.score(label, spec, batches):
        if "results" in answer:
            yield index, answer["results"]
        elif "unloadable" in answer:
            yield index, failed(batches[index], f"{label} could not be loaded: {answer['unloadable']}",
                                Status.MISSING)
        else:
            reason = f"{label} failed: {answer['failed']}"
            log.warning(reason)
            yield index, failed(batches[index], reason)


def _run_metric(label: str, metric: Metric, targets: list[Any], context: ScoringContext,
                cache: SqliteCache, transcripts: dict[str, dict],
                progress: Callable[[int], None], workers: Any = None,
                spec: Optional[Spec] = None) -> dict[Any, MetricResult]:
    """Every target's result: precheck, cache, then the rest scored in batches. With `workers`
    (and a metric that needs no judge) the batches are scored on them; everything else, the
    cache included, happens here either way."""
    results: dict[Any, MetricResult] = {}
    if workers is not None and Need.JUDGE in metric.needs:
        workers = None  # HTTP requests with their own concurrency, cache and accounting: here
    try:
        identity = _load(label, metric, context, workers, spec)
    except _Unloadable as exc:  # a metric that cannot load is missing, not a crashed run
        reason = f"{label} could not be loaded: {exc}"
        log.warning(reason)
        for target in targets:
            results[target.key] = (metric.precheck(target) or
                                   MetricResult.unavailable(metric.fields, Status.MISSING, reason))
        progress(len(targets))
        return results
    pending: list[tuple[Any, Optional[str]]] = []
    for target in targets:
        early = metric.precheck(target) or _missing_transcript(metric, target, transcripts)
        if early is not None:
            results[target.key] = early
            continue
        inputs = metric.cache_inputs(target)
        key = None if inputs is None else content_key("metric", identity, inputs)
        cached = cache.get(key) if key is not None else None
        if cached is not None:
            results[target.key] = _decode(cached)
        else:
            pending.append((target, key))
    progress(len(targets) - len(pending))
    batches = [pending[start:start + BATCH_SIZE] for start in range(0, len(pending), BATCH_SIZE)]
    for index, computed in _scored(label, metric, [[t for t, _ in b] for b in batches], workers, spec):
        batch = batches[index]
        if len(computed) != len(batch):
            raise RuntimeError(f"metric {label} returned {len(computed)} results for {len(batch)} items")
        for (target, key), result in zip(batch, computed):
            blob = _encode(result)
            # Round-trip through JSON, so a fresh result and a cached one are the same bytes.
            results[target.key] = _decode(blob)
            if key is not None and result.status in (Status.OK.value, Status.NOT_APPLICABLE.value):
                cache.put(key, blob)
        progress(len(batch))
    return results


def score_run(run_dir: Path, config: Optional[ScoreConfig] = None, progress: bool = True,
              echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> ScoreOutcome:
    """Score every record of a run and write scores.jsonl and summary.csv."""
    config = config or ScoreConfig()
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    manifest = store.read_manifest()
    records = store.records()
    with _workers(config, run_dir, echo) as workers:
        device = workers.device if workers is not None else config.device
        return _score(run_dir, store, manifest, records, config, device, workers, progress, echo)


@contextmanager
def _workers(config: ScoreConfig, run_dir: Path, echo: Callable[[str], None]) -> Iterator[Any]:
    if not config.uses_ray:
        yield None
        return
    from .workers.ray_backend import require_ray
    from .workers.scoring import ScoringWorkers

    require_ray("--workers" if config.workers is not None else "--ray-address")
    with ScoringWorkers(config.workers, config.ray_address, config.device, run_dir, echo) as workers:
        yield workers


def _score(run_dir: Path, store: RunStore, manifest: dict[str, Any], records: list[TurnRecord],
           config: ScoreConfig, device: str, workers: Any, progress: bool,
           echo: Callable[[str], None]) -> ScoreOutcome:
    from tqdm import tqdm

    from .table import write_summary

    specs = config.metrics if config.metrics is not None else default_metric_specs(manifest, device)
    by_label = {"transcript": parse_spec("transcript"), "user_transcript": parse_spec("user_transcript"),
                **{_metric_label(s): s for s in specs}}
    planned = plan_metrics(specs)
    items = _items(records, run_dir)
    dialogues = _dialogue_items(items)
    cache_dir = config.cache_dir or default_cache_dir()
    context = ScoringContext(device=device, judge=config.judge,
                             shared={"cache_dir": cache_dir, "use_cache": config.use_cache})
    cache = SqliteCache(cache_dir / "scores.sqlite", enabled=config.use_cache)
    total = sum(len(dialogues) if m.level == "dialogue" else len(items) for _, m in planned)
    bar = tqdm(total=total, unit="score", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    rows: list[ScoreRow] = []
    transcripts: dict[str, dict] = {}
    notes: list[str] = []
    try:
        for label, metric in planned:
            bar.set_postfix_str(label, refresh=False)
            targets = dialogues if metric.level == "dialogue" else items
            results = _run_metric(label, metric, targets, context, cache, transcripts, bar.update, workers,
                                  by_label.get(label))
            if metric.name in ("transcript", "user_transcript"):
                transcripts[metric.name] = results
                attr = "transcript" if metric.name == "transcript" else "user_transcript"
                for item in items:
                    result = results.get(item.key)
                    if result is not None and result.status == Status.OK.value:
                        setattr(item, attr, result.details.get("text"))
            for target in targets:
                first = target.record if isinstance(target, ScoreItem) else target.turns[0].record
                turn_index = target.record.turn_index if isinstance(target, ScoreItem) else None
                rows.append(ScoreRow(label, first.system, first.dialogue_id, turn_index, first.mode,
                                     results[target.key]))
            failed_load = [r for r in results.values() if r.reason and "could not be loaded" in r.reason]
            if failed_load:
                notes.append(failed_load[0].reason or "")
    finally:
        bar.close()
        cache.close()
        judge_client = context.shared.pop("judge_client", None)
        if judge_client is not None:
            manifest["judge"] = {"settings": config.judge.to_json(),
                                 "usage": judge_client.stats.to_json(config.judge)}
            store.write_manifest(manifest)
            judge_client.close()
    rows.sort(key=lambda r: r.sort_key)
    write_scores(run_dir, rows)
    metrics = {label: metric for label, metric in planned}
    write_summary(run_dir, records, rows, metrics, manifest)
    for note in notes:
        echo(f"note: {note}")
    return ScoreOutcome(run_dir=run_dir, rows=rows, metrics=metrics, notes=notes)
