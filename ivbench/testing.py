"""Test doubles shipped with ivbench: a system whose every call can be told to misbehave.

    ivbench eval --system ivbench.testing:Scripted                       # replies "reply to <turn>"
    ivbench eval --system ivbench.testing:Scripted:raise_in=respond,dialogue=d0,turn=0
    ivbench eval --system ivbench.testing:Scripted:hang_in=new_session,hang_s=30,session=0
    ivbench eval --system ivbench.testing:Scripted:forever=audio
    ivbench eval --system ivbench.testing:Scripted:bad=nan
    ivbench eval --system ivbench.testing:Scripted:crash_in=respond,crash=segfault,dialogue=d1
    ivbench eval --voice ivbench.testing:ScriptedVoice:amplitude=1.5   # user turns louder than full scale

`Scripted` is how ivbench's own tests (and a plugin author's) check that a run survives its
system: what the runner records when a call raises, hangs, yields forever or yields an event
that is not what the system API promises, and what the worker process running it records when
the system ends or damages that process (`crash`).
"""
from __future__ import annotations

import builtins
import ctypes
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional, cast

import numpy as np

from .errors import ConfigError
from .systems.base import Session, System
from .types import AudioChunk, Mode, ReplyEvent, StageMark, TextDelta, TurnInput
from .voices.base import Voice

CALLS = ("load", "new_session", "respond", "session_close", "close", "describe")
BAD_EVENTS = ("tensor", "nan", "inf", "stereo", "stereo_first", "float_rate", "int_text", "not_event",
              "stage_data", "stage_name")
FOREVER = ("audio", "text", "empty")
AUDIO = ("constant", "ramp")
DTYPES = ("float32", "float64", "int16")
# What `crash` does to the process at a call named in `crash_in` (see Scripted).
CRASHES = ("exit", "os_exit", "segfault", "gil", "thread", "close_stdout", "redirect_stdout", "chdir")


def _calls(value: Optional[str], option: str) -> frozenset[str]:
    names = frozenset(filter(None, (value or "").split("+")))
    unknown = sorted(names - set(CALLS))
    if unknown:
        raise ConfigError(f"Scripted: {option}={value!r}: unknown call {unknown[0]!r}; use {', '.join(CALLS)} "
                          "(join several with '+')")
    return names


def _choice(value: Optional[str], option: str, allowed: tuple[str, ...]) -> Optional[str]:
    if value is not None and value not in allowed:
        raise ConfigError(f"Scripted: {option}={value!r}; use one of {', '.join(allowed)}")
    return value


