"""A system for the resume tests (tests/test_resume.py): slow enough to be cut mid-dialogue, and
its replies depend on the session's history, so a dialogue resumed mid-way would show."""
from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from ivbench.systems import Session, System
from ivbench.types import AudioChunk, Mode, ReplyEvent, TextDelta, TurnInput


class Counting(Session):
    """Replies depend on the session's history, so a dialogue resumed mid-way would show."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        self.heard.append(turn.text)
        time.sleep(0.25)
        yield TextDelta(f"reply {len(self.heard)} after " + " / ".join(self.heard))
        tone = np.sin(np.arange(8000) * (0.01 * len(self.heard))).astype(np.float32) * 0.3
        yield AudioChunk(tone, 16000)


class CountingSystem(System):
    modes = (Mode.T2S,)

    def new_session(self) -> Session:
        return Counting()
