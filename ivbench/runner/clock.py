"""The clock, one definition everywhere (DESIGN.md, Latency).

t0 is the moment the complete user turn is handed to `respond()`. The system's generator runs
in a worker thread that stamps each event with `time.perf_counter_ns()` as soon as the system
yields it, so nothing the runner does (validation, queueing, writing) is inside the
measurement, and a system that hangs can be abandoned when the turn's timeout passes.
"""
from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Optional

from ..systems.base import Session
from ..types import TurnInput

_END = object()


@dataclass
class TurnTiming:
    """What a turn produced, as (ns since t0, event) pairs, and how it ended."""

    events: list[tuple[int, Any]] = field(default_factory=list)
    end_ns: Optional[int] = None  # when the generator returned (None: failed or timed out)
    error: Optional[dict[str, str]] = None
    timed_out: bool = False


def _drive(session: Session, turn: TurnInput, out: "queue.Queue[tuple[int, Any]]",
           start: threading.Event) -> None:
    clock = time.perf_counter_ns
    start.wait()
    t0 = clock()
    out.put((t0, None))
    try:
        for event in session.respond(turn):
            out.put((clock(), event))
        out.put((clock(), _END))
    except BaseException as exc:  # a system's failure is data, not a crash of the run
        now = clock()
        out.put((now, {"type": type(exc).__name__, "message": str(exc),
                       "traceback": traceback.format_exc()}))


def time_turn(session: Session, turn: TurnInput, timeout_s: Optional[float]) -> TurnTiming:
    """Run one turn under the clock; never raises for the system's own failures."""
    out: "queue.Queue[tuple[int, Any]]" = queue.Queue()
    start = threading.Event()
    worker = threading.Thread(target=_drive, args=(session, turn, out, start),
                              name="ivbench-turn", daemon=True)
    worker.start()
    start.set()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    timing = TurnTiming()
    t0: Optional[int] = None
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            stamp, item = out.get(timeout=remaining)
        except queue.Empty:
            timing.timed_out = True
            timing.error = {"type": "TimeoutError",
                            "message": f"no end of reply within the turn timeout of {timeout_s:g} s",
                            "traceback": ""}
            return timing
        if t0 is None:
            t0 = stamp
            continue
        if item is _END:
            timing.end_ns = stamp - t0
            return timing
        if isinstance(item, dict):
            timing.error = item
            return timing
        timing.events.append((stamp - t0, item))
