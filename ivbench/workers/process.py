"""A worker process on this machine, seen from the driver (or from the Ray actor that hosts it)
(docs/architecture.md, "Workers").

The process runs `python -m ivbench.workers.host` in the system's interpreter (the driver's,
or the system entry's `python:`). Its stdout and stderr go to one pipe that a thread reads: each
line is passed on to this process's stderr and the last ones are kept, so that a worker that
dies says why (exit code or signal, and what it printed last).
"""
from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, Optional

from .protocol import (Beat, Bug, Channel, ChannelClosed, Close, Closed, Crashed, DialogueJob, JobDone, Loaded,
                       Probe, Probed, Start)

TAIL_LINES = 20  # lines of a worker's output kept to explain its death
SILENCE_GRACE_S = 5.0  # beyond the turn timeout, how long a busy worker may say nothing at all
CLOSE_GRACE_S = 5.0  # after close() returns (or times out), how long the process has to end


class WorkerBug(RuntimeError):
    """ivbench's own code failed inside a worker; its traceback comes with it."""


def describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory, or killed)" if -returncode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {returncode}"


class ProcessWorker:
    """One worker process at a time; `start` again after a death gives a fresh one."""

    def __init__(self, worker_id: str, python: Optional[str] = None) -> None:
        self.worker_id = worker_id
        self.python = python
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.channel: Optional[Channel] = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._reader: Optional[threading.Thread] = None

    # -- the process -------------------------------------------------------------------------------
    def spawn(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        command = [self.python or sys.executable, "-m", "ivbench.workers.host", str(to_child_r), str(from_child_w)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            # Its own session: Ctrl-C at a terminal reaches the driver only, which passes it on once.
            self.proc = subprocess.Popen(command, pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.channel = Channel(from_child_r, to_child_w)
        self.tail.clear()
        self._reader = threading.Thread(target=self._relay_output, args=(self.proc,), daemon=True,
                                        name=f"ivbench-{self.worker_id}-output")
        self._reader.start()

    def _relay_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            with contextlib.suppress(Exception):  # a closed or swapped stderr must not stop the relay
                print(line, file=sys.stderr, flush=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return None if self.proc is None else self.proc.pid

    def death(self, during: str, how: Optional[str] = None) -> dict[str, str]:
        """Why the process is gone, as a record's error; it is stopped first if it still runs."""
        assert self.proc is not None
        try:
            code: Optional[int] = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # it closed its pipes but runs on: stop it
            self.kill()
            code = None
        if self._reader is not None:
            self._reader.join(timeout=2)  # its last words
        self._drop_channel()
        lines = [line for line in self.tail if line.strip()]
        said = f"; its last output: {' | '.join(lines[-5:])[-600:]}" if lines else "; it printed nothing"
        return {"type": "WorkerDied", "traceback": "\n".join(lines),
                "message": f"the worker process running the system {how or describe_exit(code)} {during}{said}"}

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def interrupt(self) -> None:
        """Pass Ctrl-C on: the worker gives the system's call a grace to return, then ends."""
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout_s: float) -> bool:
        """Whether the process ended within `timeout_s`."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _drop_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    # -- the protocol ------------------------------------------------------------------------------
    def _send(self, message: Any) -> None:
        assert self.channel is not None
        self.channel.send(message)

    def _next(self, silence_s: Optional[float]) -> Any:
        """The next message other than a heartbeat; None after `silence_s` without any message."""
        assert self.channel is not None
        while True:
            message = self.channel.recv(silence_s)
            if message is None or not isinstance(message, Beat):
                if isinstance(message, Bug):
                    raise WorkerBug(f"worker {self.worker_id} failed:\n{message.traceback}")
                return message

    def probe(self, message: Probe) -> Probed:
        self.spawn()
        try:
            self._send(message)
            answer = self._next(None)
            self._send(Close())
            self._next(None)
        except ChannelClosed:
            error = self.death(f"while building the system (is ivbench installed for {self.python or sys.executable}?)")
            return Probed(error_type="PluginError", message=error["message"])
        finally:
            self.wait(CLOSE_GRACE_S)
            self.kill()
            self._drop_channel()
        assert isinstance(answer, Probed)
        return answer

    def start(self, message: Start) -> Loaded:
        """A fresh process that builds and loads the system (as long as that takes)."""
        self.kill()
        self._drop_channel()
        self.spawn()
        try:
            self._send(message)
            loaded = self._next(None)
        except ChannelClosed:
            return Loaded(self.worker_id, error=self.death("while loading the system"))
        assert isinstance(loaded, Loaded)
        return loaded

    def run(self, job: DialogueJob, turn_timeout: Optional[float]) -> Iterator[Any]:
        """Send one dialogue; yield each TurnDone, then the JobDone, or a Crashed when the process
        dies or stays silent past the turn timeout (it is stopped then)."""
        silence_s = None if turn_timeout is None else turn_timeout + SILENCE_GRACE_S
        turns = 0
        try:
            self._send(job)
            while True:
                message = self._next(silence_s)
                if message is None:
                    self.kill()
                    how = (f"said nothing for {silence_s:g} s (the turn timeout + {SILENCE_GRACE_S:g} s: a call held "
                           "the interpreter) and was stopped")
                    yield Crashed(self.death(f"during turn {turns} of dialogue {job.dialogue.id!r}", how))
                    return
                yield message
                if isinstance(message, JobDone):
                    return
                turns += 1
        except ChannelClosed:
            yield Crashed(self.death(f"during turn {turns} of dialogue {job.dialogue.id!r}"))

    def close(self, timeout_s: Optional[float]) -> Optional[dict[str, str]]:
        """`system.close()` in the worker, then the process ends; the close error, if any."""
        if not self.alive or self.channel is None:
            self._drop_channel()
            return None
        try:
            self._send(Close(timeout_s))
            wait = None if timeout_s is None else timeout_s + CLOSE_GRACE_S
            closed = self._next(wait)
        except ChannelClosed:
            return self.death("while closing the system")
        finally:
            if not self.wait(CLOSE_GRACE_S):
                self.kill()
            self._drop_channel()
        if closed is None:
            return {"type": "TimeoutError", "traceback": "",
                    "message": f"system.close() did not return within the turn timeout of {timeout_s:g} s"}
        assert isinstance(closed, Closed)
        return closed.error
