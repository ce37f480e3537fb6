"""eSpeak NG formant voices: libespeak-ng (from the espeakng-loader package) through ctypes.

libespeak-ng keeps its synthesis state in C globals and function statics, some of which
(the pitch-flutter phase, the gain control, the glottal cycle counter) survive
`espeak_Terminate` and carry over from one utterance to the next: the same sentence spoken
twice in one process gives slightly different samples. To be deterministic every sentence
is spoken by a fresh instance of the library: a private copy of the .so (so no other user of
libespeak-ng in the process, such as phonemizer, holds it open) is dlopen'ed, initialised,
used and dlclose'd again, which costs about 4 ms. All of this runs under one module-level
lock, as the library is process-global state.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional
from collections.abc import Iterator

import numpy as np

from .base import Voice

_LOCK = threading.RLock()

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.c_void_p)


class _VoiceInfo(ctypes.Structure):
    """espeak_VOICE, as espeak_ListVoices returns it. `languages` is a list of
    (priority byte, NUL-terminated language code) pairs ended by a zero byte."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


# Set once per process (under _LOCK): (private copy of the library, its data folder,
# sha256 prefix of the library, sample rate, accepted voice names -> identifier).
_STATE: Optional[tuple[str, bytes, str, int, dict[str, str]]] = None


def _paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError:
        raise ImportError(
            "the espeak voice needs espeakng-loader: `pip install ivbench[voices]`"
        ) from None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def _declare(lib: Any) -> None:
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint,
                                 ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceInfo))
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]


@contextlib.contextmanager
def _instance(lib_path: str, data_path: bytes) -> Iterator[tuple[Any, int]]:
    """A freshly loaded and initialised library: (lib, sample rate). Hold _LOCK."""
    import _ctypes

    try:
        lib = ctypes.CDLL(lib_path)
    except OSError as exc:
        raise RuntimeError(f"cannot load libespeak-ng ({lib_path}): {exc}") from None
    try:
        _declare(lib)
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path,
                                     _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (data at {data_path.decode()})")
        try:
            yield lib, int(rate)
        finally:
            lib.espeak_Terminate()
    finally:
        _ctypes.dlclose(lib._handle)


def _voice_names(lib: Any) -> dict[str, str]:
    """Every accepted spelling (lower case) -> the voice identifier espeak loads it by.

    Spellings are the identifier ("gmw/en-US"), its last part ("en-us"), the display name
    ("english (america)") and the language codes the voice declares ("en-gb"; where several
    voices claim a code, the one that gives it the best priority).
    """
    names: dict[str, str] = {}
    by_language: dict[str, tuple[int, str]] = {}
    voices = lib.espeak_ListVoices(None)
    i = 0
    while voices and voices[i]:
        v = voices[i].contents
        i += 1
        if not v.identifier:
            continue
        ident = v.identifier.decode("utf-8", "replace")
        names[ident.lower()] = ident
        names[ident.rsplit("/", 1)[-1].lower()] = ident
        if v.name:
            names[v.name.decode("utf-8", "replace").lower()] = ident
        p = v.languages
        while p:
            priority = ctypes.string_at(p, 1)[0]
            if priority == 0:
                break
            code = ctypes.string_at(p + 1)
            p += len(code) + 2
            key = code.decode("utf-8", "replace").lower()
            if key not in by_language or priority < by_language[key][0]:
                by_language[key] = (priority, ident)
    for language, (_, ident) in by_language.items():
        names.setdefault(language, ident)
    return names


def _state() -> tuple[str, bytes, str, int, dict[str, str]]:
    """Copy the library privately and read its sample rate and voices, once per process."""
    global _STATE
    with _LOCK:
        if _STATE is None:
            src, data = _paths()
            if not Path(src).is_file():
                raise RuntimeError(f"libespeak-ng not found at {src}; reinstall espeakng-loader")
            blob = Path(src).read_bytes()
            folder = tempfile.mkdtemp(prefix="ivbench-espeak-")
            atexit.register(shutil.rmtree, folder, True)
            copy = str(Path(folder) / Path(src).name)
            Path(copy).write_bytes(blob)
            data_b = data.encode("utf-8")
            with _instance(copy, data_b) as (lib, rate):
                names = _voice_names(lib)
            _STATE = (copy, data_b, hashlib.sha256(blob).hexdigest()[:16], rate, names)
        return _STATE