class Scripted(System):
    """A system that does what its options say.

    Reply: `text` ("reply to {text}": the turn's text goes in place of {text}); in speech-out
    modes `audio_s` seconds (0.1) of `audio` ("constant": `amplitude` everywhere, default 0.1;
    "ramp": every int16 value once, in order) at `rate` Hz (16000) as `dtype` (float32,
    float64, int16); a StageMark "heard" with the turn's transcript unless `stage=false`.
    `modes` ("t2t+t2s+s2t+s2s": the first is the default mode).

    Misbehaviour: `raise_in` and `hang_in` name calls (load, new_session, respond,
    session_close, close, describe; join several with '+'): a call named in `raise_in` raises
    `error` (a built-in exception name, RuntimeError) with `message`; one named in `hang_in`
    sleeps `hang_s` seconds (30) first. `forever` (audio, text, empty) makes respond() yield
    without end (one event every `pace_s` seconds, 0: as fast as it can); `bad` makes it yield
    one bad event of that kind after its text (tensor, nan, inf, stereo, stereo_first,
    float_rate, int_text, not_event, stage_data, stage_name).

    Damage to the process: at a call named in `crash_in`, `crash` does one of: exit
    (`sys.exit(exit_code)`, 3), os_exit (`os._exit(exit_code)`), segfault (SIGSEGV to itself),
    gil (holds the interpreter lock for `hang_s` seconds in a C call, so no thread of the
    process runs), thread (starts a non-daemon thread that sleeps for an hour), close_stdout
    (`sys.stdout.close()`), redirect_stdout (file descriptor 1 to /dev/null), chdir (into a new
    temporary folder). The last four return and the call goes on as usual. `say` is a line that
    load() writes to stderr (what a library prints before it dies).

    Which turns: `dialogue` and `turn` limit respond's misbehaviour to matching turns; `session`
    limits new_session, respond and session_close to the session with that index (0 is the
    first one made, the warm-up's if there is one).
    """

    modes = (Mode.T2T, Mode.T2S, Mode.S2T, Mode.S2S)

    def __init__(self, modes: Optional[str] = None, text: str = "reply to {text}", audio_s: float = 0.1,
                 audio: str = "constant", amplitude: float = 0.1, rate: int = 16000, dtype: str = "float32",
                 stage: bool = True, raise_in: Optional[str] = None, hang_in: Optional[str] = None,
                 hang_s: float = 30.0, error: str = "RuntimeError", message: str = "scripted failure",
                 forever: Optional[str] = None, bad: Optional[str] = None, dialogue: Optional[str] = None,
                 turn: Optional[int] = None, session: Optional[int] = None, pace_s: float = 0.0,
                 crash_in: Optional[str] = None, crash: str = "exit", exit_code: int = 3,
                 say: Optional[str] = None) -> None:
        given = {k: v for k, v in locals().items() if k not in ("self", "__class__") and v is not None}
        super().__init__(**given)
        self._modes = tuple(Mode.parse(m) for m in str(modes).split("+")) if modes else type(self).modes
        self.raise_in = _calls(raise_in, "raise_in")
        self.hang_in = _calls(hang_in, "hang_in")
        self.crash_in = _calls(crash_in, "crash_in")
        self.crash = _choice(crash, "crash", CRASHES)
        self.exit_code = exit_code
        self.say = say
        exception = getattr(builtins, error, None)
        if not (isinstance(exception, type) and issubclass(exception, Exception)):
            raise ConfigError(f"Scripted: error={error!r} is not a built-in exception (e.g. RuntimeError, OSError)")
        self.exception: type[Exception] = exception
        self.reply_text, self.audio_s, self.amplitude, self.rate = str(text), audio_s, amplitude, rate
        self.audio_kind = _choice(audio, "audio", AUDIO)
        self.dtype = _choice(dtype, "dtype", DTYPES)
        self.stage, self.hang_s, self.message = stage, hang_s, str(message)
        self.forever = _choice(forever, "forever", FOREVER)
        self.pace_s = pace_s
        self.bad = _choice(bad, "bad", BAD_EVENTS)
        self.dialogue, self.turn, self.session = dialogue, turn, session
        self.sessions_made = 0
        self.events_yielded = 0  # by respond(), all sessions together: shows when a reply stops being read
        self.replies_closed = 0  # respond() generators that ended or were closed

    def supported_modes(self) -> tuple[Mode, ...]:
        return self._modes

    # -- misbehaviour ---------------------------------------------------------------------------
    def _fault(self, call: str) -> None:
        """Damage the process, hang and/or raise, as the options say for `call`."""
        if call in self.crash_in:
            _crash(str(self.crash), self.exit_code, self.hang_s)
        if call in self.hang_in:
            time.sleep(self.hang_s)
        if call in self.raise_in:
            raise self.exception(self.message)

    def _session_matches(self, index: int) -> bool:
        return self.session is None or index == self.session

    def turn_matches(self, session_index: int, turn: TurnInput) -> bool:
        return (self._session_matches(session_index)
                and (self.dialogue is None or str(turn.dialogue_id) == str(self.dialogue))
                and (self.turn is None or turn.turn_index == self.turn))

    # -- the system API -------------------------------------------------------------------------
    def load(self, device: str) -> None:
        if self.say is not None:
            print(self.say, file=sys.stderr, flush=True)
        self._fault("load")

    def new_session(self) -> Session:
        index = self.sessions_made
        self.sessions_made += 1
        if self._session_matches(index):
            self._fault("new_session")
        return ScriptedSession(self, index)

    def close(self) -> None:
        self._fault("close")

    def describe(self) -> dict[str, Any]:
        self._fault("describe")
        return super().describe()

    # -- what it says ---------------------------------------------------------------------------
    def audio(self) -> np.ndarray:
        if self.audio_kind == "ramp":
            pcm = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
        else:
            value = round(self.amplitude * 32768) if self.dtype == "int16" else self.amplitude
            pcm = np.full(max(1, int(self.audio_s * self.rate)), value)
        if self.dtype == "int16":
            return pcm.astype(np.int16)
        scale = 32768.0 if self.audio_kind == "ramp" else 1.0
        return (pcm.astype(np.float64) / scale).astype(self.dtype)

    def bad_event(self) -> Any:
        kind = self.bad
        samples = np.full(1600, 0.1, dtype=np.float32)
        if kind == "tensor":
            import torch

            # Deliberately not an ndarray: the runner must refuse a chunk of another type.
            return AudioChunk(cast(Any, torch.zeros(1600)), 16000)
        if kind in ("nan", "inf"):
            samples[700] = np.nan if kind == "nan" else np.inf
            return AudioChunk(samples, 16000)
        if kind == "stereo":
            return AudioChunk(np.stack([samples, samples], axis=1), 16000)  # (samples, channels)
        if kind == "stereo_first":
            return AudioChunk(np.stack([samples, samples], axis=0), 16000)  # (channels, samples)
        if kind == "float_rate":
            return AudioChunk(samples, 16000.0)  # type: ignore[arg-type]
        if kind == "int_text":
            return TextDelta(42)  # type: ignore[arg-type]
        if kind == "stage_data":
            return StageMark("heard", {"at": {1, 2}})
        if kind == "stage_name":
            return StageMark(7)  # type: ignore[arg-type]
        return {"text": "a dict, not an event"}


