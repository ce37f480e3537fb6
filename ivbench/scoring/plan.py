"""Which metrics a score runs, and in what order (docs/architecture.md, "Scoring").

The defaults (DEFAULT_METRICS, less the GPU-only ones on a CPU, plus a suite task's own
scorers), each spec made a metric through the registry, and the transcript metrics that
another metric needs added and put first.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Iterable

from .. import registry
from ..errors import ConfigError
from ..metrics.base import Metric, Need
from ..registry import Spec, parse_spec

DEFAULT_METRICS = ("latency", "first_speech", "asr_wer", "ref_wer", "dnsmos", "distillmos",
                   "judge", "judge_dialogue")
# Left out of the defaults on a CPU: DistillMOS takes about a minute per audio minute there.
GPU_ONLY_DEFAULTS = ("distillmos",)
# The metrics whose text other metrics read (Need.TRANSCRIPT, Need.USER_TRANSCRIPT): they run first.
TRANSCRIPT_METRICS = {Need.USER_TRANSCRIPT: "user_transcript", Need.TRANSCRIPT: "transcript"}


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


def instantiate(spec: Spec) -> Metric:
    """The metric `spec` names, built through the registry (its options bound and checked)."""
    metric = registry.create("metrics", spec)
    if not isinstance(metric, Metric):
        raise registry.RegistryError(f"metric {spec.ref!r} made a {type(metric).__name__}, "
                                     "not an ivbench Metric (subclass ivbench.metrics.base.Metric)")
    return metric


def plan_metrics(specs: Iterable[Spec]) -> list[tuple[str, Metric]]:
    """Instantiate the metrics, adding the transcript metrics that others need, first."""
    # A metric named twice (`latency,latency`) is scored once: twice, every row was counted twice.
    # (A label is its spec written out, so one label is one spec; first mention keeps its place.)
    unique = list({s.label: s for s in specs}.values())
    chosen = [(s.label, instantiate(s)) for s in unique]
    names = {m.name for _, m in chosen}
    prerequisites: list[tuple[str, Metric]] = []
    needs = set().union(*(m.needs for _, m in chosen)) if chosen else set()
    _one_transcript_each(chosen, needs)
    for need, name in TRANSCRIPT_METRICS.items():
        if need in needs and name not in names:
            spec = parse_spec(name)
            prerequisites.append((spec.label, instantiate(spec)))
    ordered = prerequisites + chosen
    # Transcript metrics always run before the metrics that read them.
    ordered.sort(key=lambda lm: 0 if lm[1].name in TRANSCRIPT_METRICS.values() else 1)
    return ordered


def _one_transcript_each(chosen: list[tuple[str, Metric]], needs: set[Need]) -> None:
    """The metrics that read a transcript read the one transcript metric of its kind: with two
    (other options), which one they read would be an accident of the order."""
    for need, name in TRANSCRIPT_METRICS.items():
        labels = [label for label, metric in chosen if metric.name == name]
        if need in needs and len(labels) > 1:
            readers = sorted({m.name for _, m in chosen if need in m.needs})
            raise ConfigError(f"{' and '.join(labels)} are both {name} metrics, and {', '.join(readers)} "
                              f"read{'s' if len(readers) == 1 else ''} one: keep one {name} in --metrics, and "
                              "score the other in an `ivbench score` of its own (on a copy of the run)")


def specs_by_label(specs: Iterable[Spec]) -> dict[str, Spec]:
    """Each planned label's spec (the transcript metrics' too), as the Ray workers rebuild them."""
    return {name: parse_spec(name) for name in TRANSCRIPT_METRICS.values()} | {s.label: s for s in specs}
