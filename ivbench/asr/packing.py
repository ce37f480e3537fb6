"""Packing short audios into shared 30-second Whisper windows, and splitting the transcript
back per audio.

Whisper's encoder always reads a 30-second window, so a 3-second reply costs as much
encoder work as a 30-second one. Packing several short files, with a short silence between
them, into one window and splitting the window's transcript by word timestamps makes the
same work transcribe several files (DESIGN.md, "Measured on this machine";
benchmarks/asr_batching.py measures it).

Pure numpy: nothing here loads a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional
from collections.abc import Sequence

import numpy as np

WordTiming = tuple[str, float, float]  # (word as the model wrote it, start s, end s)


@dataclass(frozen=True)
class Window:
    """Files that share one transcription window, in their input order."""

    indices: tuple[int, ...]
    spans: tuple[tuple[float, float], ...]  # each file's (start, end) in the window, seconds
    duration_s: float


def plan_windows(durations: Sequence[float], window_s: float, gap_s: float,
                 max_files: int) -> tuple[list[Window], list[int]]:
    """Group files into windows of at most `window_s` seconds (gaps included) and
    `max_files` files, first-fit in decreasing length; deterministic for given durations.

    Returns (windows of two or more files, indices of files transcribed on their own: longer
    than a window, or left alone).
    """
    if max_files < 2:
        return [], list(range(len(durations)))
    order = sorted(range(len(durations)), key=lambda i: (-durations[i], i))
    bins: list[list[int]] = []
    fill: list[float] = []
    alone: list[int] = []
    for i in order:
        d = float(durations[i])
        if d + gap_s > window_s:  # too long to share a window (≥ 30 s files among them)
            alone.append(i)
            continue
        for b, members in enumerate(bins):
            if len(members) < max_files and fill[b] + gap_s + d <= window_s:
                members.append(i)
                fill[b] += gap_s + d
                break
        else:
            bins.append([i])
            fill.append(d)
    windows: list[Window] = []
    for members in bins:
        if len(members) == 1:
            alone.append(members[0])
            continue
        members.sort()
        spans = []
        pos = 0.0
        for k, i in enumerate(members):
            if k:
                pos += gap_s
            spans.append((pos, pos + float(durations[i])))
            pos += float(durations[i])
        windows.append(Window(tuple(members), tuple(spans), pos))
    windows.sort(key=lambda w: w.indices[0])
    return windows, sorted(alone)


def join_window(window: Window, audios: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """The window's audio: its files with `gap` silence between them."""
    out = np.zeros(int(round(window.duration_s * sample_rate)) + 1, dtype=np.float32)
    for i, (start, _) in zip(window.indices, window.spans):
        a = audios[i]
        at = int(round(start * sample_rate))
        out[at:at + len(a)] = a[: len(out) - at]
    return out


def split_words(words: Sequence[WordTiming], spans: Sequence[tuple[float, float]]
                ) -> list[list[WordTiming]]:
    """Each file's words, times relative to the file's start and clipped to it.

    A word belongs to the file whose stretch of the window holds its midpoint; stretches meet
    in the middle of each silence gap, so a timestamp may be off by half a gap and still land
    in the right file.
    """
    bounds = [(spans[k][1] + spans[k + 1][0]) / 2.0 for k in range(len(spans) - 1)]
    out: list[list[WordTiming]] = [[] for _ in spans]
    for word, start, end in words:
        mid = (start + end) / 2.0
        k = int(np.searchsorted(bounds, mid, side="right"))
        s0, s1 = spans[k]
        out[k].append((word, start - s0, end - s0))
    return [clean_words(ws, s1 - s0) for ws, (s0, s1) in zip(out, spans)]


def clean_words(words: Sequence[WordTiming], duration_s: Optional[float]) -> list[WordTiming]:
    """Timestamps in whole ms inside [0, duration], non-decreasing, start <= end."""
    cleaned: list[WordTiming] = []
    last = 0.0
    top = float("inf") if duration_s is None else math.floor(float(duration_s) * 1000.0) / 1000.0
    for word, start, end in words:
        start = min(max(round(float(start), 3), last, 0.0), top)
        end = min(max(round(float(end), 3), start), top)
        cleaned.append((word, start, end))
        last = start
    return cleaned


def words_text(words: Sequence[WordTiming]) -> str:
    """The text the words spell (Whisper's words carry their own leading spaces)."""
    return " ".join("".join(w for w, _, _ in words).split())
