"""`cascade`: Whisper ASR → LLM → streaming TTS, with a stage breakdown of every turn.

One turn, in the session's `respond()`:

1. ASR (speech-input modes): the user turn's audio is transcribed by `ivbench.asr.WhisperASR`;
   then `StageMark("asr_done", {"transcript": …})` (kept in the record's `stage_data`). An
   empty transcript (silence) fails the turn with
   `EmptyTranscriptError`: there is nothing to answer.
2. LLM: the system prompt, the session's history and the new user text go to the LLM
   backend (`transformers` or `openai`), which streams the reply. Every piece of text is
   yielded as a `TextDelta` the moment it is decoded.
3. TTS (speech-output modes): a `Chunker` cuts the streamed text every Θ words or at a
   sentence end, and each chunk is spoken by the voice while the LLM goes on writing, so
   the first `AudioChunk` comes before the LLM has finished. `theta=None`: the whole text
   first, then speech (sentence by sentence).

The LLM and the TTS stage run in two worker threads that put their events on one queue;
`respond()` yields each event as soon as it is there, so the runner's clock stamps the
stage marks when they happen: `asr_done`, `llm_first_token`, `tts_first_input` (the first
text chunk handed to the voice), `tts_first_chunk` (its first audio), `llm_done`, `tts_done`.

The session keeps the chat history (user texts — the ASR transcripts in speech-input modes —
and replies), so later turns see the earlier ones; a failed turn is left out of it. What the
ASR heard in each turn is kept in `session.log`.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Optional, Union
from collections.abc import Iterator

from ... import registry
from ...types import AudioChunk, Mode, ReplyEvent, StageMark, TextDelta, TurnInput
from ..base import Session, System
from .chunker import Chunker, speakable
from .llm import LLM, LLMError, Messages, OpenAILLM, TransformersLLM

log = logging.getLogger("ivbench.cascade")

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Your replies are spoken aloud, so answer briefly, in "
    "one to three short sentences of plain conversational English. Do not use lists, "
    "headings, tables, code or any other formatting."
)
DEFAULT_THETA = 3
LLM_BACKENDS = ("transformers", "openai")
ASR_BACKENDS = ("faster-whisper", "openai-whisper")
STAGES = ("asr_done", "llm_first_token", "tts_first_input", "tts_first_chunk", "llm_done", "tts_done")


class CascadeError(RuntimeError):
    """A cascade turn that cannot be answered, said plainly."""


class EmptyTranscriptError(CascadeError):
    """The ASR heard no words in the user turn (silence): there is nothing to answer."""


@dataclass
class TurnLog:
    """What the session did with one user turn."""

    turn_index: int
    mode: str
    heard: Optional[str]  # the ASR transcript (speech input), None for text input
    user_text: str  # what the LLM was given as the user's words
    reply: Optional[str] = None  # None until the turn has finished
    error: Optional[str] = None


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def _pipeline(llm: LLM, voice: Any, theta: Optional[int], messages: Messages,
              cancel: threading.Event) -> Iterator[Any]:
    """Run the LLM (and the voice, when given) in worker threads and yield their events in
    the order they happen, until both have finished. A worker's exception is re-raised here;
    leaving early (an exception, or the generator closed) cancels the workers."""
    events: queue.Queue[Any] = queue.Queue()
    to_speak: queue.Queue[Any] = queue.Queue()
    speak = voice is not None

    def llm_worker() -> None:
        chunker = Chunker(theta)
        state = {"first_token": True, "first_chunk": True}

        def hand_over(chunks: list[str]) -> None:
            for chunk in chunks:
                if state["first_chunk"]:
                    state["first_chunk"] = False
                    events.put(StageMark("tts_first_input"))
                to_speak.put(chunk)

        def on_text(piece: str) -> None:
            if not piece:
                return
            if state["first_token"]:
                state["first_token"] = False
                events.put(StageMark("llm_first_token"))
            events.put(TextDelta(piece))
            if speak:
                hand_over(chunker.feed(piece))

        try:
            llm.generate(messages, on_text, cancel.is_set)
            if not cancel.is_set():
                events.put(StageMark("llm_done"))
                if speak:
                    hand_over(chunker.flush())
        except BaseException as exc:  # handed to respond(), which raises it
            events.put(_Failure(exc))
        finally:
            to_speak.put(_END)
            events.put(_END)

    def tts_worker() -> None:
        first = True
        try:
            while True:
                chunk = to_speak.get()
                if chunk is _END or cancel.is_set():
                    break
                text = speakable(chunk)
                if not text:  # markup or punctuation only
                    continue
                for audio in voice.stream(text):
                    if cancel.is_set():
                        break
                    if first:
                        first = False
                        events.put(StageMark("tts_first_chunk"))
                    events.put(AudioChunk(audio.samples, audio.sample_rate))
            if not cancel.is_set():
                events.put(StageMark("tts_done"))
        except BaseException as exc:
            events.put(_Failure(exc))
        finally:
            events.put(_END)

    workers = [threading.Thread(target=llm_worker, name="cascade-llm", daemon=True)]
    if speak:
        workers.append(threading.Thread(target=tts_worker, name="cascade-tts", daemon=True))
    for worker in workers:
        worker.start()
    running = len(workers)
    try:
        while running:
            item = events.get()
            if item is _END:
                running -= 1
            elif isinstance(item, _Failure):
                raise item.exc
            else:
                yield item
    finally:
        cancel.set()  # stops the other worker when one failed or the turn was abandoned


class CascadeSession(Session):
    def __init__(self, system: Cascade) -> None:
        self.system = system
        self.history: Messages = []  # user and assistant messages of the finished turns
        self.log: list[TurnLog] = []
        self._cancel: Optional[threading.Event] = None

    def messages(self, user_text: str) -> Messages:
        """What the LLM gets for a new user turn: system prompt, history, the turn."""
        prompt = self.system.system_prompt
        head = [{"role": "system", "content": prompt}] if prompt else []
        return head + self.history + [{"role": "user", "content": user_text}]

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        system = self.system
        mode = Mode.parse(turn.mode)
        if mode not in system.supported_modes():
            raise CascadeError(f"this cascade does not support mode {mode.value} (it supports "
                               f"{', '.join(m.value for m in system.supported_modes())})")
        if system.llm is None:
            raise CascadeError("the cascade is not loaded: call load() first")
        heard: Optional[str] = None
        if mode.speech_in:
            if turn.audio is None:
                raise CascadeError(f"turn {turn.turn_index} in mode {mode.value} has no audio")
            heard = system.asr.transcribe(turn.audio).text
            yield StageMark("asr_done", {"transcript": heard})
            log.debug("cascade heard %r (dialogue %s turn %d)", heard, turn.dialogue_id, turn.turn_index)
        user_text = (heard if mode.speech_in else turn.text) or ""
        entry = TurnLog(turn.turn_index, mode.value, heard, user_text)
        self.log.append(entry)
        if not user_text.strip():
            if mode.speech_in and turn.audio is not None:  # a speech turn without audio was refused above
                entry.error = (f"the ASR heard no words in the user turn ({turn.audio.duration_s:.2f} s "
                               "of audio; silence?): nothing to answer")
                raise EmptyTranscriptError(entry.error)
            entry.error = "the user turn has no text: nothing to answer"
            raise CascadeError(entry.error)
        messages = self.messages(user_text)
        cancel = self._cancel = threading.Event()
        parts: list[str] = []
        try:
            for event in _pipeline(system.llm, system.voice if mode.speech_out else None,
                                   system.theta, messages, cancel):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                yield event
        except BaseException as exc:
            entry.error = f"{type(exc).__name__}: {exc}"
            raise
        reply = "".join(parts).strip()
        if not reply:
            entry.error = "the LLM returned an empty reply"
            raise LLMError(entry.error)
        entry.reply = reply
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": reply}]

    def close(self) -> None:
        if self._cancel is not None:
            self._cancel.set()


def _voice_spec(voice: Union[None, str, dict[str, Any]]) -> Optional[registry.Spec]:
    if voice is None or (isinstance(voice, str) and voice.strip().lower() in ("", "none", "null")):
        return None
    if isinstance(voice, dict):
        options = dict(voice)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"cascade voice {voice!r}: a mapping needs 'name' (e.g. piper:joe)")
        return registry.parse_spec(name, extra=options)
    if isinstance(voice, str):
        return registry.parse_spec(voice)
    raise ValueError(f"cascade voice={voice!r}: give a voice spec such as piper:joe, a mapping, or null")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"cascade {name}={value!r}: give an integer of at least 1")
    return value


def _theta(theta: Union[int, str, None]) -> Optional[int]:
    """Words per spoken chunk; None (also spelt none, null, whole or empty): the whole reply first."""
    if isinstance(theta, str) and theta.strip().lower() in ("none", "null", "whole", ""):
        return None
    return None if theta is None else _positive_int("theta", theta)


def _asr_backend(asr_backend: Optional[str]) -> Optional[str]:
    """The ASR backend named, or None (also spelt none, null or empty): text input only."""
    if isinstance(asr_backend, str) and asr_backend.strip().lower() in ("", "none", "null"):
        return None
    if asr_backend is not None and asr_backend not in ASR_BACKENDS:
        raise ValueError(f"cascade asr_backend={asr_backend!r}: use one of {', '.join(ASR_BACKENDS)}, "
                         "or null for text input only")
    return asr_backend


def _check_llm_options(backend: str, *, temperature: float, top_p: float, gguf_file: Optional[str],
                       llm_threads: Optional[int], llm_dtype: str, repetition_penalty: float,
                       base_url: Optional[str]) -> None:
    """The LLM's options: values in range, none of another backend's options."""
    if not 0.0 <= float(temperature) <= 2.0:
        raise ValueError(f"cascade temperature={temperature!r}: must be in [0, 2]")
    if not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"cascade top_p={top_p!r}: must be in (0, 1]")
    # Options of one backend given to the other are mistakes, not silently ignored.
    only = {"transformers": {"gguf_file": gguf_file is not None, "llm_threads": llm_threads is not None,
                             "llm_dtype": llm_dtype != "auto",
                             "repetition_penalty": float(repetition_penalty) != 1.0},
            "openai": {"base_url": base_url is not None}}
    for other, names in only.items():
        given = [k for k, v in names.items() if v]
        if other != backend and given:
            raise ValueError(f"cascade {given[0]} applies to llm_backend={other} only "
                             f"(this cascade's llm_backend is {backend})")
    if llm_threads is not None:
        _positive_int("llm_threads", llm_threads)


class Cascade(System):
    """Whisper ASR → LLM → streaming TTS. Options (YAML keys, or `cascade:key=value,…`):

    - `theta`: words per spoken chunk (chunks also end at sentence ends); null: the whole
      reply first, then speech. Default 3.
    - LLM: `llm_backend` (transformers, openai), `llm_model` (transformers: a folder, a .gguf
      file or a hub id, default the bundled SmolLM2-135M-Instruct; openai: the model name),
      `gguf_file`, `llm_dtype`, `llm_threads` (transformers); `base_url`, `api_key_env`,
      `llm_timeout`, `llm_retries` (openai); `max_new_tokens` (128), `temperature` (0: greedy),
      `top_p`, `repetition_penalty` (transformers), `seed`, `system_prompt` (null: none).
    - ASR: `asr_backend` (faster-whisper, openai-whisper; null: no ASR, text input only),
      `asr_model` (default the bundled tiny.en), `asr_compute_type`, `asr_beam_size`.
    - TTS: `voice` (a voice spec such as piper:joe, or a mapping with name and options; null:
      no TTS, text output only).
    """

    modes = (Mode.S2S, Mode.S2T, Mode.T2S, Mode.T2T)
    default_llm_backend = "transformers"

    def __init__(self, theta: Union[int, str, None] = DEFAULT_THETA, llm_backend: Optional[str] = None,
                 llm_model: Optional[str] = None, gguf_file: Optional[str] = None,
                 llm_dtype: str = "auto", llm_threads: Optional[int] = None,
                 base_url: Optional[str] = None, api_key_env: Optional[str] = None,
                 llm_timeout: float = 60.0, llm_retries: int = 2, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 seed: int = 0, system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT,
                 asr_backend: Optional[str] = "faster-whisper", asr_model: Optional[str] = None,
                 asr_compute_type: Optional[str] = None, asr_beam_size: int = 1,
                 voice: Union[None, str, dict[str, Any]] = "piper:joe") -> None:
        theta = _theta(theta)
        backend = llm_backend or self.default_llm_backend
        if backend not in LLM_BACKENDS:
            raise ValueError(f"cascade llm_backend={backend!r}: use one of {', '.join(LLM_BACKENDS)}")
        asr_backend = _asr_backend(asr_backend)
        _positive_int("max_new_tokens", max_new_tokens)
        _positive_int("asr_beam_size", asr_beam_size)
        _check_llm_options(backend, temperature=temperature, top_p=top_p, gguf_file=gguf_file,
                           llm_threads=llm_threads, llm_dtype=llm_dtype, repetition_penalty=repetition_penalty,
                           base_url=base_url)
        self._voice_spec = _voice_spec(voice)
        super().__init__(
            theta=theta, llm_backend=backend, llm_model=llm_model, gguf_file=gguf_file,
            llm_dtype=llm_dtype, llm_threads=llm_threads, base_url=base_url, api_key_env=api_key_env,
            llm_timeout=llm_timeout, llm_retries=llm_retries, max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed,
            system_prompt=system_prompt, asr_backend=asr_backend, asr_model=asr_model,
            asr_compute_type=asr_compute_type, asr_beam_size=asr_beam_size,
            voice=None if self._voice_spec is None else self._voice_spec.label)
        self.theta: Optional[int] = theta
        self.system_prompt = system_prompt or ""
        self._llm: LLM
        if backend == "openai":
            self._llm = OpenAILLM(llm_model, base_url=base_url, api_key_env=api_key_env,
                                  max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                  seed=seed, timeout=llm_timeout, retries=llm_retries)
        else:
            self._llm = TransformersLLM(llm_model, gguf_file=gguf_file, dtype=llm_dtype,
                                        max_new_tokens=max_new_tokens, temperature=temperature,
                                        top_p=top_p, repetition_penalty=repetition_penalty, seed=seed,
                                        threads=llm_threads)
        self.llm: Optional[LLM] = None
        self.asr: Any = None
        self.voice: Any = None

    def supported_modes(self) -> tuple[Mode, ...]:
        listens = self.options["asr_backend"] is not None
        speaks = self._voice_spec is not None
        return tuple(m for m in self.modes if (listens or not m.speech_in) and (speaks or not m.speech_out))

    def load(self, device: str = "cpu") -> None:
        # The LLM first: a bad model path or a missing package fails before anything else loads.
        self._llm.load(device)
        self.llm = self._llm
        if self.options["asr_backend"] is not None and self.asr is None:
            from ...asr import WhisperASR

            # Word timestamps would only slow the first packet: the cascade needs the text alone.
            asr = WhisperASR(backend=self.options["asr_backend"], model=self.options["asr_model"],
                             device=device, compute_type=self.options["asr_compute_type"],
                             beam_size=self.options["asr_beam_size"],
                             word_timestamps=False)
            asr.load()
            self.asr = asr
        if self._voice_spec is not None and self.voice is None:
            voice = registry.create("voices", self._voice_spec)
            voice.load(device)
            voice.speak("Ready.")  # onnxruntime's first-run costs stay out of the first turn
            self.voice = voice

    def new_session(self) -> CascadeSession:
        return CascadeSession(self)

    def close(self) -> None:
        self._llm.close()
        self.llm = self.asr = self.voice = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["llm"] = self._llm.identity()
        if self.asr is not None:
            info["asr"] = self.asr.identity()
        if self.voice is not None:
            info["voice"] = self.voice.identity()
        return info


class CascadeOpenAI(Cascade):
    """The `cascade-openai` preset: Whisper + an OpenAI-compatible endpoint + Piper. Give
    `llm_model` (the served model's name) and `base_url` (or set OPENAI_BASE_URL); the key
    comes from the environment variable `api_key_env` (unnamed: OPENAI_API_KEY, for OpenAI's API only)."""

    default_llm_backend = "openai"
