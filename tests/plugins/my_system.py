"""The README's example plugin, as a user would write it (tests/test_plugins.py copies it into
place as a file, and into a package)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ivbench.systems import Session, System
from ivbench.types import AudioChunk, Mode, ReplyEvent, TextDelta, TurnInput


class EchoSession(Session):
    def __init__(self) -> None:
        self.history: list[str] = []

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        self.history.append(turn.text)
        yield TextDelta(f"You said: {turn.text} ({len(self.history)} so far)")
        if turn.mode.speech_out:
            yield AudioChunk(np.full(8000, 0.25, dtype=np.float32), 16000)


class MySystem(System):
    modes = (Mode.S2S, Mode.S2T, Mode.T2S, Mode.T2T)

    def load(self, device: str) -> None:
        pass

    def new_session(self) -> Session:
        return EchoSession()
