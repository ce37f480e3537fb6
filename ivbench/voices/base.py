"""One interface for every text-to-speech voice: speak a text whole, or stream it."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any, Optional
from collections.abc import Iterator

import numpy as np

from ..types import Audio

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences to speak one at a time, so the first one can be heard early."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


class Voice(ABC):
    """A TTS voice. `variant` picks a named voice of the engine (e.g. piper's "joe")."""

    engine: str = ""

    def __init__(self, variant: Optional[str] = None, **options: Any) -> None:
        self.variant = variant
        self.options = options
        self._loaded = False

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Rate of the audio this voice makes."""

    def load(self, device: str = "cpu") -> None:
        """Load the model once; speaking loads it on first use too."""
        if not self._loaded:
            self._load(device)
            self._loaded = True

    @abstractmethod
    def _load(self, device: str) -> None: ...

    @abstractmethod
    def _synthesize(self, sentence: str) -> np.ndarray:
        """Float32 mono samples for one sentence."""

    def identity(self) -> dict[str, Any]:
        """Everything that changes the audio, for cache keys and manifests."""
        return {"engine": self.engine, "variant": self.variant, "options": self.options}

    def stream(self, text: str) -> Iterator[Audio]:
        """Speak sentence by sentence, yielding each one's audio as soon as it exists."""
        self.load()
        for sentence in split_sentences(text):
            samples = self._synthesize(sentence)
            if samples.size:
                yield Audio(np.asarray(samples, dtype=np.float32), self.sample_rate)

    def speak(self, text: str) -> Audio:
        """The whole text as one audio, with a short pause between sentences."""
        pause = np.zeros(int(0.15 * self.sample_rate), dtype=np.float32)
        parts: list[np.ndarray] = []
        for chunk in self.stream(text):
            if parts:
                parts.append(pause)
            parts.append(chunk.samples)
        if not parts:
            raise ValueError(f"{self.engine} voice produced no audio for text {text[:60]!r}")
        return Audio(np.concatenate(parts), self.sample_rate)
