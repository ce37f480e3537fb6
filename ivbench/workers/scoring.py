"""Metric batches on Ray workers (`ivbench score RUN --workers N`; docs/architecture.md, "Workers").

The driver plans the metrics, prechecks every item, reads the caches and makes the batches
exactly as a local score does; only `metric.score(batch)` runs on an actor. Each actor builds
and loads a metric once (on its first batch) and keeps it; the first actor to load a metric
also gives its identity, which names the metric's cache entries. Results come back to the
driver, the one writer of the SQLite caches and of scores.jsonl, which handles them as a local
score would — so scores.jsonl of a distributed score is byte-identical to a local one (same
models, same device type).

Actors ask for a GPU when the scoring device is CUDA, and one CPU, to which each is pinned (the
actors of a node get its cores in turn), so a metric that sizes its thread pool by the cores it
may use runs one thread per worker: N workers use N cores. A local score (no workers) uses
every core of its machine in one process. An actor that sees the run directory (same machine,
or a shared file system) reads its audio there; one that does not gets the batch's audio files
from the driver. A lost actor's batches go to the others. The judge's metrics stay in the
driver: their work is HTTP requests that its client already keeps `concurrency` at a time,
against the endpoint's rate limit, with its request cache and usage accounting in one place.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional
from collections.abc import Callable

from ..registry import Spec
from .pool import WorkersLost

Batch = list[Any]  # ScoreItem or DialogueItem


class _ScoringActor:
    """The actor's body (made a Ray class lazily): metrics loaded once, batches scored."""

    def __init__(self, device: str, run_dir: str, manifest_sha: str) -> None:
        from ..metrics.base import ScoringContext
        from ..provenance import resolve_device

        self.device = resolve_device(device)
        self.context = ScoringContext(device=self.device)  # no judge: its metrics stay in the driver
        self.metrics: dict[str, Any] = {}
        manifest = Path(run_dir) / "manifest.json"
        self.sees_run_dir = manifest.is_file() and hashlib.sha256(manifest.read_bytes()).hexdigest() == manifest_sha
        self.mirror: Optional[Path] = None

    def where(self) -> dict[str, Any]:
        import ray

        from ..provenance import worker_fingerprint

        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        return {**worker_fingerprint(self.device), "ray_node": ray.get_runtime_context().get_node_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "sees_run_dir": self.sees_run_dir, "cores": cores}

    def pin(self, cores: list[int]) -> None:
        """Keep to these cores (before any metric loads, so thread pools are sized to them)."""
        if cores and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)

    def _metric(self, label: str, spec: Spec) -> Any:
        if label not in self.metrics:
            from ..scoring.plan import instantiate

            metric = instantiate(spec)
            metric.load(self.context)
            self.metrics[label] = metric
        return self.metrics[label]

    def prepare(self, label: str, spec: Spec) -> dict[str, Any]:
        """Load the metric; its identity, or why it cannot load (as a local score says it)."""
        try:
            return {"identity": self._metric(label, spec).identity()}
        except Exception as exc:  # noqa: BLE001 - a metric that cannot load is data for the driver
            return {"error": f"{type(exc).__name__}: {exc}"}

    def score(self, label: str, spec: Spec, batch: Batch, audio: Optional[dict[str, bytes]]) -> dict[str, Any]:
        try:
            metric = self._metric(label, spec)
        except Exception as exc:  # noqa: BLE001
            return {"unloadable": f"{type(exc).__name__}: {exc}"}
        if audio is not None:
            _relocate(batch, self._mirror(audio))
        try:
            return {"results": metric.score(batch)}
        except Exception as exc:  # noqa: BLE001 - the batch fails, as it does locally
            return {"failed": f"{type(exc).__name__}: {exc}"}

    def _mirror(self, audio: dict[str, bytes]) -> Path:
        """A folder laid out like the run directory, holding the audio the driver sent."""
        if self.mirror is None:
            self.mirror = Path(tempfile.mkdtemp(prefix="ivbench-score-"))
        for rel, data in audio.items():
            path = self.mirror / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return self.mirror


def _turns(batch: Batch) -> Iterator[Any]:
    """Every ScoreItem of a batch, with the turns before them (metrics may read those too)."""
    for item in batch:
        for turn in getattr(item, "turns", None) or [item]:
            while turn is not None:
                yield turn
                turn = turn.previous


def _relocate(batch: Batch, run_dir: Path) -> None:
    for turn in _turns(batch):
        turn.run_dir = run_dir


