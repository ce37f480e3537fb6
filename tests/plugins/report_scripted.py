"""The report tests' system (tests/test_report.py, tests/test_report_browser.py): a fixed text and
a short tone per turn, a failure where told; its replies carry markup the report must escape."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import numpy as np

from ivbench.systems import Session, System
from ivbench.types import AudioChunk, Mode, ReplyEvent, StageMark, TextDelta, TurnInput

XSS_TEXT = "<script>window.__pwned = 1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned = 2">'
ERROR = "<b>boom</b> & </script>"  # the message of the failure `fail_on` asks for

REPLIES = {0: XSS_TEXT, 1: XSS_IMG}  # by turn index, except in the dialogue "plain"


class Scripted(System):
    """Replies with a fixed text and a short tone; fails where told to (`fail_on`: "dialogue#turn")."""

    modes = (Mode.S2S,)

    def __init__(self, fail_on: Optional[str] = None, tone: float = 440.0) -> None:
        super().__init__(fail_on=fail_on, tone=tone)
        self.fail_on, self.tone = fail_on, tone

    def new_session(self) -> Session:
        return _ScriptedSession(self.fail_on, self.tone)


class _ScriptedSession(Session):
    def __init__(self, fail_on: Optional[str], tone: float) -> None:
        self.fail_on, self.tone = fail_on, tone

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        if f"{turn.dialogue_id}#{turn.turn_index}" == self.fail_on:
            raise RuntimeError(ERROR)
        yield StageMark("asr_done", {"transcript": "heard: " + turn.text})
        yield TextDelta(REPLIES.get(turn.turn_index, "It is noon.") if turn.dialogue_id != "plain"
                        else "It is noon.")
        t = np.arange(int(16000 * (0.5 + 0.1 * turn.turn_index))) / 16000.0
        yield AudioChunk((0.3 * np.sin(2 * np.pi * self.tone * t)).astype(np.float32), 16000)
