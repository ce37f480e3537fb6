"""Dialogues over workers, the driver's side (docs/architecture.md, "Workers").

Jobs (whole dialogues) wait in one queue. Each worker slot has a thread in the driver that
starts its worker (which loads the system), then takes a job, sends it, relays what comes back,
and takes the next: dynamic load balancing, and a dialogue never moves between workers mid-way.
Everything a worker sends becomes an event on one queue that the driver's main thread reads,
and only the main thread writes the run directory (through the `Sink`), so writes stay those of
one process: appended, flushed and fsynced one record at a time.

What can happen to a job:
- done: its turns came back, then its JobDone;
- crashed: its worker process died or stopped answering: the turn in flight fails with the
  reason and the rest of the dialogue is skipped (the system did it; redoing it would crash
  again); the slot starts a fresh worker;
- lost: the worker's host went away (a Ray actor killed, a node lost): the dialogue is set
  aside and redone from its first turn by whichever worker is free.
A worker whose system cannot load fails every job not yet run with that error.

With `--in-process` there is one slot and no thread: the system runs in the main thread.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional, Protocol
from collections.abc import Callable

from ..errors import IvbenchError
from .host import WorkerHost
from .protocol import Crashed, DialogueJob, JobDone, Loaded, Start, TurnDone

MAX_REPLACEMENTS = 3  # hosts lost per slot before the slot gives up (a node that keeps dying)


class WorkerLost(Exception):
    """The worker's host is gone (not the system's doing): its job is redone elsewhere."""

    job: Optional[DialogueJob] = None  # the job in flight, set on the way out of the slot's loop


class WorkersLost(IvbenchError):
    """Every worker was lost before the run finished; the same command resumes it."""


class WorkerHandle(Protocol):
    worker_id: str

    def start(self, message: Start) -> Loaded: ...

    def run(self, job: DialogueJob, turn_timeout: Optional[float]) -> Iterator[Any]: ...

    def close(self, timeout_s: Optional[float]) -> Optional[dict[str, str]]: ...

    def interrupt(self) -> None: ...

    def wait(self, timeout_s: float) -> bool: ...

    def kill(self) -> None: ...


class Sink(Protocol):
    """What the driver does with what workers send (the runner writes the run directory)."""

    def loaded(self, loaded: Loaded) -> None: ...

    def turn(self, job: DialogueJob, done: TurnDone) -> None: ...

    def finished(self, job: DialogueJob, done: JobDone) -> None: ...

    def crashed(self, job: DialogueJob, worker: str, turns_received: int, error: dict[str, str]) -> None: ...

    def not_run(self, job: DialogueJob, error: dict[str, str]) -> None: ...

    def lost(self, job: DialogueJob) -> DialogueJob: ...

    def closed(self, worker: str, error: Optional[dict[str, str]]) -> None: ...


@dataclass
class Event:
    kind: str  # loaded, turn, done, crashed, lost, closed, ended, bug, note
    worker: str
    job: Optional[DialogueJob] = None
    payload: Any = None


class Ids:
    """Worker ids of one session: w1, w2…, a fresh one for every worker started (a worker
    restarted after a crash is another worker, with its own fingerprint). A resumed run's
    session starts after the ids its earlier sessions used (`first`), so an id names one worker
    of the whole run: a record's `worker` is never another session's worker of the same name."""

    def __init__(self, first: int = 1) -> None:
        self._count = itertools.count(first)
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            return f"w{next(self._count)}"


class Pool:
    """Runs jobs on `slots` workers made by `make(slot)`; `start(worker_id)` is the Start message."""

    def __init__(self, make: Callable[[int, str], WorkerHandle], slots: int, start: Callable[[str], Start],
                 turn_timeout: Optional[float], echo: Callable[[str], None], ids: Optional[Ids] = None,
                 prepare: Callable[[DialogueJob], DialogueJob] = lambda job: job) -> None:
        self.make = make
        self.prepare = prepare
        self.slots = slots
        self.start_message = start
        self.turn_timeout = turn_timeout
        self.echo = echo
        self.ids = ids or Ids()
        self.jobs: queue.Queue[Optional[DialogueJob]] = queue.Queue()
        self.events: queue.Queue[Event] = queue.Queue()
        self.handles: dict[str, WorkerHandle] = {}
        self._handles_lock = threading.Lock()
        self._load_error: Optional[dict[str, str]] = None

    # -- the main thread ---------------------------------------------------------------------------
    def run(self, jobs: list[DialogueJob], sink: Sink) -> None:
        outstanding = {job.key for job in jobs}
        for job in jobs:
            self.jobs.put(job)
        threads = [threading.Thread(target=self._feed, args=(slot,), name=f"ivbench-slot-{slot}", daemon=True)
                   for slot in range(self.slots)]
        for thread in threads:
            thread.start()
        running = len(threads)
        stopping = False
        try:
            while running:
                if not outstanding and not stopping:
                    stopping = True
                    self.jobs.put(None)  # each slot that takes it puts it back for the next
                try:
                    event = self.events.get(timeout=0.5)
                except queue.Empty:
                    continue
                running -= event.kind == "ended"
                self._handle(event, sink, outstanding)
        except KeyboardInterrupt:
            self._interrupt(sink)
            raise
        except BaseException:  # a bug, here or relayed from a slot: leave no worker running
            self._stop_all()
            raise
        if outstanding:
            raise WorkersLost(f"every worker was lost with {len(outstanding)} dialogues left to run; what was "
                              "finished is saved and the same command resumes the rest")

    def _handle(self, event: Event, sink: Sink, outstanding: set[tuple[str, str]]) -> None:
        job = event.job
        if event.kind == "loaded":
            sink.loaded(event.payload)
            if event.payload.error is not None:
                self._fail_queued(event.payload.error, sink, outstanding)
        elif event.kind == "turn" and job is not None:
            sink.turn(job, event.payload)
        elif event.kind == "done" and job is not None:
            sink.finished(job, event.payload)
            outstanding.discard(job.key)
        elif event.kind == "crashed" and job is not None:
            turns, error = event.payload
            sink.crashed(job, event.worker, turns, error)
            outstanding.discard(job.key)
        elif event.kind == "not_run" and job is not None:
            sink.not_run(job, event.payload)
            outstanding.discard(job.key)
        elif event.kind == "lost" and job is not None:
            self.jobs.put(sink.lost(job))
        elif event.kind == "closed":
            sink.closed(event.worker, event.payload)
        elif event.kind == "note":
            self.echo(event.payload)
        elif event.kind == "bug":
            raise event.payload

    def _fail_queued(self, error: dict[str, str], sink: Sink, outstanding: set[tuple[str, str]]) -> None:
        """A system that cannot load on a worker fails every dialogue not yet run, as it would locally
        (a slot that takes a job after this sends it back as "not_run")."""
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self.jobs.put(None)
                return
            sink.not_run(job, error)
            outstanding.discard(job.key)

    def _stop_all(self) -> None:
        with self._handles_lock:
            handles = list(self.handles.values())
        for handle in handles:
            handle.kill()

    def _interrupt(self, sink: Sink) -> None:
        """Ctrl-C: pass it on to every worker, give them the grace a system gets in-process, keep
        the turns they finished meanwhile; a second Ctrl-C stops them at once."""
        with self._handles_lock:
            handles = list(self.handles.values())
        for handle in handles:
            handle.interrupt()
        from ..runner.workers import INTERRUPT_GRACE_S

        deadline = time.monotonic() + INTERRUPT_GRACE_S + 2
        try:
            for handle in handles:
                if not handle.wait(max(0.0, deadline - time.monotonic())):
                    handle.kill()
        except KeyboardInterrupt:
            for handle in handles:
                handle.kill()
        while True:  # turns that arrived before their worker stopped are finished: keep them
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            if event.kind == "turn" and event.job is not None:
                sink.turn(event.job, event.payload)

    # -- a slot's thread ---------------------------------------------------------------------------
    def _feed(self, slot: int) -> None:
        worker_id = self.ids.next()
        try:
            self._serve_slot(slot, worker_id)
        except Exception as exc:  # noqa: BLE001 - ivbench's bug: the main thread raises it
            self.events.put(Event("bug", worker_id, payload=exc))
        finally:
            self.events.put(Event("ended", worker_id))

    def _start(self, slot: int, worker_id: str, handle: Optional[WorkerHandle]) -> Optional[WorkerHandle]:
        """A started worker for the slot (a new one when `handle` is None), or None when its
        system could not load (the main thread has been told)."""
        if handle is None:
            handle = self.make(slot, worker_id)
        handle.worker_id = worker_id
        with self._handles_lock:
            self.handles[worker_id] = handle
        loaded = handle.start(self.start_message(worker_id))
        if loaded.error is not None and self._load_error is None:
            self._load_error = loaded.error  # before the event: no slot may start a job after it
        self.events.put(Event("loaded", worker_id, payload=loaded))
        return handle if loaded.error is None else None

    def _serve_slot(self, slot: int, worker_id: str) -> None:
        replacements = 0
        handle: Optional[WorkerHandle] = None
        job: Optional[DialogueJob] = None
        pending: Optional[DialogueJob] = None  # taken from the queue for the fresh worker after a crash
        while True:
            try:
                handle = self._start(slot, worker_id, handle)
                if handle is None:
                    if pending is not None:  # the system cannot load: the job is not run, as any queued
                        self.events.put(Event("not_run", worker_id, pending, self._load_error))
                    return
                first, pending = pending, None
                job = self._serve_jobs(handle, first)
                if job is None:  # no more jobs: close the system and leave
                    self.events.put(Event("closed", handle.worker_id, payload=handle.close(self.turn_timeout)))
                    return
                # `job` crashed its worker process: a fresh process on the same host takes the next job,
                # if there is one (started for none, it would load the system only to close it).
                pending = self._next_job()
                if pending is None:
                    return
            except WorkerLost as exc:
                job = exc.job if exc.job is not None else pending  # lost while starting: the job it was to run
                pending = None
                if job is not None:
                    self.events.put(Event("lost", worker_id, job))
                replacements += 1
                self.events.put(Event("note", worker_id, payload=f"worker {worker_id} was lost ({exc})"
                                      + ("; its dialogue in flight will be redone" if job is not None else "")))
                if replacements > MAX_REPLACEMENTS:
                    return
                handle = None
            job = None
            worker_id = self.ids.next()

    def _next_job(self) -> Optional[DialogueJob]:
        """The next job, waiting for one; None when none is left."""
        job = self.jobs.get()
        if job is None:
            self.jobs.put(None)  # for the other slots, and for one still loading
        return job

    def _serve_jobs(self, handle: WorkerHandle, first: Optional[DialogueJob] = None) -> Optional[DialogueJob]:
        """Jobs (`first`, then the queue's) until none is left (None) or one crashes its worker (that job)."""
        while True:
            job = first if first is not None else self._next_job()
            first = None
            if job is None:
                return None
            if self._load_error is not None:
                self.events.put(Event("not_run", handle.worker_id, job, self._load_error))
                continue
            if self._run_job(handle, job):
                return job

    def _run_job(self, handle: WorkerHandle, job: DialogueJob) -> bool:
        """Relay one job's messages; whether it crashed its worker."""
        turns = 0
        job = self.prepare(job)
        try:
            for message in handle.run(job, self.turn_timeout):
                if isinstance(message, TurnDone):
                    turns += 1
                    self.events.put(Event("turn", handle.worker_id, job, message))
                elif isinstance(message, JobDone):
                    self.events.put(Event("done", handle.worker_id, job, message))
                elif isinstance(message, Crashed):
                    self.events.put(Event("crashed", handle.worker_id, job, (turns, message.error)))
                    return True
        except WorkerLost as exc:
            exc.job = job
            raise
        return False


def run_inline(host: WorkerHost, jobs: list[DialogueJob], sink: Sink) -> None:
    """`--in-process`: the worker's code in the main thread, its messages handled as they come."""
    loaded = host.load()
    sink.loaded(loaded)
    if loaded.error is not None:
        for job in jobs:
            sink.not_run(job, loaded.error)
        return
    for job in jobs:
        def emit(message: Any, job: DialogueJob = job) -> None:
            if isinstance(message, TurnDone):
                sink.turn(job, message)
            elif isinstance(message, JobDone):
                sink.finished(job, message)

        host.run(job, emit)
    sink.closed(host.start.worker, host.close().error)
