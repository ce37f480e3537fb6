"""`groupformer` and `groupformer-text-first`: the IntrinsicVoice reference model as systems.

Importing this module imports neither torch nor transformers; `load()` does.

    ivbench eval --system groupformer:checkpoint=/path/to/ckpt
    ivbench eval --system groupformer:init=random,size=tiny          # untrained — latency only
    ivbench eval --system groupformer-text-first:init=random,size=qwen2-7b --device cuda

Options: `checkpoint` (a GroupFormer folder), `init` ("checkpoint" or "random"), `size`
(random init: tiny, qwen2-0.5b, qwen2-7b), `group_size` (G, random init; a checkpoint has
its own), `device` (cpu, cuda; default: the run's), `dtype` (auto: bfloat16 on CUDA, float32
on CPU), `text_first` (write the whole text reply before its speech), `max_groups`,
`min_groups`, `max_new_tokens`, `min_new_tokens` (reply bounds; random weights never end a
reply reliably, so random init fixes the lengths at 50 groups and 64 tokens by default),
`temperature`, `top_k`, `engine` (auto: on a GPU, fixed KV buffers and CUDA graphs for the
LLM, the heads, the speech tokenizer and the vocoder; op by op elsewhere; dynamic, static,
graphs — see engines.py), `max_positions` (the KV buffers' length), `chunk_groups` (vocode
every k groups), `lookahead` (units the vocoder waits for past a chunk; 10),
`context` (units of left context re-vocoded; 16), `fade` (seam cross-fade, samples; 320) —
the defaults keep streamed audio ≥ 40 dB SNR from whole-utterance vocoding
(benchmarks/vocoder_streaming.py), `seed`,
`threads` (torch CPU threads; tiny uses 1), and `hubert`, `kmeans`, `vocoder`,
`vocoder_config` (paths that override the checkpoint's files). Random init builds every part
from the named size, so giving it model paths is an error (they would be ignored).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Optional
from collections.abc import Iterator

from ..errors import ConfigError, MissingDependency, ModelFileError
from ..models.groupformer.config import STREAM_CONTEXT, STREAM_FADE, STREAM_LOOKAHEAD
from ..types import AudioChunk, Mode, ReplyEvent, StageMark, TextDelta, TurnInput
from .base import Session, System

if TYPE_CHECKING:  # torch and transformers are imported by load(), not with this module
    from ..models.groupformer.generation import Event
    from ..models.groupformer.vocoder import StreamingVocoder
    from .streamed_text import StreamedText

SAMPLE_RATE = 16000
ENGINES = ("auto", "dynamic", "static", "graphs")
UNTRAINED_LABEL = "untrained — latency only"

log = logging.getLogger("ivbench.groupformer")


def _checkpoint_untrained(folder: Optional[str]) -> bool:
    """A checkpoint saved from random weights says so in its groupformer.json (read without torch)."""
    if folder is None:
        return False
    from pathlib import Path

    from ..models.groupformer.config import GroupFormerConfig

    try:
        return GroupFormerConfig.load(Path(folder).expanduser()).untrained
    except (OSError, ValueError, TypeError):  # load() says what is wrong with the folder
        return False


def _check_init(init: str, checkpoint: Optional[str], size: str, paths: dict[str, Optional[str]]) -> None:
    """`init` and the files it goes with: a checkpoint folder, or random weights and no files."""
    if init not in ("checkpoint", "random"):
        raise ConfigError("groupformer: give checkpoint=PATH (a GroupFormer folder), or init=random with "
                          "size=tiny|qwen2-0.5b|qwen2-7b for untrained weights (latency only)")
    if init == "checkpoint" and not checkpoint:
        raise ConfigError("groupformer: init=checkpoint needs checkpoint=PATH")
    if init == "random":
        from ..models.groupformer.config import SHAPES

        if size not in SHAPES:  # an unknown size fails here, not at load
            raise ConfigError(f"groupformer: unknown size {size!r}: use one of {', '.join(SHAPES)}")
        given = [name for name, value in dict(paths, checkpoint=checkpoint).items() if value]
        if given:
            # Random init builds every part from `size`: the files would be silently ignored.
            raise ConfigError(f"groupformer: init=random builds every part with random weights, so "
                              f"{', '.join(sorted(given))} would be ignored; drop {'them' if len(given) > 1 else 'it'}"
                              f", or use init=checkpoint with checkpoint=PATH")


def _timed_by_phase(events: Iterator[Event], kind: str, stats: dict[str, Any]) -> Iterator[Event]:
    """The decoder's events, the time spent making each added to `stats` under its phase
    (`{phase}_generate_s`: prefill, then text or speech) — the consumer's time is not counted."""
    phase = "prefill"
    while True:
        t0 = time.perf_counter()
        event = next(events, None)
        stats[f"{phase}_generate_s"] += time.perf_counter() - t0
        if event is None:
            return
        if event.kind == "stage":
            if event.value == "prefill":
                phase = "speech" if kind == "speech" else "text"
            elif event.value == "text_done":
                phase = "speech"
        yield event