# Samples of the sentence being spoken; only touched while _LOCK is held.
_chunks: list[np.ndarray] = []


@_SynthCallback
def _on_samples(wav: Any, numsamples: int, events: Any) -> int:
    if wav and numsamples > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    return 0  # 0 = go on


def _variants(data_path: bytes) -> dict[str, str]:
    """Voice variants ("f3", "klatt", …): lower-case name -> file name."""
    folder = Path(data_path.decode("utf-8")) / "voices" / "!v"
    if not folder.is_dir():
        return {}
    return {p.name.lower(): p.name for p in folder.iterdir() if p.is_file()}


class EspeakVoice(Voice):
    """Options: `rate` (words per minute, default 175), `pitch` (0–100, default 50),
    `pitch_range` (0–100, default 50), `volume` (amplitude, default 100), `seed` (espeak's
    noise generator is seeded with it before every sentence).

    `variant` is an espeak voice: a language code or voice name such as "en-us" (default),
    "en-gb", "gmw/en-GB-x-rp", optionally with a voice variant: "en-us+f3".
    """

    engine = "espeak"

    def __init__(self, variant: Optional[str] = None, rate: int = 175, pitch: int = 50,
                 pitch_range: int = 50, volume: int = 100, seed: int = 0) -> None:
        for name, value, low, high in (("rate", rate, 80, 450), ("pitch", pitch, 0, 100),
                                       ("pitch_range", pitch_range, 0, 100),
                                       ("volume", volume, 0, 200),
                                       ("seed", seed, 0, 2**31 - 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or not low <= int(value) <= high:
                raise ValueError(f"espeak option {name}={value!r}: give an integer in {low}–{high}")
        super().__init__(variant or "en-us", rate=int(rate), pitch=int(pitch),
                         pitch_range=int(pitch_range), volume=int(volume), seed=int(seed))
        self._rate = 0
        self._digest = ""
        self._voice_name = b""  # what espeak_SetVoiceByName is given

    @property
    def sample_rate(self) -> int:
        self.load()
        return self._rate

    def _load(self, device: str) -> None:
        _, data, digest, rate, names = _state()
        base, plus, extra = str(self.variant).partition("+")
        ident = names.get(base.strip().lower())
        if ident is None:
            english = sorted({k for k in names if k.startswith("en") and not set(k) & set("/ (")})
            raise ValueError(
                f"espeak has no voice {base!r}; English ones: {', '.join(english)} (any of "
                f"{len(set(names.values()))} installed voices by language code or name, "
                f"with an optional variant as in 'en-us+f3')"
            )
        if plus:
            known = _variants(data)
            extra = known.get(extra.strip().lower(), "")
            if not extra:
                raise ValueError(
                    f"espeak has no voice variant {str(self.variant).partition('+')[2]!r}; "
                    f"variants: {', '.join(sorted(known.values()))}"
                )
        self._voice_name = (ident + plus + extra).encode("utf-8")
        self._rate = rate
        self._digest = digest

    def identity(self) -> dict[str, Any]:
        self.load()
        return {**super().identity(), "voice": self._voice_name.decode("utf-8"),
                "library_sha256": self._digest}

    def _synthesize(self, sentence: str) -> np.ndarray:
        copy, data, _, _, _ = _state()
        text = sentence.encode("utf-8") + b"\0"
        with _LOCK, _instance(copy, data) as (lib, _):
            _chunks.clear()
            try:
                if lib.espeak_SetVoiceByName(self._voice_name) != _EE_OK:
                    raise RuntimeError(f"espeak could not select voice {self._voice_name!r}")
                for param, key in ((_PARAM_RATE, "rate"), (_PARAM_PITCH, "pitch"),
                                   (_PARAM_RANGE, "pitch_range"), (_PARAM_VOLUME, "volume")):
                    lib.espeak_SetParameter(param, self.options[key], 0)
                lib.espeak_ng_SetRandSeed(self.options["seed"])
                lib.espeak_SetSynthCallback(_on_samples)
                err = lib.espeak_Synth(text, len(text), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                       None, None)
                if err != _EE_OK:
                    raise RuntimeError(f"espeak_Synth failed with error {err}")
                lib.espeak_Synchronize()
                samples = np.concatenate(_chunks) if _chunks else np.zeros(0, dtype=np.int16)
            finally:
                _chunks.clear()
        return samples.astype(np.float32) / 32768.0