def _crash(kind: str, exit_code: int, hold_s: float) -> None:
    """What a system can do to the process it runs in (the worker's, unless --in-process)."""
    if kind == "exit":
        sys.exit(exit_code)
    if kind == "os_exit":
        os._exit(exit_code)
    if kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)  # the signal is delivered at once; never reached
    elif kind == "gil":
        # A C function called through PyDLL keeps the interpreter lock: every thread stops.
        ctypes.PyDLL(None).sleep(ctypes.c_uint(max(1, round(hold_s))))
    elif kind == "thread":
        threading.Thread(target=time.sleep, args=(3600,), name="scripted-non-daemon", daemon=False).start()
    elif kind == "close_stdout":
        sys.stdout.close()
    elif kind == "redirect_stdout":
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    elif kind == "chdir":
        os.chdir(tempfile.mkdtemp(prefix="scripted-chdir-"))


class ScriptedSession(Session):
    def __init__(self, owner: Scripted, index: int) -> None:
        self.owner = owner
        self.index = index

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        try:
            for event in self._events(turn):
                self.owner.events_yielded += 1
                yield event
        finally:
            self.owner.replies_closed += 1

    def _events(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        owner = self.owner
        misbehave = owner.turn_matches(self.index, turn)
        if misbehave:
            owner._fault("respond")
        yield TextDelta(owner.reply_text.replace("{text}", turn.text))
        if owner.stage:
            heard: dict[str, Any] = {"transcript": turn.text.lower(), "words": len(turn.text.split())}
            if turn.audio is not None:  # what it was given, so tests can compare it with what was saved
                heard["peak"] = float(np.abs(turn.audio.samples).max())
            yield StageMark("heard", heard)
        if misbehave and owner.bad is not None:
            yield owner.bad_event()
        if misbehave and owner.forever is not None:
            yield from _forever(owner.forever, owner.rate, owner.pace_s)
        if turn.mode.speech_out:
            yield AudioChunk(owner.audio(), owner.rate)

    def close(self) -> None:
        if self.owner._session_matches(self.index):
            self.owner._fault("session_close")


def _forever(kind: str, rate: int, pace_s: float) -> Iterator[ReplyEvent]:
    second = np.zeros(rate, dtype=np.float32)
    while True:
        if pace_s:
            time.sleep(pace_s)
        if kind == "audio":
            yield AudioChunk(second, rate)
        elif kind == "text":
            yield TextDelta("x" * 10_000)
        else:
            yield TextDelta("")


class ScriptedVoice(Voice):
    """A voice without a model: a tone of `amplitude` (0.3), 50 ms per character, at `rate` Hz.
    An amplitude above 1 makes speech outside [-1, 1], as a loud real voice can."""

    engine = "scripted"

    def __init__(self, variant: Optional[str] = None, amplitude: float = 0.3, rate: int = 16000,
                 **options: Any) -> None:
        super().__init__(variant or "tone", amplitude=amplitude, rate=rate, **options)

    @property
    def sample_rate(self) -> int:
        return int(self.options["rate"])

    def _load(self, device: str) -> None:
        pass

    def _synthesize(self, sentence: str) -> np.ndarray:
        n = int(0.05 * self.sample_rate * len(sentence))
        tone = np.sin(2 * np.pi * 220.0 * np.arange(n) / self.sample_rate)
        return (self.options["amplitude"] * tone).astype(np.float32)
