"""Audio in and out: every audio that enters ivbench passes `check_audio`."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Union

import numpy as np

from .errors import AudioError
from .types import Audio

MAX_DURATION_S = 600.0  # longer than any spoken turn; beyond it something is wrong
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000




def check_audio(samples: np.ndarray, sample_rate: int, where: str) -> Audio:
    """Validate and normalise to mono float32; `where` names the source in errors."""
    if not isinstance(sample_rate, (int, np.integer)) or not (
        MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE
    ):
        raise AudioError(
            f"{where}: sample rate {sample_rate!r} is outside {MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz"
        )
    arr = np.asarray(samples)
    if arr.ndim == 2:
        if arr.shape[1] != 1:
            raise AudioError(
                f"{where}: {arr.shape[1]} channels; ivbench needs mono audio (mix it down first)"
            )
        arr = arr[:, 0]
    elif arr.ndim != 1:
        raise AudioError(f"{where}: audio must be a 1-D array of samples, got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError(f"{where}: audio is empty")
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise AudioError(f"{where}: audio contains NaN or infinite samples")
    duration = arr.size / float(sample_rate)
    if duration > MAX_DURATION_S:
        raise AudioError(
            f"{where}: audio is {duration:.0f} s long; more than {MAX_DURATION_S:.0f} s is not a turn"
        )
    return Audio(samples=arr, sample_rate=int(sample_rate))


def read_audio(path: Union[str, Path]) -> Audio:
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    except Exception as exc:  # libsndfile reports corrupt files in several exception types
        raise AudioError(f"{path}: cannot be read as audio ({exc})") from None
    return check_audio(samples, sample_rate, str(path))


def resample(audio: Audio, sample_rate: int) -> Audio:
    if audio.sample_rate == sample_rate:
        return audio
    import soxr

    samples = soxr.resample(audio.samples, audio.sample_rate, sample_rate, quality="HQ")
    return Audio(samples=samples.astype(np.float32, copy=False), sample_rate=sample_rate)


def write_wav(path: Union[str, Path], audio: Audio) -> None:
    """Write 16-bit PCM WAV (atomically, so a reader never sees half a file)."""
    import soundfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    soundfile.write(str(tmp), np.clip(audio.samples, -1.0, 1.0), audio.sample_rate,
                    subtype="PCM_16", format="WAV")
    tmp.replace(path)


def to_wav_bytes(audio: Audio) -> bytes:
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.clip(audio.samples, -1.0, 1.0), audio.sample_rate,
                    subtype="PCM_16", format="WAV")
    return buf.getvalue()


def from_wav_bytes(data: bytes, where: str) -> Audio:
    import soundfile

    samples, sample_rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return check_audio(samples, sample_rate, where)


def concat(chunks: list[Audio], where: str) -> Audio:
    """Join chunks of one stream; they must share a sample rate."""
    rates = {c.sample_rate for c in chunks}
    if len(rates) != 1:
        raise AudioError(f"{where}: reply chunks have different sample rates {sorted(rates)}")
    return Audio(np.concatenate([c.samples for c in chunks]).astype(np.float32), rates.pop())
