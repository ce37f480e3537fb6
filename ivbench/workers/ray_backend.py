"""Workers on Ray (`--workers N`, `--ray-address`; docs/architecture.md, "Workers").

Each worker is a Ray actor that hosts a worker process (`process.ProcessWorker`) speaking the
same protocol as a local one: the actor is the worker's host, the process runs the system. So a
system that crashes fails its dialogue and the actor starts a fresh process, as on one machine;
an actor that goes away (killed, its node lost) loses only its dialogue in flight, which the
driver redoes elsewhere. A system entry's `python:` names the interpreter of the process on the
actor's node. Actors ask for one GPU when the system runs on CUDA and one CPU otherwise, unless
the system entry's `resources:` says what.

Ray is imported only here, and only when a run asks for it: `pip install 'ivbench[ray]'`.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import queue
import threading
import uuid
from typing import Any, Optional
from collections.abc import Callable

from ..config import ConfigError, SystemConfig
from ..errors import EndpointError, MissingDependency
from .pool import WorkerHandle, WorkerLost
from .process import ProcessWorker, WorkerBug
from .protocol import Crashed, DialogueJob, JobDone, Loaded, Start

NAMESPACE = "ivbench"  # where worker actors are named: ivbench-<run token>-<worker id>
RECEIVE_WAIT_S = 1.0  # how long one receive() call waits for the worker's next message
PLACEMENT_NOTE_S = 60.0  # how often the driver says it is still waiting for the cluster to place an actor


def require_ray(flag: str) -> None:
    if importlib.util.find_spec("ray") is None:
        raise MissingDependency(f"{flag} runs workers on Ray, which is not installed: pip install 'ivbench[ray]'")


class _WorkerActor:
    """The Ray actor's body: a host for one worker process at a time (made a Ray class lazily)."""

    def __init__(self, python: Optional[str]) -> None:
        self.worker = ProcessWorker("?", python=python)
        self.messages: queue.Queue[Any] = queue.Queue()

    def where(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        return {"ray_node": context.get_node_id(), "ip": ray.util.get_node_ip_address(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "actor_pid": os.getpid()}

    def start(self, message: Start) -> Loaded:
        self.worker.worker_id = message.worker
        loaded = self.worker.start(message)
        loaded.fingerprint.update(self.where())
        return loaded

    def submit(self, job: DialogueJob, turn_timeout: Optional[float]) -> None:
        def relay() -> None:
            try:
                for message in self.worker.run(job, turn_timeout):
                    self.messages.put(message)
            except BaseException as exc:  # noqa: BLE001 - handed to the driver by receive()
                self.messages.put(exc)

        threading.Thread(target=relay, name="ivbench-actor-relay", daemon=True).start()

    def receive(self, wait_s: float) -> list[Any]:
        """The messages that have come, waiting up to `wait_s` for the first."""
        try:
            found = [self.messages.get(timeout=wait_s)]
        except queue.Empty:
            return []
        while True:
            try:
                found.append(self.messages.get_nowait())
            except queue.Empty:
                break
        for item in found:
            if isinstance(item, BaseException):
                raise item
        return found

    def close(self, timeout_s: Optional[float]) -> Optional[dict[str, str]]:
        return self.worker.close(timeout_s)

    def interrupt(self) -> None:
        self.worker.interrupt()

    def wait(self, timeout_s: float) -> bool:
        return self.worker.wait(timeout_s)

    def kill(self) -> None:
        self.worker.kill()


@functools.cache
def remote_class(cls: type) -> Any:
    """`ray.remote(cls)`, made once per class (Ray registers each remote class it is given)."""
    import ray

    return ray.remote(cls)


class RayWorker:
    """The driver's handle on one worker actor (a `pool.WorkerHandle`)."""

    def __init__(self, worker_id: str, name: str, options: dict[str, Any], python: Optional[str],
                 echo: Callable[[str], None]) -> None:
        self.worker_id = worker_id
        self.name = name
        self.options = options
        self.echo = echo
        # Named in a namespace of its own, so `ray.get_actor(name, namespace="ivbench")` finds it
        # from anywhere in the cluster (to look at it, or to kill it); it still dies with this driver.
        # Two threads: interrupt() must reach an actor while a receive() waits.
        self.actor = remote_class(_WorkerActor).options(name=name, namespace=NAMESPACE, max_concurrency=2,
                                             **options).remote(python)

    def _get(self, ref: Any, what: str) -> Any:
        import ray
        from ray import exceptions

        waited = 0.0
        while not ray.wait([ref], timeout=PLACEMENT_NOTE_S)[0]:
            waited += PLACEMENT_NOTE_S
            if what == "start":
                self.echo(f"worker {self.worker_id}: still waiting ({waited:g} s) for the Ray cluster to place an "
                          f"actor with {self.options}")
        try:
            return ray.get(ref)
        except exceptions.RayTaskError as exc:  # raised by ivbench's code in the actor: a bug
            raise WorkerBug(f"worker {self.worker_id} failed in {what}:\n{exc}") from None
        except exceptions.RayError as exc:  # the actor, its process or its node is gone
            raise WorkerLost(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None

    def start(self, message: Start) -> Loaded:
        loaded: Loaded = self._get(self.actor.start.remote(message), "start")
        loaded.fingerprint["actor"] = self.name
        return loaded

    def run(self, job: DialogueJob, turn_timeout: Optional[float]) -> Any:
        self._get(self.actor.submit.remote(job, turn_timeout), "submit")
        while True:
            for message in self._get(self.actor.receive.remote(RECEIVE_WAIT_S), "receive"):
                yield message
                if isinstance(message, (JobDone, Crashed)):
                    return

    def close(self, timeout_s: Optional[float]) -> Optional[dict[str, str]]:
        import ray

        try:
            error: Optional[dict[str, str]] = self._get(self.actor.close.remote(timeout_s), "close")
        except WorkerLost:
            error = None  # gone already: nothing left to close
        ray.kill(self.actor)
        return error

    def interrupt(self) -> None:
        self.actor.interrupt.remote()

    def wait(self, timeout_s: float) -> bool:
        import ray

        ref = self.actor.wait.remote(timeout_s)
        ready, _ = ray.wait([ref], timeout=timeout_s + 2)
        try:
            return bool(ready) and bool(ray.get(ready[0]))
        except Exception:  # noqa: BLE001 - an actor that is gone has nothing left to wait for
            return True

    def kill(self) -> None:
        import ray

        with contextlib.suppress(Exception):  # gone or stuck: the actor goes either way
            ray.get(self.actor.kill.remote(), timeout=5)
        ray.kill(self.actor)


def _reachable(address: str) -> None:
    """A head's host:port that refuses connections fails now, not after Ray's minutes of retries."""
    import socket

    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=10):
            pass
    except (OSError, ValueError) as exc:
        raise EndpointError(f"--ray-address {address}: no Ray head answers there ({exc}); start one with "
                            "`ray start --head`, or give its address") from None


class Cluster:
    """The run's Ray cluster: started in this process for `--workers N` (N actors on this
    machine), or joined (`--ray-address`); shut down at the end only if started here."""

    def __init__(self, workers: Optional[int], address: Optional[str], echo: Callable[[str], None]) -> None:
        self.workers = workers
        self.address = address
        self.echo = echo
        self.started = False
        self.token = uuid.uuid4().hex[:8]  # tells this run's actors from another run's in one cluster

    def __enter__(self) -> Cluster:
        import ray

        if not ray.is_initialized():
            common: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING,
                                          log_to_driver=True)
            if self.address is not None:
                _reachable(self.address)
                try:
                    ray.init(address=self.address, **common)
                except ConnectionError as exc:  # no cluster there: the user's to fix
                    raise EndpointError(f"--ray-address {self.address}: {exc}".splitlines()[0]
                                        + "; start one with `ray start --head`, or give its address") from None
            else:
                # Enough CPUs for N one-CPU actors even on a small machine: they run, and the
                # manifest says that they shared its CPUs (contention).
                ray.init(address="local", num_cpus=max(os.cpu_count() or 1, self.workers or 1), **common)
                self.started = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            import ray

            ray.shutdown()

    def resources(self) -> dict[str, float]:
        import ray

        return dict(ray.cluster_resources())

    def actor_options(self, sc: SystemConfig, device: str) -> dict[str, Any]:
        """What one actor of the system asks for: its `resources:`, or a GPU on CUDA, else a CPU."""
        if sc.resources is not None:
            wanted = dict(sc.resources)
            options: dict[str, Any] = {"num_cpus": wanted.pop("num_cpus", 1.0),
                                       "num_gpus": wanted.pop("num_gpus", 0.0)}
            if "memory" in wanted:
                options["memory"] = wanted.pop("memory")
            if wanted:
                options["resources"] = wanted
            return options
        on_cuda = device == "cuda" or (device == "auto" and self.resources().get("GPU", 0) > 0)
        return {"num_cpus": 1.0, "num_gpus": 1.0} if on_cuda else {"num_cpus": 1.0, "num_gpus": 0.0}

    def slots(self, options: dict[str, Any]) -> int:
        """--workers N; joined without it: one per GPU for GPU actors, one per node otherwise."""
        if self.workers is not None:
            return self.workers
        import ray

        gpus = float(options.get("num_gpus") or 0)
        if gpus > 0:
            return max(1, int(self.resources().get("GPU", 0) // gpus))
        return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))

    def workers_for(self, sc: SystemConfig, device: str, n_jobs: int) -> tuple[int, Callable[[int, str], WorkerHandle]]:
        options = self.actor_options(sc, device)
        slots = max(1, min(self.slots(options), n_jobs))  # no more actors than dialogues
        gpus = float(options.get("num_gpus") or 0)
        have = self.resources().get("GPU", 0)
        if gpus * slots > have:
            message = (f"system {sc.label!r}: {slots} workers × {gpus:g} GPU each need {gpus * slots:g} GPUs; the "
                       f"cluster has {have:g}")
            if self.started:  # this machine is the whole cluster: they could never all start
                raise ConfigError(f"{message}: use fewer --workers, or give the system 'resources: "
                                  "{num_gpus: 0.5}' to share GPUs (latency is then measured under contention)")
            self.echo(f"note: {message}; the others wait until the cluster has room")

        def make(slot: int, worker_id: str) -> WorkerHandle:
            return RayWorker(worker_id, f"ivbench-{self.token}-{worker_id}", options, sc.python, self.echo)

        return slots, make
