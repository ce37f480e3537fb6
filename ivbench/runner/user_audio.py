"""The audio of user turns: recorded files from the task, or a voice's speech (cached)."""
from __future__ import annotations

import io
from typing import Optional, Protocol

from .. import registry
from ..audio import AudioError, check_audio, clip_audio, from_wav_bytes, read_audio, to_wav_bytes
from ..cache import content_key
from ..registry import Spec
from ..types import Audio, UserTurn
from ..voices.base import Voice


class BytesCache(Protocol):
    def get(self, key: str) -> Optional[bytes]: ...

    def put(self, key: str, value: bytes) -> None: ...


class MemoryCache:
    """A worker's view of the speech cache: the entries the driver sent with a job, and what the
    worker synthesised since (`added`), which goes back to the driver, the cache's one writer."""

    def __init__(self, entries: Optional[dict[str, bytes]] = None) -> None:
        self.entries = dict(entries or {})
        self.added: dict[str, bytes] = {}

    def get(self, key: str) -> Optional[bytes]:
        return self.entries.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.entries[key] = value
        self.added[key] = value


class UserAudioSource:
    """Gives each user turn its audio. Synthesised audio always passes through 16-bit WAV,
    so a cache hit and a fresh synthesis hand systems the very same samples.

    Audio outside [-1, 1] (a float WAV file, a loud voice) is clipped before the system hears
    it, so what it hears is what the run saves; the warning that says so travels with the
    audio (and with a cached synthesis) into the turn's record.

    `recorded` holds recorded files' bytes by path, when the driver sent them (a worker may run
    where the task's folder is not)."""

    def __init__(self, voice_spec: Spec, cache: BytesCache, device: str = "cpu",
                 recorded: Optional[dict[str, bytes]] = None) -> None:
        self.voice_spec = voice_spec
        self.cache = cache
        self.device = device
        self.recorded = recorded if recorded is not None else {}
        self._voice: Optional[Voice] = None

    def _made(self) -> Voice:
        """The voice object, not loaded: its identity names cache entries."""
        if self._voice is None:
            voice = registry.create("voices", self.voice_spec)
            if not isinstance(voice, Voice):
                raise registry.RegistryError(
                    f"voice {self.voice_spec.ref!r} is a {type(voice).__name__}, not an ivbench Voice")
            self._voice = voice
        return self._voice

    @property
    def voice(self) -> Voice:
        voice = self._made()
        voice.load(self.device)  # once: a voice loads on its first call only
        return voice

    def keys(self, turn: UserTurn) -> tuple[str, str]:
        """The cache keys of a turn's speech and of its clipping warning."""
        key = content_key("user-turn-tts", self._made().identity(), turn.text)
        return key, content_key("user-turn-tts-clipped", key)

    def known(self, turns: list[UserTurn]) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """What a worker needs to give these turns their audio without this machine: the cached
        speech (with clipping warnings) and the recorded files' bytes."""
        cached: dict[str, bytes] = {}
        files: dict[str, bytes] = {}
        for turn in turns:
            if turn.audio_path is not None:
                with open(turn.audio_path, "rb") as f:
                    files[turn.audio_path] = f.read()
                continue
            for key in self.keys(turn):
                value = self.cache.get(key)
                if value is not None:
                    cached[key] = value
        return cached, files

    def audio_for(self, turn: UserTurn, where: str) -> tuple[Audio, Optional[str]]:
        """The turn's audio, and a warning when it had to be clipped."""
        if turn.audio_path is not None:
            return clip_audio(self._read_recorded(turn.audio_path), f"user audio {turn.audio_path}")
        key, warning_key = self.keys(turn)
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

    def _read_recorded(self, path: str) -> Audio:
        data = self.recorded.get(path)
        if data is None:
            return read_audio(path)
        import soundfile

        try:
            samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=False)
        except Exception as exc:  # as read_audio: libsndfile reports corrupt files in several types
            raise AudioError(f"{path}: cannot be read as audio ({exc})") from None
        return check_audio(samples, rate, str(path))
