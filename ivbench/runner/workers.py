"""Calls into a system run in worker threads, so the runner can bound them and stay responsive
(docs/architecture.md, "Runs survive their systems").

Every call that can hang — `new_session()`, `session.respond()` (in `clock.time_turn`),
`session.close()`, `system.close()` — runs in a daemon thread while the main thread waits with
a deadline (the turn timeout). A call past its deadline is abandoned: the run records why and
goes on. The main thread only ever waits on a queue, so Ctrl-C reaches it at once as a
KeyboardInterrupt even while the system is inside native code (onnxruntime, torch).

An abandoned or interrupted worker may still be inside native code when the process exits.
CPython 3.11 ends such a thread with `pthread_exit` when it next takes the GIL, and a C++
library on its stack turns that into `std::terminate` (exit 134). So on Ctrl-C the runner
first waits up to `INTERRUPT_GRACE_S` for its workers to return (a turn's generator is told
to stop at its next event); a worker still running after that makes the process end with
`os._exit(130)` once the command has printed its last line: every record and file is already
written and fsynced, so nothing is lost by skipping the interpreter's teardown.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Optional

INTERRUPT_GRACE_S = 10.0  # how long Ctrl-C waits for a system's current call to return

_live: set[threading.Thread] = set()
_lock = threading.Lock()
_exit_code_if_stuck: Optional[int] = None


class Failure:
    """A call's exception (or timeout), as the record's error dict; never mistaken for a result."""

    def __init__(self, error: dict[str, str], timed_out: bool = False) -> None:
        self.error = error
        self.timed_out = timed_out


def error_dict(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def spawn(target: Callable[..., None], *args: Any, name: str) -> threading.Thread:
    """Start a daemon worker that the interrupt handling knows about."""

    def run() -> None:
        try:
            target(*args)
        finally:
            with _lock:
                _live.discard(thread)

    thread = threading.Thread(target=run, name=name, daemon=True)
    with _lock:
        _live.add(thread)
    thread.start()
    return thread


def call(fn: Callable[[], Any], timeout_s: Optional[float], what: str) -> Any:
    """`fn()` in a worker: its result, or a `Failure` if it raised or passed `timeout_s`
    (None: no limit). The caller waits in the main thread, so Ctrl-C interrupts the wait."""
    out: queue.Queue[Any] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            out.put(fn())
        except BaseException as exc:  # the system's failure is data for the record
            out.put(Failure(error_dict(exc)))

    spawn(run, name=f"ivbench-{what.split('(')[0].strip()}")
    try:
        return out.get(timeout=timeout_s)
    except queue.Empty:
        return Failure({"type": "TimeoutError", "traceback": "",
                        "message": f"{what} did not return within the turn timeout of {timeout_s:g} s"},
                       timed_out=True)


def live() -> list[threading.Thread]:
    with _lock:
        return [t for t in _live if t.is_alive()]


def settle(grace_s: float) -> list[threading.Thread]:
    """Wait up to `grace_s` for every worker to return; the ones still running."""
    deadline = time.monotonic() + grace_s
    for thread in live():
        thread.join(max(0.0, deadline - time.monotonic()))
    return live()


def interrupted(echo: Callable[[str], None]) -> None:
    """Ctrl-C: give the system's current call `INTERRUPT_GRACE_S` to return, so the process can
    exit normally; if it does not (or Ctrl-C comes again), end the process at exit without the
    teardown that would abort it."""
    global _exit_code_if_stuck
    if not live():
        return
    echo(f"interrupted: waiting up to {INTERRUPT_GRACE_S:g} s for the system's current call to return "
         "(Ctrl-C again to stop now)")
    try:
        stuck = settle(INTERRUPT_GRACE_S)
    except KeyboardInterrupt:
        stuck = live()
    if stuck and _exit_code_if_stuck is None:
        _exit_code_if_stuck = 130
        atexit.register(_exit_if_stuck)


def _exit_if_stuck() -> None:
    if _exit_code_if_stuck is None or not live():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream must not keep us from exiting
            stream.flush()
    os._exit(_exit_code_if_stuck)
