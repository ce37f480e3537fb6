"""`parrot`: the calibration baseline. It speaks the user turn's own text back through a
voice, sentence by sentence, so it gives the floor for latency (one TTS sentence) and the
ceiling for speech-text alignment (its speech says exactly its text)."""
from __future__ import annotations

from typing import Any, Optional
from collections.abc import Iterator

from .. import registry
from ..types import AudioChunk, Mode, ReplyEvent, TextDelta, TurnInput
from ..voices.base import Voice, split_sentences
from .base import Session, System


class ParrotSession(Session):
    def __init__(self, voice: Optional[Voice]) -> None:
        self.voice = voice

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        for sentence in split_sentences(turn.text):
            yield TextDelta(sentence + " ")
            if turn.mode.speech_out and self.voice is not None:
                for audio in self.voice.stream(sentence):
                    yield AudioChunk(audio.samples, audio.sample_rate)


class Parrot(System):
    """Options: `voice` (a voice spec, default "piper:joe")."""

    modes = (Mode.S2S, Mode.S2T, Mode.T2S, Mode.T2T)

    def __init__(self, voice: str = "piper:joe", **voice_options: Any) -> None:
        super().__init__(voice=voice, **voice_options)
        self._voice_spec = registry.parse_spec(voice, extra=voice_options)
        self.voice: Optional[Voice] = None

    def load(self, device: str) -> None:
        self.voice = registry.create("voices", self._voice_spec)
        self.voice.load(device)
        # One throwaway sentence so onnxruntime's first-run costs stay out of the first turn.
        self.voice.speak("Ready.")

    def new_session(self) -> ParrotSession:
        return ParrotSession(self.voice)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.voice is not None:
            info["voice"] = self.voice.identity()
        return info
