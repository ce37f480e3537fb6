"""Audio in and out: every audio that enters ivbench passes `check_audio`.

16-bit PCM is read and written with one scale, 2**15 (int16 → float: /32768; float → int16:
×32768, rounded, saturated to [-32768, 32767]), so integer samples round-trip exactly. Audio
outside [-1, 1] is clipped by `clip_audio`, which says how much it changed, so the samples a
system hears are the samples that are saved (docs/architecture.md, "Runs survive their systems").
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import AudioError
from .types import Audio

MAX_DURATION_S = 600.0  # longer than any spoken turn; beyond it something is wrong
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
MAX_CHANNELS = 8  # a 2-D array with a side this short is read as (samples, channels) or (channels, samples)

# Integer PCM: full scale per dtype. Other integer dtypes (unsigned, int8, int64) have no one meaning.
_PCM_SCALE = {np.dtype(np.int16): 2.0 ** 15, np.dtype(np.int32): 2.0 ** 31}
_PCM16 = 2.0 ** 15


def _show(value: Any) -> str:
    """A value as a user wrote it: 16000.0, not np.float64(16000.0)."""
    return repr(value.item() if isinstance(value, np.generic) else value)[:60]


def _check_rate(sample_rate: Any, where: str) -> int:
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, np.integer)):
        raise AudioError(f"{where}: sample rate {_show(sample_rate)} is a {type(sample_rate).__name__}; "
                         "give an int number of Hz")
    if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise AudioError(f"{where}: sample rate {_show(sample_rate)} is outside {MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz")
    return int(sample_rate)


def _mono(arr: np.ndarray, where: str) -> np.ndarray:
    """1-D samples from a 1-D array or a 2-D one with one channel; says which axis held channels."""
    if arr.ndim == 1:
        return arr
    if arr.ndim != 2:
        raise AudioError(f"{where}: audio must be a 1-D array of samples, got shape {arr.shape}")
    rows, cols = arr.shape
    if cols == 1 or rows == 1:
        return arr.reshape(-1)
    if min(rows, cols) > MAX_CHANNELS:
        raise AudioError(f"{where}: a 2-D array of shape {arr.shape} is not audio; give a 1-D array of samples")
    layout = "(samples, channels)" if cols < rows else "(channels, samples)"
    raise AudioError(f"{where}: {min(rows, cols)} channels; ivbench needs mono audio (mix it down first): "
                     f"an array of shape {arr.shape}, read as {layout}")


def _as_float32(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype in _PCM_SCALE:
        return (arr.astype(np.float64) / _PCM_SCALE[arr.dtype]).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise AudioError(f"{where}: samples of dtype {arr.dtype} are not audio; give float32 in [-1, 1] "
                     "(or int16 / int32 PCM)")


def check_audio(samples: Any, sample_rate: Any, where: str) -> Audio:
    """Validate and normalise to mono float32; `where` names the source in errors.

    Accepts float arrays (any precision) and int16 / int32 PCM; refuses anything that is not a
    numpy array (a torch tensor: convert it on the CPU), several channels, NaN or infinite
    samples, and rates that are not a whole number of Hz in range. Values outside [-1, 1] pass
    unchanged: `clip_audio` decides about those, and reports them.
    """
    rate = _check_rate(sample_rate, where)
    if not isinstance(samples, np.ndarray):
        kind = type(samples)
        name = f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ not in ("builtins",) else kind.__name__
        raise AudioError(f"{where}: samples are a {name}, not a numpy array; yield numpy arrays on the CPU "
                         "(e.g. tensor.float().cpu().numpy())")
    arr = _mono(samples, where)
    if arr.size == 0:
        raise AudioError(f"{where}: audio is empty")
    arr = _as_float32(arr, where)
    finite = np.isfinite(arr)
    if not finite.all():
        first = int(np.argmin(finite))
        raise AudioError(f"{where}: audio contains NaN or infinite samples (first at sample {first}, "
                         f"{float(arr[first])})")
    duration = arr.size / float(rate)
    if duration > MAX_DURATION_S:
        raise AudioError(f"{where}: audio is {duration:.0f} s long; more than {MAX_DURATION_S:.0f} s is not a turn")
    return Audio(samples=arr, sample_rate=rate)


def clip_audio(audio: Audio, what: str) -> tuple[Audio, Optional[str]]:
    """The audio clipped to [-1, 1], and a warning saying how much was clipped (None if nothing)."""
    outside = np.abs(audio.samples) > 1.0
    count = int(outside.sum())
    if not count:
        return audio, None
    peak = float(np.abs(audio.samples).max())
    clipped = Audio(np.clip(audio.samples, -1.0, 1.0).astype(np.float32), audio.sample_rate)
    share = 100.0 * count / audio.samples.size
    return clipped, f"{what}: {count} samples ({share:.2g}%) outside [-1, 1] clipped (peak {peak:.3g})"


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples as 16-bit PCM: ×32768, rounded, saturated (the inverse of reading /32768)."""
    return np.clip(np.rint(np.asarray(samples, dtype=np.float64) * _PCM16), -32768, 32767).astype(np.int16)


def read_audio(path: Union[str, Path], shown: Optional[str] = None) -> Audio:
    """The file's samples; `shown` names the file in errors instead of `path` (a run's audio by its
    place in the run, so a failure reads the same wherever the run directory lies)."""
    import soundfile

    path = Path(path)
    name = shown or str(path)
    if not path.is_file():
        raise AudioError(f"{name}: audio file not found")
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    except Exception as exc:  # libsndfile reports corrupt files in several exception types
        raise AudioError(f"{name}: cannot be read as audio ({str(exc).replace(str(path), name)})") from None
    return check_audio(samples, sample_rate, name)


def resample(audio: Audio, sample_rate: int) -> Audio:
    if audio.sample_rate == sample_rate:
        return audio
    import soxr

    samples = soxr.resample(audio.samples, audio.sample_rate, sample_rate, quality="HQ")
    return Audio(samples=samples.astype(np.float32, copy=False), sample_rate=sample_rate)


def _write_pcm16(target: Any, audio: Audio) -> None:
    import soundfile

    # int16 data is written as is: the scaling is ours (to_pcm16), not libsndfile's.
    soundfile.write(target, to_pcm16(audio.samples), audio.sample_rate, subtype="PCM_16", format="WAV")


def write_wav(path: Union[str, Path], audio: Audio) -> None:
    """Write 16-bit PCM WAV (atomically, so a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    _write_pcm16(str(tmp), audio)
    tmp.replace(path)


def to_wav_bytes(audio: Audio) -> bytes:
    buf = io.BytesIO()
    _write_pcm16(buf, audio)
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
