"""Test systems for the report's plots (tests/test_report_browser.py): real ivbench systems,
run by the real runner, that produce what stresses a plot's layout."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ivbench.systems import Session, System
from ivbench.types import AudioChunk, Mode, ReplyEvent, StageMark, TextDelta, TurnInput

# As many stage marks as a detailed cascade reports, with names as long as theirs get: the
# stage breakdown's legend must hold them all inside its figure.
STAGES = ("vad_end_of_user_turn", "asr_final_transcript", "llm_first_token", "llm_first_sentence",
          "tts_first_input", "tts_first_chunk_synthesised", "llm_done", "tts_done")


class Staged(System):
    """Replies with a fixed sentence; in speech-output modes also a short tone, after the stage
    marks of STAGES where `stages` (so one system in one mode gives the breakdown a single row,
    the least room for its legend)."""

    modes = (Mode.S2S, Mode.S2T)

    def __init__(self, tone: float = 440.0, stages: bool = True, fail: bool = False) -> None:
        super().__init__(tone=tone, stages=stages, fail=fail)
        self.tone, self.stages, self.fail = tone, stages, fail

    def new_session(self) -> Session:
        if self.fail:
            return _FailingSession()
        return _StagedSession(self.tone, self.stages)


class _StagedSession(Session):
    def __init__(self, tone: float, stages: bool) -> None:
        self.tone, self.stages = tone, stages

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        marks = STAGES if self.stages and turn.mode.speech_out else ()
        for name in marks[:4]:
            yield StageMark(name)
        yield TextDelta("It is noon today.")
        for name in marks[4:]:
            yield StageMark(name)
        if turn.mode.speech_out:
            t = np.arange(int(16000 * 0.4)) / 16000.0
            yield AudioChunk((0.3 * np.sin(2 * np.pi * self.tone * t)).astype(np.float32), 16000)


class _FailingSession(Session):
    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        raise RuntimeError("this system fails every turn (report_systems.Staged with fail=True)")
        yield TextDelta("")  # a generator, as a session's respond is
