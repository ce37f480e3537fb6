"""Reading a turn's reply events after the clock has stamped them: each event is checked
(type, text, samples, rate, stage data), and the first bad one says what was wrong with it.

Validation runs here, after the turn, not in the worker that stamps events, so it is never
inside a latency measurement (docs/architecture.md, "Latency, one definition").
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..audio import AudioError, check_audio, clip_audio, concat
from ..types import Audio, AudioChunk, StageMark, TextDelta
from .clock import TurnTiming


@dataclass
class Reply:
    """What a turn's events add up to, and the first problem with them (None: all valid)."""

    events: list[list[Any]] = field(default_factory=list)  # [kind, ms since t0, size]
    texts: list[str] = field(default_factory=list)
    chunks: list[Audio] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    stage_data: dict[str, Any] = field(default_factory=dict)
    first_audio_ns: Optional[int] = None
    first_text_ns: Optional[int] = None
    problem: Optional[str] = None
    audio: Optional[Audio] = None  # the chunks joined (and clipped to [-1, 1])
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> Optional[str]:
        return "".join(self.texts).strip() if self.texts else None


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _audio(reply: Reply, stamp: int, event: AudioChunk, where: str) -> Optional[str]:
    if not isinstance(event.samples, np.ndarray):
        return (f"{where}: AudioChunk.samples is a {_type_name(event.samples)}; yield numpy arrays on the CPU "
                "(e.g. tensor.float().cpu().numpy())")
    size = int(event.samples.size)
    reply.events.append(["audio", stamp / 1e6, size])
    if size == 0:
        return None
    try:
        reply.chunks.append(check_audio(event.samples, event.sample_rate, f"{where}: AudioChunk"))
    except AudioError as exc:
        return str(exc)
    if reply.first_audio_ns is None:
        reply.first_audio_ns = stamp
    return None


def _text(reply: Reply, stamp: int, event: TextDelta, where: str) -> Optional[str]:
    if not isinstance(event.text, str):
        return f"{where}: TextDelta.text is a {_type_name(event.text)} ({event.text!r:.60}); give str"
    reply.events.append(["text", stamp / 1e6, len(event.text)])
    reply.texts.append(event.text)
    if event.text and reply.first_text_ns is None:
        reply.first_text_ns = stamp
    return None


def _stage(reply: Reply, stamp: int, event: StageMark, where: str) -> Optional[str]:
    if not isinstance(event.name, str):
        return f"{where}: StageMark.name is a {_type_name(event.name)} ({event.name!r:.60}); give str"
    reply.events.append(["stage", stamp / 1e6, event.name])
    reply.stages.setdefault(event.name, stamp / 1e6)
    if event.data is None or event.name in reply.stage_data:
        return None
    try:
        if not isinstance(event.data, dict):
            raise TypeError(f"a {type(event.data).__name__}")
        json.dumps(event.data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return (f"{where}: StageMark({event.name!r}).data is not a dict of JSON values ({exc}); "
                "give str, numbers, bools, None, lists and dicts of them")
    reply.stage_data[event.name] = event.data
    return None


def read_reply(timing: TurnTiming, where: str) -> Reply:
    """Check every event of a turn, in order, stopping at the first bad one."""
    reply = Reply()
    for stamp, event in timing.events:
        if isinstance(event, AudioChunk):
            reply.problem = _audio(reply, stamp, event, where)
        elif isinstance(event, TextDelta):
            reply.problem = _text(reply, stamp, event, where)
        elif isinstance(event, StageMark):
            reply.problem = _stage(reply, stamp, event, where)
        else:
            reply.problem = (f"{where}: yielded a {_type_name(event)}; yield AudioChunk, TextDelta "
                             "or StageMark from ivbench.types")
        if reply.problem is not None:
            return reply
    if reply.chunks:
        try:
            joined = concat(reply.chunks, where)
        except AudioError as exc:
            reply.problem = str(exc)
            return reply
        reply.audio, warning = clip_audio(joined, "reply audio")
        if warning:
            reply.warnings.append(warning)
    return reply
