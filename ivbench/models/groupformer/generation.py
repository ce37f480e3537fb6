"""Streaming generation with a KV cache kept across a dialogue's turns.

`Decoder.prefill` feeds a rendered dialogue, re-using the longest cached prefix (the previous
turns, including the reply the model generated itself); then `speech` produces groups — one
LLM step per group of G units: the LLM chooses `<speech>` or `<eosp>`, the GroupModel turns the
hidden state into G units at once, and the group goes back in through the adaptor — and
`text` produces text tokens. The direct mode (IntrinsicVoice) goes straight to speech; the
text-first chain (SpeechGPT style) writes its whole text reply, then `<sosp>` and its speech.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union
from collections.abc import Iterator, Sequence

import torch

from .chat import Rendered
from .model import GroupFormer


@dataclass
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (..., V) → ids (...)."""
        if self.temperature <= 0:
            return logits.argmax(-1)
        logits = logits.float() / self.temperature
        if self.top_k > 0:
            kth = logits.topk(min(self.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, -1)
        flat = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(flat, 1).reshape(probs.shape[:-1])


@dataclass
class Limits:
    max_groups: int = 300
    min_groups: int = 0  # end-of-speech is ignored before this many groups
    max_new_tokens: int = 512
    min_new_tokens: int = 0  # end of text is ignored before this many tokens


@dataclass
class Event:
    kind: str  # "token" (text token id), "group" (tuple of units), "stage"
    value: Union[int, tuple[int, ...], str]

    @property
    def token(self) -> int:
        """A "token" event's token id."""
        assert isinstance(self.value, int), self
        return self.value

    @property
    def group(self) -> tuple[int, ...]:
        """A "group" event's units."""
        assert isinstance(self.value, tuple), self
        return self.value


@dataclass
class Stats:
    prefill_tokens: int = 0
    cached_tokens: int = 0
    text_tokens: int = 0
    ended_by: str = ""


_Item = tuple[int, Optional[tuple[int, ...]]]


class Decoder:
    """One dialogue's generation state: what the engine's KV cache holds for it.

    `engine` (engines.py) may be shared by several decoders (a system's sessions): it holds
    one dialogue at a time, and a decoder that finds another owner starts from position 0."""

    def __init__(self, model: GroupFormer, engine: Any = None) -> None:
        from .engines import DynamicEngine

        self.model = model
        self.engine = engine if engine is not None else DynamicEngine(model)
        self.cached: list[_Item] = []  # (token id, group or None) per cached position
        self.stats = Stats()

    def reset(self) -> None:
        if self.engine.owner is self:
            self.engine.reset()
            self.engine.owner = None
        self.cached = []

    def _claim(self) -> None:
        if self.engine.owner is not self:
            self.engine.reset()
            self.engine.owner = self
            self.cached = []

    @torch.inference_mode()
    def _feed(self, items: Sequence[_Item]) -> torch.Tensor:
        """Feed positions after the cached ones; returns the last hidden state (1, H)."""
        model = self.model
        ids = torch.tensor([[i for i, _ in items]], device=model.device)
        groups = [g for _, g in items if g is not None]
        if sum(1 for i, _ in items if i == model.special.speech) != len(groups):
            raise ValueError("every speech placeholder needs its group")
        group_tensor = torch.tensor(groups, device=model.device) if groups else None
        self._claim()
        hidden = self.engine.forward(model.embed(ids, group_tensor))
        self.cached.extend(items)
        return hidden

    def prefill(self, rendered: Rendered) -> torch.Tensor:
        """Make the cache hold `rendered`; returns the hidden state at its last position."""
        speech = self.model.special.speech
        it = iter(rendered.groups)
        items = [(i, tuple(next(it)) if i == speech else None) for i in rendered.ids]
        limit = self.engine.capacity
        if limit and len(items) > limit:
            raise ValueError(f"the dialogue is {len(items)} positions long; at most {limit} fit (the LLM's "
                             "max_position_embeddings, or the groupformer option max_positions)")
        self._claim()
        common = 0
        for a, b in zip(self.cached, items):
            if a != b:
                break
            common += 1
        common = min(common, len(items) - 1)  # at least one position to compute
        if common < len(self.cached):
            self.engine.crop(common)
            self.cached = self.cached[:common]
        self.stats = Stats(prefill_tokens=len(items) - common, cached_tokens=common)
        return self._feed(items[common:])

    def feed_token(self, token: int) -> torch.Tensor:
        return self._feed([(int(token), None)])

    def feed_group(self, group: tuple[int, ...]) -> torch.Tensor:
        return self._feed([(self.model.special.speech, tuple(group))])

    # ---- the two loops ---------------------------------------------------------------------
    @torch.inference_mode()
    def speech(self, hidden: torch.Tensor, limits: Limits, sampling: Sampling) -> Iterator[Event]:
        """Groups from the position after `<sosp>` until `<eosp>`, the end unit, or max_groups."""
        model = self.model
        pad = model.config.pad_unit
        n = 0
        while n < limits.max_groups:
            # The LLM chooses <speech> or <eosp>; the GroupModel decodes the group from the same
            # hidden state. Both are read back in one device synchronisation.
            choice_logits, logits = self.engine.speech_heads(hidden)  # (2,), (G, n_units + 1)
            if n < limits.min_groups:
                logits[:, pad] = float("-inf")
                picked = sampling.pick(logits)
            else:
                picked = torch.cat([sampling.pick(choice_logits).reshape(1), sampling.pick(logits)])
            values = picked.tolist()
            if n >= limits.min_groups:
                if values[0] == 1:
                    self.stats.ended_by = "eosp"
                    return
                values = values[1:]
            units = values
            ended = pad in units
            group = tuple(units[: units.index(pad)]) if ended else tuple(units)
            n += 1
            if group:
                yield Event("group", group)
            if ended:
                self.stats.ended_by = "end unit"
                return
            if n < limits.max_groups:
                hidden = self.feed_group(tuple(units))
        self.stats.ended_by = "max_groups"

    @torch.inference_mode()
    def text(self, hidden: torch.Tensor, limits: Limits, sampling: Sampling, *, then_speech: bool) -> Iterator[Event]:
        """Text tokens until the end of the turn (or `<sosp>` when `then_speech`). The token that
        ends the text is not fed: the speech that may follow starts by feeding `<sosp>`."""
        model, special = self.model, self.model.special
        stops = set(special.stop) | ({special.sosp} if then_speech else set())
        banned = [special.eosp, special.speech] + ([] if then_speech else [special.sosp])
        n = 0
        masks: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (-inf where never, where not yet)
        while n < limits.max_new_tokens:
            logits = model.token_logits(hidden)[0].float()
            if masks is None:  # built once per reply, on the device: no index copies per token
                never = torch.zeros_like(logits)
                never[banned] = float("-inf")
                never[len(model.tokenizer):] = float("-inf")  # padding rows of a padded embedding matrix
                not_yet = never.clone()
                not_yet[list(stops)] = float("-inf")
                masks = (never, not_yet)
            logits += masks[1] if n < limits.min_new_tokens else masks[0]
            token = int(sampling.pick(logits))
            if token in stops:
                self.stats.ended_by = "stop"
                break
            n += 1
            self.stats.text_tokens = n
            yield Event("token", token)
            hidden = self.feed_token(token)
        else:
            self.stats.ended_by = "max_new_tokens"

    def respond(self, rendered: Rendered, *, speech_out: bool, text_out: bool, limits: Limits,
                sampling: Sampling) -> Iterator[Event]:
        """The assistant's reply to a dialogue rendered with the generation prompt.

        speech_out and not text_out: direct speech (`<sosp>` forced, then groups).
        speech_out and text_out: text first, then `<sosp>` and its speech.
        text_out only: text.
        """
        sosp = self.model.special.sosp
        if speech_out and not text_out:  # `<sosp>` goes in with the prompt: no extra LLM step
            rendered = Rendered(rendered.ids + [sosp], rendered.groups)
        hidden = self.prefill(rendered)
        yield Event("stage", "prefill")
        if text_out:
            yield from self.text(hidden, limits, sampling, then_speech=speech_out)
            if not speech_out:
                return
            yield Event("stage", "text_done")
            hidden = self.feed_token(sosp)
        yield from self.speech(hidden, limits, sampling)
