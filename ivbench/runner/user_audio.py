"""The audio of user turns: recorded files from the task, or a voice's speech (cached)."""
from __future__ import annotations

from typing import Optional

from .. import registry
from ..audio import clip_audio, from_wav_bytes, read_audio, to_wav_bytes
from ..cache import SqliteCache, content_key
from ..registry import Spec
from ..types import Audio, UserTurn
from ..voices.base import Voice


class UserAudioSource:
    """Gives each user turn its audio. Synthesised audio always passes through 16-bit WAV,
    so a cache hit and a fresh synthesis hand systems the very same samples.

    Audio outside [-1, 1] (a float WAV file, a loud voice) is clipped before the system hears
    it, so what it hears is what the run saves; the warning that says so travels with the
    audio (and with a cached synthesis) into the turn's record."""

    def __init__(self, voice_spec: Spec, cache: SqliteCache, device: str = "cpu") -> None:
        self.voice_spec = voice_spec
        self.cache = cache
        self.device = device
        self._voice: Optional[Voice] = None

    @property
    def voice(self) -> Voice:
        if self._voice is None:
            voice = registry.create("voices", self.voice_spec)
            if not isinstance(voice, Voice):
                raise registry.RegistryError(
                    f"voice {self.voice_spec.ref!r} is a {type(voice).__name__}, not an ivbench Voice")
            voice.load(self.device)
            self._voice = voice
        return self._voice

    def audio_for(self, turn: UserTurn, where: str) -> tuple[Audio, Optional[str]]:
        """The turn's audio, and a warning when it had to be clipped."""
        if turn.audio_path is not None:
            return clip_audio(read_audio(turn.audio_path), f"user audio {turn.audio_path}")
        key = content_key("user-turn-tts", self.voice.identity(), turn.text)
        warning_key = content_key("user-turn-tts-clipped", key)
        cached = self.cache.get(key)
        if cached is not None:
            warning = self.cache.get(warning_key)
            return from_wav_bytes(cached, f"{where} (cached speech)"), warning.decode() if warning else None
        audio, clip_warning = clip_audio(self.voice.speak(turn.text), "user audio (synthesised)")
        wav = to_wav_bytes(audio)
        if clip_warning:
            self.cache.put(warning_key, clip_warning.encode())
        self.cache.put(key, wav)
        return from_wav_bytes(wav, where), clip_warning
