"""Systems whose `modes` a plugin author got wrong (tests/test_plugins.py): each is a one-line
error before any work, naming the system, instead of a traceback from the runner's plan."""
from __future__ import annotations

from typing import Any

from ivbench.systems import Session, System


class NoModes(System):
    modes = ()

    def new_session(self) -> Session:
        raise AssertionError("never started")


class UnknownMode(System):
    modes: Any = ("t2t", "speech")

    def new_session(self) -> Session:
        raise AssertionError("never started")


class OneString(System):
    modes: Any = "t2t"  # read letter by letter, it would be an unknown mode "t"

    def new_session(self) -> Session:
        raise AssertionError("never started")
