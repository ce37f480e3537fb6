"""The worker side of the protocol: one system, loaded once, running whole dialogues
(docs/architecture.md, "Workers").

`WorkerHost` is what every backend runs: the driver's own process with `--in-process`, a worker
process (`python -m ivbench.workers.host READ_FD WRITE_FD`, this module's `main`), or such a
process under a Ray actor. The clock, the turn loop and the checks are the runner's
(`ivbench.runner.dialogue`), so a turn is timed the same way wherever it runs.

A worker process guards the run against its system: it talks to the driver over pipes of its
own (a system may close or redirect stdout), it ends with `os._exit` (a system's non-daemon
thread cannot keep it alive), it stops when the driver is gone (its parent process changes), and
while it runs a dialogue it says every second that it is alive, so a system that holds the
interpreter lock for ever is found and stopped by the driver.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from typing import Any, Optional
from collections.abc import Callable

from .. import registry
from ..errors import IvbenchError
from ..systems.base import System
from ..types import Mode
from .protocol import (HEARTBEAT_S, Beat, Bug, Channel, ChannelClosed, Close, Closed, DialogueJob, JobDone,
                       Loaded, Probe, Probed, Start)

IN_PROCESS = "in-process"  # the worker id of the driver's own process


def build_system(spec: registry.Spec) -> System:
    """Build (cheap) a system from its spec; an unknown name or bad option is the user's to fix."""
    from ..config import ConfigError

    system = registry.create("systems", spec)
    if not isinstance(system, System):
        raise ConfigError(f"system {spec.ref!r} made a {type(system).__name__}, "
                          "not an ivbench System (subclass ivbench.systems.System)")
    _check_modes(system, spec)
    return system


def _check_modes(system: System, spec: registry.Spec) -> None:
    """A system declares at least one mode, each a Mode or its name: the runner plans its work
    (and picks the default mode, the first) from them before anything loads."""
    from ..errors import IvbenchError, PluginError

    declared = getattr(system, "modes", None)
    how = "set `modes` on the class to a tuple of ivbench.types.Mode, e.g. (Mode.S2S, Mode.T2T)"
    if not isinstance(declared, (tuple, list)):  # a string would be read letter by letter
        raise PluginError(f"system {spec.ref!r}: modes {declared!r} is a {type(declared).__name__}; {how}")
    try:
        modes = system.supported_modes()
    except IvbenchError as exc:  # an unknown mode name
        raise PluginError(f"system {spec.ref!r}: modes {declared!r}: {exc}; {how}") from None
    if not modes:
        raise PluginError(f"system {spec.ref!r} declares no modes ({declared!r}); {how}")


def describe(system: System) -> dict[str, Any]:
    try:
        return system.describe()
    except Exception as exc:  # a plugin's describe() is for the manifest; its bug must not stop the run
        return {"describe_failed": f"{type(exc).__name__}: {exc}"}


def take_torch_threads() -> None:
    """torch's thread count is per thread under OpenMP: a close() that gives back the count its
    load() set in this (main) thread runs in a worker thread, so it reaches new threads but not
    this one. Take it here too, so what runs next in this thread (another load(), scoring) gets it."""
    if "torch" not in sys.modules:
        return
    import torch

    from ..runner import workers

    left = workers.call(torch.get_num_threads, 10.0, "torch.get_num_threads()")
    if isinstance(left, int) and left != torch.get_num_threads():
        torch.set_num_threads(left)


