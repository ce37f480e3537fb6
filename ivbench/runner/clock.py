"""The clock, one definition everywhere (docs/architecture.md, "Latency, one definition").

t0 is the moment the complete user turn is handed to `respond()`. The system's generator runs
in a worker thread that stamps each event with `time.perf_counter_ns()` as soon as the system
yields it, so nothing the runner does (validation, queueing, writing) is inside the
measurement, and a system that hangs can be abandoned when the turn's timeout passes.

A turn is bounded in time (the turn timeout) and in size: at most `MAX_REPLY_AUDIO_S` seconds
of audio, `MAX_REPLY_TEXT_CHARS` characters of text and `MAX_REPLY_EVENTS` events. Past either
bound, or once the runner gives up on the turn, the worker stops consuming the generator (and
closes it), so a system that yields forever costs neither memory nor CPU.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..audio import MAX_DURATION_S, MIN_SAMPLE_RATE
from ..systems.base import Session
from ..types import AudioChunk, TextDelta, TurnInput
from . import workers

MAX_REPLY_AUDIO_S = MAX_DURATION_S  # 10 minutes: longer than any spoken reply
MAX_REPLY_TEXT_CHARS = 1_000_000  # ~150,000 words: far beyond any one reply
MAX_REPLY_EVENTS = 100_000  # 10 minutes of audio in 6 ms chunks; bounds empty or tiny events

_END = object()


@dataclass
class TurnTiming:
    """What a turn produced, as (ns since t0, event) pairs, and how it ended."""

    events: list[tuple[int, Any]] = field(default_factory=list)
    end_ns: Optional[int] = None  # when the generator returned (None: failed or timed out)
    error: Optional[dict[str, str]] = None
    timed_out: bool = False


class _Budget:
    """Counts a reply's size as it streams; cheap, so it adds nothing measurable between events."""

    def __init__(self) -> None:
        self.events = 0
        self.chars = 0
        self.audio_s = 0.0

    def exceeded(self, event: Any) -> Optional[str]:
        """Add `event`; a reason when the reply is now over a bound."""
        self.events += 1
        if isinstance(event, TextDelta) and isinstance(event.text, str):
            self.chars += len(event.text)
        elif isinstance(event, AudioChunk):
            self.audio_s += _seconds(event)
        if self.audio_s > MAX_REPLY_AUDIO_S:
            return f"the reply passed {MAX_REPLY_AUDIO_S:g} s of audio (ivbench.runner.clock.MAX_REPLY_AUDIO_S)"
        if self.chars > MAX_REPLY_TEXT_CHARS:
            return (f"the reply passed {MAX_REPLY_TEXT_CHARS:,} characters of text "
                    "(ivbench.runner.clock.MAX_REPLY_TEXT_CHARS)")
        if self.events > MAX_REPLY_EVENTS:
            return f"the reply passed {MAX_REPLY_EVENTS:,} events (ivbench.runner.clock.MAX_REPLY_EVENTS)"
        return None


def _seconds(chunk: AudioChunk) -> float:
    """The chunk's duration, read from its longest axis. A malformed chunk fails the turn anyway
    (validation reads it after the turn); meanwhile it counts at the lowest rate, or as 0 s."""
    try:
        n = max((int(d) for d in chunk.samples.shape), default=0)
    except (AttributeError, TypeError, ValueError):
        return 0.0
    rate = chunk.sample_rate
    valid = isinstance(rate, (int, float, np.number)) and not isinstance(rate, bool) and rate > 0
    return n / float(rate if valid else MIN_SAMPLE_RATE)


def _too_long(reason: str) -> workers.Failure:
    return workers.Failure({"type": "ReplyTooLong", "traceback": "",
                            "message": f"{reason}; the rest of the reply was not read"})


def _drive(session: Session, turn: TurnInput, out: queue.Queue[tuple[int, Any]],
           start: threading.Event, stop: threading.Event) -> None:
    clock = time.perf_counter_ns
    start.wait()
    t0 = clock()
    out.put((t0, None))
    budget = _Budget()
    replies: Any = None
    try:
        result = session.respond(turn)
        try:
            replies = iter(result)
        except TypeError:
            raise TypeError(f"respond() returned a {type(result).__name__}; it must yield AudioChunk, "
                            "TextDelta or StageMark events") from None
        for event in replies:
            now = clock()
            over = budget.exceeded(event)
            if over is not None:
                out.put((now, _too_long(over)))
                return
            out.put((now, event))
            if stop.is_set():  # the runner gave up on this turn (timeout, Ctrl-C)
                return
        out.put((clock(), _END))
    except BaseException as exc:  # a system's failure is data, not a crash of the run
        out.put((clock(), workers.Failure(workers.error_dict(exc))))
    finally:
        close = getattr(replies, "close", None)
        if close is not None:
            with contextlib.suppress(BaseException):  # its errors are not the turn's
                close()  # runs the generator's own `finally` blocks


def time_turn(session: Session, turn: TurnInput, timeout_s: Optional[float]) -> TurnTiming:
    """Run one turn under the clock; never raises for the system's own failures."""
    out: queue.Queue[tuple[int, Any]] = queue.Queue()
    start = threading.Event()
    stop = threading.Event()
    workers.spawn(_drive, session, turn, out, start, stop, name="ivbench-turn")
    start.set()
    try:
        return _collect(out, timeout_s)
    finally:
        stop.set()  # a turn that ended returns anyway; one given up on stops at its next event


def _collect(out: queue.Queue[tuple[int, Any]], timeout_s: Optional[float]) -> TurnTiming:
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
        if isinstance(item, workers.Failure):
            timing.error = item.error
            return timing
        timing.events.append((stamp - t0, item))