class GroupFormerSession(Session):
    def __init__(self, system: GroupFormerSystem) -> None:
        from ..models.groupformer.generation import Decoder

        self.system = system
        self.model = system.model
        self.decoder = Decoder(self.model, system.engine)
        self.messages: list[Any] = []  # chat.Message; messages[0] is the system message
        self.last_stats: dict[str, Any] = {}

    def _output_kind(self, mode: Mode) -> str:
        if not mode.speech_out:
            return "text"
        return "text_first" if self.system.text_first else "speech"

    def _user_content(self, turn: TurnInput) -> list[Any]:
        from ..models.groupformer.chat import Speech

        if not turn.mode.speech_in:
            return [turn.text]
        if turn.audio is None:
            raise ValueError(f"mode {turn.mode.value}: the turn has no audio")
        if self.model.speech_tokenizer is None:
            raise ModelFileError("this GroupFormer checkpoint has no speech tokenizer (hubert + kmeans files); give "
                               "hubert=slprl/mhubert-base-25hz (or a local copy) and kmeans=…/"
                               "mhubert_base_25hz_cp_mls_cv_sp_fisher_L11_km500.bin, or use a text-input mode")
        from ..audio import resample

        audio = resample(turn.audio, SAMPLE_RATE)
        units = self.system.unit_tokenizer.encode(audio.samples).tolist()
        return [Speech(tuple(units))]

    def _render(self, kind: str) -> Any:
        from ..models.groupformer.chat import Message

        model = self.model
        prompt = Message("system", [model.config.system_prompts[kind]])
        if not self.messages or self.messages[0].role != "system":
            self.messages.insert(0, prompt)
        elif self.messages[0] != prompt:  # the output modality changed mid-dialogue
            self.messages[0] = prompt
        limit = self.decoder.engine.capacity or 1 << 30
        budget = self.system.max_groups + self.system.max_new_tokens + 8
        while True:
            rendered = model.render(self.messages, add_generation_prompt=True)
            if len(rendered.ids) + budget <= limit or len(self.messages) <= 2:
                return rendered
            del self.messages[1:3]  # forget the oldest exchange

    def respond(self, turn: TurnInput) -> Iterator[ReplyEvent]:
        from ..models.groupformer.chat import Message, Speech
        from ..models.groupformer.vocoder import StreamingVocoder
        from .streamed_text import StreamedText

        system, model = self.system, self.model
        mode = turn.mode
        speech_out = mode.speech_out
        if speech_out and model.vocoder is None:  # before the user turn joins the dialogue
            raise ModelFileError("this GroupFormer checkpoint has no vocoder; give "
                                 "vocoder=…/hifigan_lj_mhubert_base_25hz.pt and "
                                 "vocoder_config=…/hifigan_lj_mhubert_base_25hz_config.json (TWIST 25 Hz LJ)")
        kind = self._output_kind(mode)
        content = self._user_content(turn)
        if mode.speech_in:
            yield StageMark("speech_tokenized", {"units": len(content[0].units)})
        self.messages.append(Message("user", content))
        rendered = self._render(kind)
        stream = (StreamingVocoder(system.unit_vocoder, system.chunk_groups, system.lookahead, system.context,
                                   system.fade) if speech_out else None)
        reply_text = StreamedText(model.tokenizer)
        units: list[int] = []
        # time inside the model, by phase: prefill, text, speech (LLM + GroupModel steps); the
        # moments of the turn (first group, first packet) are the runner's clock's
        stats: dict[str, Any] = {"groups": 0, "prefill_generate_s": 0.0, "text_generate_s": 0.0,
                                 "speech_generate_s": 0.0}
        events = self.decoder.respond(rendered, speech_out=speech_out, text_out=kind != "speech",
                                      limits=system.limits(), sampling=system.sampling())
        for event in _timed_by_phase(events, kind, stats):
            if event.kind == "token":
                piece = reply_text.add([event.token])
                if piece:
                    yield TextDelta(piece)
            elif event.kind == "group":
                yield from self._speak(event.group, units, stats, stream)
            elif event.kind == "stage":
                yield StageMark(str(event.value))
        yield from self._finish_reply(reply_text, stream, units)
        reply: list[Any] = []
        if kind != "speech":
            reply.append(reply_text.text)
        if speech_out:
            reply.append(Speech(tuple(units)))
        self.messages.append(Message("assistant", reply))
        d = self.decoder.stats
        stats.update(prefill_tokens=d.prefill_tokens, cached_tokens=d.cached_tokens, text_tokens=d.text_tokens,
                     units=len(units), ended_by=d.ended_by)
        self.last_stats = stats

    def _speak(self, group: tuple[int, ...], units: list[int], stats: dict[str, Any],
               stream: Optional[StreamingVocoder]) -> Iterator[ReplyEvent]:
        """A group of units the decoder made: into the reply and through the streaming vocoder."""
        assert stream is not None, "the decoder makes speech groups only with speech_out"
        if not units:
            yield StageMark("first_group")
        units.extend(group)
        stats["groups"] += 1
        chunk = stream.push(list(group))
        if chunk is not None and len(chunk):
            yield AudioChunk(chunk, self.model.vocoder.sample_rate)

    def _finish_reply(self, reply_text: StreamedText, stream: Optional[StreamingVocoder],
                      units: list[int]) -> Iterator[ReplyEvent]:
        """The text and the audio held back until the reply ended."""
        piece = reply_text.finish()
        if piece:
            yield TextDelta(piece)
        if stream is not None and units:
            chunk = stream.flush()
            if chunk is not None and len(chunk):
                yield AudioChunk(chunk, self.model.vocoder.sample_rate)

    def close(self) -> None:
        self.decoder.reset()
        self.messages = []


