"""Audio for the report: embedded as small Ogg/Opus data URLs, linked, or left out.

Speech is mixed to mono, resampled to 16 kHz and encoded as Opus at a low bitrate
(`BITRATE`: about 2 KB per second of speech, 120 KB a minute, base64 included), which keeps a
report of a thousand turns small enough to e-mail while every reply stays as clear to a
listener (and to Whisper) as the WAV: benchmarks/report_size.py measures both.
Chromium, Firefox and Safari play Ogg/Opus. Encoded clips are cached by the WAV file's
content (`ivbench.cache`), so rendering a report again costs nothing for its audio.

The encoder is libopus through PyAV (which faster-whisper needs too): at a middling
complexity it is several times faster than libsndfile's Opus writer, at the same size.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path
from typing import Optional
from collections.abc import Iterable
from urllib.parse import quote

import numpy as np

from ..cache import SqliteCache, content_key, default_cache_dir, sha256_file
from ..errors import ConfigError

MODES = ("embed", "link", "none")
SAMPLE_RATE = 16000  # wideband speech: all that a listener needs to judge a reply
BITRATE = 12000  # bits per second; below about 10 kb/s libopus narrows the band and harsh voices blur
MIME = "audio/ogg"
CACHE_FILE = "report_audio.sqlite"
# "voip": libopus tuned for speech intelligibility; complexity 5 of 10 halves the encoding
# time of the default and changes the sound little at this bitrate.
ENCODER_OPTIONS = {"application": "voip", "compression_level": "5"}


def encode_opus(path: Path) -> bytes:
    """A WAV (or any file soundfile reads) as mono 16 kHz Ogg/Opus bytes."""
    import av

    from ..audio import read_audio, resample

    audio = resample(read_audio(path), SAMPLE_RATE)
    samples = np.ascontiguousarray(np.clip(audio.samples, -1.0, 1.0), dtype=np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=SAMPLE_RATE, layout="mono", options=ENCODER_OPTIONS)
        stream.bit_rate = BITRATE
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def _encoder_identity() -> str:
    import av

    return f"pyav {av.__version__} libopus"


class AudioSources:
    """The `src` of each audio element: a data URL, a link relative to the report, or None.

    `prepare(paths)` encodes every clip a report will embed in one pass (cached); `src(path)`
    then answers at once. A file that is missing or unreadable has no source, and `problems`
    says why.
    """

    def __init__(self, mode: str, report_dir: Path, cache_dir: Optional[Path] = None,
                 use_cache: bool = True) -> None:
        if mode not in MODES:
            raise ConfigError(f"audio: use one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.report_dir = Path(report_dir).resolve()
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self._data: dict[Path, str] = {}
        self._digests: dict[Path, str] = {}
        self.problems: dict[Path, str] = {}

    def prepare(self, paths: Iterable[Path]) -> None:
        if self.mode != "embed":
            return
        todo = [p for p in dict.fromkeys(Path(p) for p in paths) if p not in self._data]
        if not todo:
            return
        cache = SqliteCache((self.cache_dir or default_cache_dir()) / CACHE_FILE, enabled=self.use_cache)
        encoder = _encoder_identity()
        try:
            for path in todo:
                try:
                    raw = path.read_bytes()
                except OSError as exc:
                    self.problems[path] = f"audio file not readable: {exc.strerror or exc}"
                    continue
                digest = self._digests[path] = hashlib.sha256(raw).hexdigest()
                key = content_key("report-audio", encoder, SAMPLE_RATE, BITRATE, ENCODER_OPTIONS, digest)
                blob = cache.get(key)
                if blob is None:
                    try:
                        blob = encode_opus(path)
                    except Exception as exc:  # a damaged file must not sink the whole report
                        self.problems[path] = f"audio could not be encoded: {exc}"
                        continue
                    cache.put(key, blob)
                self._data[path] = f"data:{MIME};base64,{base64.b64encode(blob).decode('ascii')}"
        finally:
            cache.close()

    def digest(self, path: Path) -> str:
        """SHA-256 of a clip's bytes (known from `prepare` when embedding), so that one clip found
        under several runs is shown once; the path itself where the file cannot be read."""
        path = Path(path)
        found = self._digests.get(path)
        if found is None:
            try:
                found = sha256_file(path)
            except OSError:
                found = str(path)
            self._digests[path] = found
        return found

    def src(self, path: Optional[Path]) -> Optional[str]:
        if path is None or self.mode == "none":
            return None
        path = Path(path)
        if self.mode == "embed":
            if path not in self._data and path not in self.problems:
                self.prepare([path])
            return self._data.get(path)
        if not path.is_file():
            self.problems[path] = "audio file not found"
            return None
        target = path.resolve()
        try:
            rel = os.path.relpath(target, self.report_dir)
        except ValueError:  # another drive (Windows): an absolute file URL
            return target.as_uri()
        return quote(Path(rel).as_posix())
