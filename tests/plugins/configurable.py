"""A system whose replies show the options it was built with, and their Python types
(tests/test_plugins.py: options reach the constructor with YAML types)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ivbench.systems import Session, System
from ivbench.types import Mode, ReplyEvent, TextDelta, TurnInput


class Shows(Session):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        yield TextDelta(repr(sorted((k, type(v).__name__, v) for k, v in self.options.items())))


class Configurable(System):
    modes = (Mode.T2T,)

    def __init__(self, speed: Any = 1, stream: Any = False, temperature: Any = 1.0, name: Any = "default",
                 extra: Any = "unset") -> None:
        super().__init__(speed=speed, stream=stream, temperature=temperature, name=name, extra=extra)

    def new_session(self) -> Session:
        return Shows(self.options)
