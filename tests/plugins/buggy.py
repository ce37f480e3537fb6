"""Plugins with a bug of their own, for the tests of how the command line reports bugs."""
from __future__ import annotations

from typing import Any

from ivbench.systems import Session, System
from ivbench.types import Mode, TextDelta


class _Session(Session):
    def respond(self, turn: Any) -> Any:
        yield TextDelta("hi")


def broken_task(**options: Any) -> Any:
    """A task plugin whose factory has a bug."""
    settings: dict[str, Any] = {}
    return settings["dialogues"]  # the bug: a key that was never set


class BrokenInit(System):
    """A system whose constructor has a bug (not an option it rejects)."""

    modes = (Mode.T2T,)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.size = len(None)  # type: ignore[arg-type]  # the bug

    def new_session(self) -> Session:
        return _Session()
