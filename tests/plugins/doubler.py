"""A text system for the scoring tests (tests/test_scoring.py): the user's text, `times` times."""
from __future__ import annotations

from collections.abc import Iterator

from ivbench.systems import Session, System
from ivbench.types import Mode, ReplyEvent, TextDelta, TurnInput


class Doubler(System):
    modes = (Mode.T2T, Mode.S2T)

    def __init__(self, times: int = 2) -> None:
        super().__init__(times=times)
        self.times = times

    def new_session(self) -> Session:
        return _Repeat(self.times)


class _Repeat(Session):
    def __init__(self, times: int) -> None:
        self.times = times

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        yield TextDelta(" ".join([turn.text] * self.times))
