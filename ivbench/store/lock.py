"""One writer per run directory (docs/architecture.md, "The run directory").

`ivbench eval` and `ivbench score` write a run directory as if they were alone: eval appends
records and moves half-done dialogues aside, score rewrites scores.jsonl. Two of them on one
directory at once would interleave records (both run the same dialogues) or write the scores of
records that are being replaced. So each holds an exclusive `flock` on `<run>/.ivbench.lock`
while it writes, and a second command is refused at once, naming the first (its pid and
command line, which the holder writes into the file for this message only).

The kernel drops the lock when its holder ends, however it ends (`kill -9` included), so a lock
never outlives its command and nothing has to be cleaned up before running the command again.
Readers (`ivbench show`, `ivbench report`) take no lock: every file they read is appended one
fsynced line at a time or replaced whole.

Within one process the lock is re-entrant: `eval` scores the run it generated, and a caller of
`run_eval` and `score_run` holds it across both with `keep_locks()`.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import shlex
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import RunDirError

LOCK = ".ivbench.lock"


class RunBusy(RunDirError):
    """Another command is writing the run directory."""


@dataclass
class _Held:
    fd: int
    count: int


_held: dict[str, _Held] = {}
_keeping = 0  # depth of keep_locks(): while above 0, locks whose count drops to 0 stay held
_lock = threading.Lock()


def _key(root: Path) -> str:
    return os.path.realpath(root)


@contextlib.contextmanager
def writing(root: Path) -> Iterator[None]:
    """Hold `root`'s lock while the block writes it (`root` must exist); RunBusy when another
    process holds it."""
    key = _key(root)
    with _lock:
        held = _held.get(key)
        if held is None:
            held = _held[key] = _Held(_acquire(Path(root)), 0)
        held.count += 1
    try:
        yield
    finally:
        with _lock:
            held.count -= 1
            if held.count == 0 and not _keeping:
                _release(key)


@contextlib.contextmanager
def keep_locks() -> Iterator[None]:
    """Locks taken inside the block stay held until it ends (eval: generate, score, report)."""
    global _keeping
    with _lock:
        _keeping += 1
    try:
        yield
    finally:
        with _lock:
            _keeping -= 1
            if not _keeping:
                for key in [k for k, h in _held.items() if h.count == 0]:
                    _release(key)


def _release(key: str) -> None:
    held = _held.pop(key)
    os.close(held.fd)  # closing the last descriptor drops the flock


def _acquire(root: Path) -> int:
    path = root / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirError(f"{root}: cannot write {LOCK} there ({exc.strerror or exc}); give a folder you "
                          "can write") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = _holder(fd)
            os.close(fd)
            raise RunBusy(f"{root}: another ivbench command is writing this run directory ({holder}); wait for "
                          "it to end (or stop it), then run this command again, or give another --out") from None
        # A file system without locks (some network mounts): run unguarded, and say so.
        warnings.warn(f"{root}: cannot lock {LOCK} ({exc.strerror or exc}); do not run two ivbench commands "
                      "on this run directory at once", stacklevel=3)
        return fd
    _describe_self(fd)
    return fd


def _describe_self(fd: int) -> None:
    """Who holds the lock, for the message of a command that finds it held."""
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    text = f"pid {os.getpid()}, since {started}: {shlex.join(sys.argv)}"
    with contextlib.suppress(OSError):  # only a message depends on it
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("utf-8", "replace")[:2000], 0)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 2000, 0).decode("utf-8", "replace").strip()
        if text:
            return text
    return "its pid is not known"
