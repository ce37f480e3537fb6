"""Dialogues as the LLM sees them: text tokenizer, special tokens, chat rendering.

A message's content is a list of segments, text (`str`) or speech (`Speech`, a unit sequence).
Speech renders as `<sosp>` + one `<speech>` placeholder per group of G units + `<eosp>`; the
placeholder positions are where the speech adaptor's group embeddings go in. Training,
prompting and the KV-cached generation all render through `render`, so they agree.

Needs `tokenizers`/`transformers` (imported inside functions), not torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union
from collections.abc import Sequence

from .config import EOSP, SOSP, SPEECH

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"

# ChatML, the format of Qwen2's chat template (written here for the fallback tokenizer).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Speech:
    """A spoken segment: its speech units (25 Hz, no de-duplication)."""

    units: tuple[int, ...]


Segment = Union[str, Speech]


@dataclass
class Message:
    role: str  # "system", "user", "assistant"
    content: list[Segment] = field(default_factory=list)


@dataclass
class Rendered:
    """Token ids with `<speech>` placeholders, and the unit group for each placeholder."""

    ids: list[int]
    groups: list[tuple[int, ...]]


def _bytes_to_unicode() -> dict[int, str]:
    """The byte-level BPE alphabet: each byte value mapped to a printable character."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_fallback_tokenizer() -> Any:
    """A byte-level tokenizer built offline (token id = byte value), with ChatML specials.

    Used where no real tokenizer is available: random-weight models and tests. A checkpoint
    folder brings its own tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: byte for byte, char in _bytes_to_unicode().items()}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)
    tokenizer.add_special_tokens({"pad_token": ENDOFTEXT, "eos_token": IM_END,
                                  "additional_special_tokens": [IM_START]})
    tokenizer.chat_template = CHATML_TEMPLATE
    add_speech_tokens(tokenizer)
    return tokenizer


def add_speech_tokens(tokenizer: Any) -> int:
    """Add `<sosp>`, `<eosp>`, `<speech>` as special tokens; returns how many were new."""
    missing = [t for t in (SOSP, EOSP, SPEECH) if t not in tokenizer.get_vocab()]
    if not missing:
        return 0
    return tokenizer.add_tokens(missing, special_tokens=True)


@dataclass(frozen=True)
class SpecialIds:
    sosp: int
    eosp: int
    speech: int
    stop: tuple[int, ...]  # end of an assistant turn

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialIds:
        ids = tokenizer.convert_tokens_to_ids([SOSP, EOSP, SPEECH])
        stop = {tokenizer.eos_token_id}
        vocab = tokenizer.get_vocab()
        for name in (IM_END, ENDOFTEXT):
            if name in vocab:
                stop.add(vocab[name])
        return cls(sosp=ids[0], eosp=ids[1], speech=ids[2],
                   stop=tuple(sorted(i for i in stop if i is not None)))


def to_groups(units: Sequence[int], group_size: int, pad_unit: int) -> list[tuple[int, ...]]:
    """Cut units into groups of G; the last group is filled with the end-of-speech unit."""
    units = [int(u) for u in units]
    groups = []
    for start in range(0, len(units), group_size):
        group = units[start:start + group_size]
        groups.append(tuple(group + [pad_unit] * (group_size - len(group))))
    return groups


def _clean(text: str) -> str:
    for token in (SOSP, EOSP, SPEECH, IM_START, IM_END, ENDOFTEXT):
        text = text.replace(token, "")
    return text


def _content_string(content: Sequence[Segment], group_size: int) -> str:
    parts = []
    for segment in content:
        if isinstance(segment, Speech):
            n = -(-len(segment.units) // group_size)
            parts.append(SOSP + SPEECH * n + EOSP)
        else:
            parts.append(_clean(segment))
    return "".join(parts)


def render(tokenizer: Any, messages: Sequence[Message], group_size: int, pad_unit: int,
           add_generation_prompt: bool = False, special: Optional[SpecialIds] = None) -> Rendered:
    """Token ids of a dialogue through the tokenizer's chat template, with speech groups."""
    special = special or SpecialIds.of(tokenizer)
    chat = [{"role": m.role, "content": _content_string(m.content, group_size)} for m in messages]
    template = getattr(tokenizer, "chat_template", None) or CHATML_TEMPLATE
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         chat_template=template)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    groups: list[tuple[int, ...]] = []
    for m in messages:
        for segment in m.content:
            if isinstance(segment, Speech):
                groups.extend(to_groups(segment.units, group_size, pad_unit))
    n_placeholders = sum(1 for i in ids if i == special.speech)
    if n_placeholders != len(groups):
        raise ValueError(f"rendered {n_placeholders} {SPEECH} placeholders for {len(groups)} speech groups; "
                         "the tokenizer must keep the speech tokens whole (add them as special tokens)")
    return Rendered(ids, groups)
