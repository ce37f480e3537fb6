"""The worker protocol: what the driver and a worker say to each other (docs/architecture.md,
"Workers").

    driver                                   worker (a process, or a process under a Ray actor)
    Start(system, device, seed, …)  ──▶      builds and load()s the system once
                                    ◀──      Loaded(describe, hardware fingerprint | error)
    DialogueJob(dialogue, attempt…) ──▶      warms up (first job), runs the dialogue
                                    ◀──      TurnDone × turns (record + reply and user audio)
                                    ◀──      JobDone(new user-turn speech for the cache, warm-up)
    …                                        (Beat every second while alive)
    Close                           ──▶      system.close()
                                    ◀──      Closed(error | None); the process ends

Messages are dataclasses of ivbench types, numpy arrays and builtins, sent as pickles in
length-prefixed frames over a pair of pipes that are the worker's alone (not its stdout: a
system may close or redirect that). Both ends are ivbench; the pipes never leave the machine
(a Ray actor relays the same objects through Ray).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import select
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from ..types import Audio, Dialogue, Mode, TurnRecord

if TYPE_CHECKING:
    from ..config import SystemConfig
    from ..registry import Spec

HEADER = struct.Struct("!Q")
HEARTBEAT_S = 1.0  # how often a worker says it is alive; its silence is how a stuck one is found


@dataclass
class Start:
    """Build and load one system; a worker serves one system for its whole life."""

    system: SystemConfig
    device: str  # "cpu", "cuda" or "auto" (resolved by the worker, where the device is)
    seed: int
    turn_timeout: Optional[float]
    warmup: int
    voice: Spec  # speaks the user turns the driver has no cached speech for
    worker: str  # its id, stamped on every record it makes
    # The driver's sys.path, for a worker on the driver's interpreter: a system named by a module
    # the driver can import (a test's folder, a script's) is found by the worker too.
    sys_path: list[str] = field(default_factory=list)


@dataclass
class Loaded:
    worker: str
    info: dict[str, Any] = field(default_factory=dict)  # what the loaded system says of itself
    fingerprint: dict[str, Any] = field(default_factory=dict)  # hardware, host, python, pid
    error: Optional[dict[str, str]] = None  # load() failed (or the worker died loading): why
    seconds: float = 0.0


@dataclass
class DialogueJob:
    """One whole dialogue of one (system, mode) unit; it never moves between workers mid-way."""

    label: str  # the unit's label: the records' `system`
    mode: Mode
    dialogue: Dialogue
    task: str
    attempt: int
    # User-turn audio the driver already has, so a worker on another machine needs neither the
    # driver's cache nor the task's folder: cached speech (cache key -> WAV bytes) and recorded
    # files (the turn's audio_path -> the file's bytes).
    tts: dict[str, bytes] = field(default_factory=dict)
    recorded: dict[str, bytes] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.label, self.dialogue.id)


@dataclass
class TurnDone:
    """A finished turn: its record (audio paths not yet set) and the audio the driver writes."""

    record: TurnRecord
    reply_audio: Optional[Audio] = None
    user_audio: Optional[Audio] = None


@dataclass
class JobDone:
    tts: dict[str, bytes] = field(default_factory=dict)  # speech synthesised for this job, for the cache
    warmup_problem: Optional[str] = None
    warmed: bool = False  # this job's worker ran its warm-up before it


@dataclass
class Crashed:
    """The worker process ended (or was stopped) in the middle of a job; made by the driver side."""

    error: dict[str, str]


@dataclass
class Close:
    timeout_s: Optional[float] = None


@dataclass
class Closed:
    error: Optional[dict[str, str]] = None


@dataclass
class Beat:
    pass


@dataclass
class Probe:
    """Build (not load) a system in the worker's interpreter and say what it is."""

    system: SystemConfig
    sys_path: list[str] = field(default_factory=list)


@dataclass
class Probed:
    modes: list[str] = field(default_factory=list)
    untrained: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    error_type: Optional[str] = None  # an ivbench.errors class name: the user's to fix
    message: str = ""


@dataclass
class Bug:
    """The worker itself failed outside any system call: a bug in ivbench."""

    traceback: str


class ChannelClosed(Exception):
    """The other end of the pipes is gone."""


class Channel:
    """Length-prefixed pickles over two file descriptors; sending is thread-safe (the heartbeat
    and the dialogue both send)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._send_lock = threading.Lock()

    def send(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=5)
        frame = HEADER.pack(len(data)) + data
        with self._send_lock:
            view = memoryview(frame)
            while view:
                try:
                    written = os.write(self.write_fd, view)
                except (BrokenPipeError, OSError) as exc:
                    raise ChannelClosed(str(exc)) from None
                view = view[written:]

    def readable(self, timeout_s: Optional[float]) -> bool:
        ready, _, _ = select.select([self.read_fd], [], [], timeout_s)
        return bool(ready)

    def recv(self, timeout_s: Optional[float] = None) -> Any:
        """The next message; None when nothing came within `timeout_s` (None: wait for ever)."""
        if timeout_s is not None and not self.readable(timeout_s):
            return None
        (size,) = HEADER.unpack(self._read_exactly(HEADER.size))
        return pickle.loads(self._read_exactly(size))

    def _read_exactly(self, size: int) -> bytes:
        chunks: list[bytes] = []
        left = size
        while left:
            try:
                chunk = os.read(self.read_fd, min(left, 1 << 20))
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None
            if not chunk:
                raise ChannelClosed("end of file")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):  # closed already
                os.close(fd)
