"""A text system for the command-line tests (tests/test_cli.py): replies with the user's text in capitals."""
from __future__ import annotations

from collections.abc import Iterator

from ivbench.systems import Session, System
from ivbench.types import Mode, ReplyEvent, TextDelta, TurnInput


class Upper(Session):
    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        yield TextDelta(turn.text.upper())


class Shout(System):
    modes = (Mode.T2T,)

    def new_session(self) -> Session:
        return Upper()