class GroupFormerSystem(System):
    """IntrinsicVoice's GroupFormer: speech groups straight from the LLM (direct), or with
    `text_first=True` the SpeechGPT-style chain with the same weights."""

    modes = (Mode.S2S, Mode.S2T, Mode.T2S, Mode.T2T)
    text_first_default = False

    def __init__(self, checkpoint: Optional[str] = None, init: Optional[str] = None, size: str = "tiny",
                 group_size: int = 5, device: Optional[str] = None, dtype: str = "auto",
                 text_first: Optional[bool] = None, max_groups: Optional[int] = None,
                 min_groups: Optional[int] = None, max_new_tokens: Optional[int] = None,
                 min_new_tokens: Optional[int] = None, temperature: float = 0.0, top_k: int = 0,
                 engine: str = "auto", max_positions: int = 8192, chunk_groups: int = 1,
                 lookahead: int = STREAM_LOOKAHEAD, context: int = STREAM_CONTEXT, fade: int = STREAM_FADE,
                 seed: int = 0,
                 threads: Optional[int] = None, hubert: Optional[str] = None, kmeans: Optional[str] = None,
                 vocoder: Optional[str] = None, vocoder_config: Optional[str] = None) -> None:
        text_first = self.text_first_default if text_first is None else bool(text_first)
        super().__init__(checkpoint=checkpoint, init=init, size=size, group_size=group_size, device=device,
                         dtype=dtype, text_first=text_first, max_groups=max_groups, min_groups=min_groups,
                         max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature,
                         top_k=top_k, engine=engine, max_positions=max_positions, chunk_groups=chunk_groups,
                         lookahead=lookahead, context=context, fade=fade,
                         seed=seed, threads=threads, hubert=hubert, kmeans=kmeans, vocoder=vocoder,
                         vocoder_config=vocoder_config)
        init = (init or ("checkpoint" if checkpoint else "")).lower()
        paths = dict(hubert=hubert, kmeans=kmeans, vocoder=vocoder, vocoder_config=vocoder_config)
        _check_init(init, checkpoint, size, paths)
        if int(group_size) < 1:
            raise ConfigError("groupformer: group_size must be at least 1")
        self.init = init
        self.checkpoint = checkpoint
        self.size = size
        self.group_size = int(group_size)
        self.device = device
        self.dtype = dtype
        self.text_first = text_first
        # Random weights are good for latency only: reports never show their content scores.
        self.untrained = init == "random" or (init == "checkpoint" and _checkpoint_untrained(checkpoint))
        random = init == "random"
        per_minute = 60 * 25 // self.group_size
        self.max_groups = int(max_groups if max_groups is not None else (50 if random else per_minute))
        self.min_groups = int(min_groups if min_groups is not None else (self.max_groups if random else 0))
        self.max_new_tokens = int(max_new_tokens if max_new_tokens is not None else (64 if random else 512))
        self.min_new_tokens = int(min_new_tokens if min_new_tokens is not None
                                  else (self.max_new_tokens if random else 0))
        self.temperature = float(temperature)
        if str(engine).lower() not in ENGINES:
            raise ConfigError(f"groupformer: engine {engine!r}: use one of {', '.join(ENGINES)}")
        self.engine_kind = str(engine).lower()
        self.max_positions = int(max_positions)
        self.engine: Any = None
        self.unit_tokenizer: Any = None  # the model's speech tokenizer, or a GraphedSpeechTokenizer over it
        self.unit_vocoder: Any = None  # the model's vocoder, or a GraphedVocoder over it
        self.graph_fallbacks: dict[str, str] = {}  # part → why its CUDA graphs are off
        self.top_k = int(top_k)
        self.chunk_groups = int(chunk_groups)
        self.lookahead = int(lookahead)
        self.context = int(context)
        self.fade = int(fade)
        self.seed = int(seed)
        self.threads = threads if threads is not None else (1 if random and size == "tiny" else None)
        self.paths = paths
        self.model: Any = None
        self._threads_before: Optional[int] = None

    def limits(self) -> Any:
        from ..models.groupformer.generation import Limits

        return Limits(max_groups=self.max_groups, min_groups=self.min_groups,
                      max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens)

    def sampling(self) -> Any:
        from ..models.groupformer.generation import Sampling

        return Sampling(temperature=self.temperature, top_k=self.top_k)

    def load(self, device: str) -> None:
        try:
            import torch
        except ImportError:
            raise MissingDependency("the groupformer system needs torch and transformers: "
                                    "pip install 'ivbench[groupformer]'") from None
        from ..models.groupformer.model import GroupFormer

        device = self.device or device or "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"groupformer: device {device!r} but torch sees no CUDA GPU")
        if self.threads and device == "cpu":
            self._threads_before = torch.get_num_threads()  # given back in close(): the setting is global
            torch.set_num_threads(int(self.threads))
        if self.init == "random":
            model = GroupFormer.random(self.size, group_size=self.group_size, seed=self.seed, device=device,
                                       dtype=self.dtype)
        else:
            assert self.checkpoint, "_check_init: init=checkpoint comes with a checkpoint"
            model = GroupFormer.from_pretrained(self.checkpoint, device=device, dtype=self.dtype, **self.paths)
        self.attach(model)

    def attach(self, model: Any, share_with: Optional[GroupFormerSystem] = None) -> None:
        """Use a loaded model: its KV engine (`engine` option), the speech tokenizer and vocoder
        (graphed where `_graph_parts` says), then warm up. `share_with`: a system attached to the
        same model (e.g. direct and text-first) whose engine, tokenizer and vocoder are re-used."""
        from ..models.groupformer.engines import make_engine

        self.model = model
        if share_with is not None:
            if share_with.model is not model:
                raise ValueError("groupformer: share_with must be attached to the same model")
            self.engine, self.unit_tokenizer, self.unit_vocoder = (share_with.engine, share_with.unit_tokenizer,
                                                                   share_with.unit_vocoder)
            self.graph_fallbacks = dict(share_with.graph_fallbacks)
        else:
            self.engine = make_engine(model, self.engine_kind, self.max_positions)
            self.unit_tokenizer, self.unit_vocoder = self._graph_parts(model)
        self._warm_up()

    def _graph_parts(self, model: Any) -> tuple[Any, Any]:
        """The speech tokenizer and vocoder to use: on fixed buffers (captured as CUDA graphs on
        a GPU) with the `graphs` engine, and with `auto` on a GPU even where the LLM fell back to
        op-by-op decoding; the model's own otherwise, or where a capture fails (noted in
        `graph_fallbacks`)."""
        from ..models.groupformer.speech_tokenizer import GraphedSpeechTokenizer
        from ..models.groupformer.vocoder import GraphedVocoder, StreamingVocoder

        cuda = model.device.type == "cuda"
        tokenizer, vocoder = model.speech_tokenizer, model.vocoder
        if not (getattr(self.engine, "graphs", False) or (self.engine_kind == "auto" and cuda)):
            return tokenizer, vocoder
        longest = StreamingVocoder.longest_input(model.config.group_size, self.chunk_groups, self.lookahead,
                                                 self.context)

        def graphed_tokenizer() -> Any:
            graphed = GraphedSpeechTokenizer(tokenizer, capture=cuda).prepare()
            graphed.verify()  # against op by op: padding masked everywhere it could reach
            return graphed

        def graphed(name: str, part: Any, build: Any) -> Any:
            if part is None:
                return None
            try:
                return build()
            except (RuntimeError, AssertionError) as exc:
                if self.engine_kind != "auto":
                    raise
                log.warning("groupformer: the %s runs op by op (its CUDA graphs failed: %s)", name, exc)
                self.graph_fallbacks[name] = str(exc)
                return part

        return (graphed("speech tokenizer", tokenizer, graphed_tokenizer),
                graphed("vocoder", vocoder, lambda: GraphedVocoder(vocoder, longest, capture=cuda).prepare()))

    def _warm_up(self) -> None:
        """First-call costs (kernels, allocator) stay out of the first measured turn."""
        import numpy as np

        from ..models.groupformer.chat import Message, Speech
        from ..models.groupformer.generation import Decoder, Limits, Sampling
        from ..models.groupformer.vocoder import StreamingVocoder

        model = self.model
        if self.unit_tokenizer is not None:
            self.unit_tokenizer.encode(np.zeros(SAMPLE_RATE, dtype=np.float32))
        messages = [Message("system", [model.config.system_prompts["speech"]]),
                    Message("user", [Speech(tuple(range(2 * model.config.group_size)))])]
        rendered = model.render(messages, add_generation_prompt=True)
        decoder = Decoder(model, self.engine)
        limits = Limits(max_groups=2, min_groups=2, max_new_tokens=2, min_new_tokens=2)
        units = [u for e in decoder.respond(rendered, speech_out=True, text_out=True, limits=limits,
                                            sampling=Sampling()) if e.kind == "group" for u in e.group]
        if model.vocoder is not None:
            stream = StreamingVocoder(self.unit_vocoder, self.chunk_groups, self.lookahead, self.context, self.fade)
            stream.push(units or [0] * model.config.group_size)
            stream.flush()
        decoder.reset()

    def new_session(self) -> GroupFormerSession:
        if self.model is None:
            raise RuntimeError("groupformer: load() first")
        return GroupFormerSession(self)

    def close(self) -> None:
        self.model = None
        self.engine = None
        self.unit_tokenizer = None
        self.unit_vocoder = None
        if self._threads_before is not None:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["text_first"] = self.text_first
        if self.untrained:
            info["label"] = UNTRAINED_LABEL
        if self.model is not None:
            info["model"] = self.model.describe()
        if self.engine is not None:
            info["engine"] = self.engine.name
            if getattr(self.engine, "fallback_reason", None):
                info["engine_fallback"] = self.engine.fallback_reason
        if self.graph_fallbacks:
            info["graph_fallbacks"] = dict(self.graph_fallbacks)
        return info


class GroupFormerTextFirst(GroupFormerSystem):
    """The SpeechGPT-style baseline: the whole text reply first, then its speech (same weights)."""

    text_first_default = True