def _audio_files(batch: Batch, run_dir: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for turn in _turns(batch):
        for rel in (turn.record.reply_audio, turn.record.user_audio):
            if rel is not None and rel not in files and (run_dir / rel).is_file():
                files[rel] = (run_dir / rel).read_bytes()
    return files


def _light(batch: Batch) -> Batch:
    """The batch as it travels: absolute run paths, no audio the driver happened to load."""
    for turn in _turns(batch):
        turn._audio_cache.clear()
        turn.run_dir = Path(turn.run_dir).resolve()
    return batch


def _shares(places: list[dict[str, Any]]) -> dict[int, list[int]]:
    """Each actor's core: a scoring worker is one CPU (what it asks Ray for), and a metric that
    sizes its thread pool by the cores it may use then takes one thread, not the node's count
    (N actors with a thread per core each would fight over the cores). The actors of one node get
    its cores in turn; more actors than cores share them."""
    by_node: dict[str, list[int]] = {}
    for i, where in enumerate(places):
        by_node.setdefault(str(where["ray_node"]), []).append(i)
    shares: dict[int, list[int]] = {}
    for actors in by_node.values():
        cores = places[actors[0]]["cores"]
        for n, i in enumerate(actors):
            if cores:
                shares[i] = [cores[n % len(cores)]]
    return shares




class ScoringWorkers:
    """N scoring actors for one `score_run`; `score` spreads one metric's batches over them."""

    def __init__(self, workers: Optional[int], address: Optional[str], device: str, run_dir: Path,
                 echo: Callable[[str], None]) -> None:
        from .ray_backend import Cluster

        self.cluster = Cluster(workers, address, echo)
        self.device = device
        self.run_dir = Path(run_dir).resolve()
        self.echo = echo
        self.actors: list[Any] = []
        self.sees: dict[int, bool] = {}
        self.fingerprints: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> ScoringWorkers:
        import ray

        from .ray_backend import remote_class

        self.cluster.__enter__()
        # "auto" is decided by the cluster, not by the driver (which may have no GPU).
        gpus = self.cluster.resources().get("GPU", 0)
        on_cuda = self.device == "cuda" or (self.device == "auto" and gpus > 0)
        self.device = "cuda" if on_cuda else "cpu"
        options = {"num_cpus": 1.0, "num_gpus": 1.0 if on_cuda else 0.0}
        slots = self.cluster.slots(options)
        sha = hashlib.sha256((self.run_dir / "manifest.json").read_bytes()).hexdigest()
        self.actors = [remote_class(_ScoringActor).options(**options).remote(self.device, str(self.run_dir), sha)
                       for _ in range(slots)]
        places = ray.get([actor.where.remote() for actor in self.actors])
        for i, where in enumerate(places):
            self.sees[i] = bool(where["sees_run_dir"])
            self.fingerprints[f"s{i + 1}"] = where
        ray.get([self.actors[i].pin.remote(cores) for i, cores in _shares(places).items()])
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        for actor in self.actors:
            if actor is not None:  # None: lost already
                ray.kill(actor)
        self.cluster.__exit__(*exc)

    def prepare(self, label: str, spec: Spec) -> dict[str, Any]:
        """Load the metric on one actor: {"identity": …} or {"error": "Type: message"}."""
        import ray
        from ray import exceptions

        for actor in list(self.actors):
            try:
                answer: dict[str, Any] = ray.get(actor.prepare.remote(label, spec))
                return answer
            except exceptions.RayActorError:
                self._drop(actor)
        raise WorkersLost("every scoring worker was lost; scores.jsonl was not written: run the command again")

    def _drop(self, actor: Any) -> None:
        index = self.actors.index(actor)
        self.actors[index] = None
        self.echo(f"scoring worker s{index + 1} was lost; its batches go to the others")
        if not any(a is not None for a in self.actors):
            raise WorkersLost("every scoring worker was lost; scores.jsonl was not written: run the command again")

    def score(self, label: str, spec: Spec, batches: list[Batch]) -> Iterator[tuple[int, dict[str, Any]]]:
        """(batch index, the actor's answer) as batches finish; each batch is scored once."""
        import ray
        from ray import exceptions

        todo = list(range(len(batches)))[::-1]
        running: dict[Any, tuple[int, int]] = {}  # ref -> (actor index, batch index)

        def submit(index: int) -> None:
            batch_index = todo.pop()
            batch = _light(batches[batch_index])
            audio = None if self.sees[index] else _audio_files(batch, self.run_dir)
            running[self.actors[index].score.remote(label, spec, batch, audio)] = (index, batch_index)

        for index, actor in enumerate(self.actors):
            if actor is not None and todo:
                submit(index)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            index, batch_index = running.pop(ready[0])
            try:
                answer = ray.get(ready[0])
            except exceptions.RayActorError:
                todo.append(batch_index)
                self._drop(self.actors[index])
                idle = [i for i, a in enumerate(self.actors) if a is not None and i not in
                        {i for i, _ in running.values()}]
                if idle and todo:
                    submit(idle[0])
                continue
            yield batch_index, answer
            if todo:
                submit(index)