class WorkerHost:
    """A system and everything needed to run its dialogues on this worker."""

    def __init__(self, start: Start, system: Optional[System] = None) -> None:
        from ..runner.user_audio import MemoryCache, UserAudioSource

        self.start = start
        self.system = system  # built by the caller (in-process), or here
        self.device = start.device
        self.warmed = start.warmup <= 0
        self.user_audio = UserAudioSource(start.voice, MemoryCache(), device="cpu")

    def load(self) -> Loaded:
        from ..provenance import resolve_device, worker_fingerprint
        from ..runner.dialogue import set_seed

        started = time.perf_counter()
        try:
            self.device = resolve_device(self.start.device)
            set_seed(self.start.seed)
            if self.system is None:
                self.system = build_system(self.start.system.spec)
            # In the main thread: libraries may set up signal handlers or thread-bound state while
            # loading. Ctrl-C still stops it, once the native call in progress returns.
            self.system.load(self.device)
        except (Exception, SystemExit) as exc:
            from ..runner import workers

            return Loaded(self.start.worker, error=workers.error_dict(exc),
                          fingerprint=worker_fingerprint(self.device), seconds=time.perf_counter() - started)
        return Loaded(self.start.worker, info=describe(self.system), fingerprint=worker_fingerprint(self.device),
                      seconds=time.perf_counter() - started)

    def run(self, job: DialogueJob, emit: Callable[[Any], None]) -> None:
        """Warm up (before this worker's first dialogue), then the dialogue; its turns, then a
        JobDone, go to `emit`."""
        from ..runner.dialogue import dialogue_seed, run_dialogue, set_seed, warm_up
        from ..runner.user_audio import MemoryCache

        assert self.system is not None, "run() before load()"
        cache = MemoryCache(job.tts)
        self.user_audio.cache, self.user_audio.recorded = cache, job.recorded
        problem, warmed = None, False
        if not self.warmed:
            self.warmed = warmed = True
            problem = warm_up(self.system, Mode.parse(job.mode), job.dialogue, self.start.warmup,
                              self.start.turn_timeout, self.user_audio)
        set_seed(dialogue_seed(self.start.seed, job.dialogue.id))
        run_dialogue(self.system, job, self.user_audio, self.start.turn_timeout, self.start.worker, emit)
        emit(JobDone(tts=cache.added, warmup_problem=problem, warmed=warmed))

    def close(self) -> Closed:
        """`system.close()`, bounded by the turn timeout. Not in a `finally` of the run: after Ctrl-C
        or a bug the process ends, and closing could wait on a busy system."""
        from ..runner import workers

        if self.system is None:
            return Closed()
        closed = workers.call(self.system.close, self.start.turn_timeout, "system.close()")
        if isinstance(closed, workers.Failure):  # best effort: the records are already safe
            return Closed(closed.error)
        take_torch_threads()
        return Closed()


def probe(message: Probe) -> Probed:
    """What a system is (its modes, its description), built in this interpreter and not loaded."""
    try:
        system = build_system(message.system.spec)
    except IvbenchError as exc:
        return Probed(error_type=type(exc).__name__, message=str(exc))
    return Probed(modes=[m.value for m in system.supported_modes()], untrained=bool(system.untrained),
                  info=describe(system))


# --- the worker process ----------------------------------------------------------------------------

class _Heartbeat:
    """Says "alive" every HEARTBEAT_S while a dialogue runs (between jobs the driver may not read)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.busy = threading.Event()
        threading.Thread(target=self._beat, name="ivbench-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            if self.busy.is_set():
                try:
                    self.channel.send(Beat())
                except ChannelClosed:
                    return


def _watch_parent() -> None:
    """End this process when the driver (or the actor) that started it is gone, even by kill -9:
    it would otherwise keep a GPU busy for nobody."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="ivbench-parent-watch", daemon=True).start()


def _leave(code: int) -> None:
    """End the process now: a system's non-daemon threads or a C++ library's teardown must not
    keep it alive or abort it; everything the driver needs has been sent."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _serve(channel: Channel, heartbeat: _Heartbeat) -> None:
    host: Optional[WorkerHost] = None
    while True:
        message = channel.recv()
        if isinstance(message, Start):
            sys.path[:0] = [p for p in message.sys_path if p not in sys.path]
            host = WorkerHost(message)
            channel.send(host.load())
        elif isinstance(message, DialogueJob):
            assert host is not None, "a job before Start"
            heartbeat.busy.set()
            try:
                host.run(message, channel.send)
            finally:
                heartbeat.busy.clear()
        elif isinstance(message, Probe):
            sys.path[:0] = [p for p in message.sys_path if p not in sys.path]
            channel.send(probe(message))
        elif isinstance(message, Close):
            channel.send(host.close() if host is not None else Closed())
            return
        else:
            raise TypeError(f"unexpected message {type(message).__name__}")


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    channel = Channel(int(argv[0]), int(argv[1]))
    _watch_parent()
    heartbeat = _Heartbeat(channel)
    try:
        _serve(channel, heartbeat)
    except ChannelClosed:  # the driver is gone: nobody to answer
        _leave(0)
    except KeyboardInterrupt:  # the driver passes on Ctrl-C: give the system's call time to return
        from ..runner import workers

        workers.interrupted(lambda line: print(line, file=sys.stderr, flush=True))
        _leave(130)
    except BaseException:  # noqa: BLE001 - ivbench's own bug: the driver shows it
        with contextlib.suppress(ChannelClosed):
            channel.send(Bug(traceback.format_exc()))
        _leave(1)
    _leave(0)


if __name__ == "__main__":
    main()
