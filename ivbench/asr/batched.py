"""Several files through faster-whisper at once, each in its own windows: the same transcript
as `WhisperModel.transcribe` gives for the file alone, with the encoder and decoder batched.

`WhisperModel.transcribe` walks one file window by window (`generate_segments`): encode the
30 s window at `seek`, decode it greedily or by beam search, split the tokens at timestamp
tokens, align the words, move `seek` on. This module runs that same walk for many files in
lock-step rounds: every file still unfinished contributes its current window to the round,
the round's windows are encoded as one batch and decoded as one batch (CTranslate2 decodes
each row on its own: a row never sees another row's audio or tokens), and each file's
result goes through faster-whisper's own per-window steps (`_split_segments_by_timestamps`,
`add_word_timestamps`) with its own state. Only the options ivbench uses are covered:
temperature 0 (no fallback), no previous-text conditioning, no prompt, no VAD, no clip
timestamps, no hallucination skipping; the no-speech skip and `max_initial_timestamp` are
faster-whisper's defaults, as in `transcribe`.

Files never share a window, so a file's transcript does not depend on which files were
batched with it (tests/test_asr.py checks batched against one-by-one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional
from collections.abc import Sequence

import numpy as np

# faster-whisper's `transcribe` defaults that decide a window's fate.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
MAX_INITIAL_TIMESTAMP_S = 1.0
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass
class _File:
    """One file's walk through its windows."""

    features: np.ndarray  # [n_mels, frames + 1] log-mel, as faster-whisper computes it
    seek: int = 0
    last_speech: float = 0.0
    segments: list[dict[str, Any]] = field(default_factory=list)  # kept segments, in order

    @property
    def content_frames(self) -> int:
        return int(self.features.shape[-1]) - 1

    @property
    def done(self) -> bool:
        return self.seek >= self.content_frames


def _tokenizer(model: Any, language: str) -> Any:
    from faster_whisper.tokenizer import Tokenizer

    return Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)


def _generate_kwargs(model: Any, tokenizer: Any, beam_size: int) -> dict[str, Any]:
    """What `WhisperModel.generate_with_fallback` passes CTranslate2 at temperature 0."""
    from faster_whisper.transcribe import get_suppressed_tokens

    return dict(length_penalty=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
                max_length=model.max_length, return_scores=True, return_no_speech_prob=True,
                suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
                max_initial_timestamp_index=int(round(MAX_INITIAL_TIMESTAMP_S / model.time_precision)),
                beam_size=beam_size, patience=1.0)


def _skip_as_silence(result: Any) -> bool:
    """faster-whisper's no-speech rule: a likely-silent window with a low-confidence decode."""
    tokens = result.sequences_ids[0]
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    return result.no_speech_prob > NO_SPEECH_THRESHOLD and not avg_logprob > LOG_PROB_THRESHOLD


def _window(model: Any, f: _File) -> tuple[np.ndarray, int]:
    from faster_whisper.audio import pad_or_trim

    size = min(model.feature_extractor.nb_max_frames, f.content_frames - f.seek)
    return pad_or_trim(f.features[:, f.seek:f.seek + size]), size


def _advance(model: Any, tokenizer: Any, f: _File, result: Any, encoded: Any, size: int,
             word_timestamps: bool) -> None:
    """One decoded window of one file: `generate_segments`' loop body, for this file only."""
    from faster_whisper.utils import get_end

    seek = f.seek
    time_offset = seek * model.feature_extractor.time_per_frame
    if _skip_as_silence(result):
        f.seek = seek + size
        return
    segments, f.seek, single_ending = model._split_segments_by_timestamps(
        tokenizer=tokenizer, tokens=result.sequences_ids[0], time_offset=time_offset,
        segment_size=size, segment_duration=size * model.feature_extractor.time_per_frame, seek=seek)
    if word_timestamps:
        model.add_word_timestamps([segments], tokenizer, encoded, size, PREPEND_PUNCTUATIONS,
                                  APPEND_PUNCTUATIONS, last_speech_timestamp=f.last_speech)
        last_end = get_end(segments)
        if not single_ending and last_end is not None and last_end > time_offset:
            f.seek = round(last_end * model.frames_per_second)
        if last_end is not None:
            f.last_speech = last_end
    for segment in segments:
        segment["text"] = tokenizer.decode(segment["tokens"])
        if segment["start"] != segment["end"] and segment["text"].strip():
            f.segments.append(segment)


def _round(model: Any, tokenizer: Any, files: Sequence[_File], kwargs: dict[str, Any],
           word_timestamps: bool) -> None:
    """Each file's current window: encoded together, decoded together, advanced one by one."""
    import ctranslate2

    windows = [_window(model, f) for f in files]
    batch = np.ascontiguousarray(np.stack([w for w, _ in windows]).astype(np.float32))
    # Word alignment takes each file's rows alone: on a GPU they are brought to the CPU to be
    # sliced (CTranslate2 takes encoder output from the CPU, as faster-whisper does on many GPUs).
    own = getattr(model, "ivbench_encoder", None)  # WhisperASR's onnxruntime encoder, if it uses one
    if own is not None:
        encoded = ctranslate2.StorageView.from_array(own(batch))
    else:
        to_cpu = word_timestamps and model.model.device != "cpu"
        encoded = model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=to_cpu)
    prompt = list(tokenizer.sot_sequence)
    results = model.model.generate(encoded, [prompt] * len(files), **kwargs)
    rows = np.asarray(encoded) if word_timestamps else None
    for k, (f, result, (_, size)) in enumerate(zip(files, results, windows)):
        row = None if rows is None else ctranslate2.StorageView.from_array(np.ascontiguousarray(rows[k:k + 1]))
        _advance(model, tokenizer, f, result, row, size, word_timestamps)


def _walk(model: Any, tokenizer: Any, audios: Sequence[np.ndarray], kwargs: dict[str, Any],
          word_timestamps: bool) -> list[_File]:
    """Files decoded together, round after round, until every one has reached its end."""
    files = [_File(model.feature_extractor(a)) for a in audios]
    while True:
        todo = [f for f in files if not f.done]
        if not todo:
            return files
        _round(model, tokenizer, todo, kwargs, word_timestamps)


def transcribe_files(model: Any, audios: Sequence[np.ndarray], language: str, beam_size: int,
                     word_timestamps: bool, batch_size: int,
                     workers: int = 1) -> list[tuple[str, list[tuple[str, float, float]]]]:
    """(text, words) of each 16 kHz float32 array, as `model.transcribe` gives it alone.

    Batches of `batch_size` files (longest first, so a batch holds similar lengths) go to
    `workers` threads at once; the model needs as many CTranslate2 workers (`num_workers`).
    """
    tokenizer = _tokenizer(model, language)
    kwargs = _generate_kwargs(model, tokenizer, beam_size)
    order = sorted(range(len(audios)), key=lambda i: -len(audios[i]))
    groups = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]

    def walk(group: list[int]) -> list[_File]:
        return _walk(model, tokenizer, [audios[i] for i in group], kwargs, word_timestamps)

    if workers > 1 and len(groups) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            walked = list(pool.map(walk, groups))
    else:
        walked = [walk(g) for g in groups]
    files: list[_File] = [None] * len(audios)  # type: ignore[list-item]  # every slot is filled below
    for group, done in zip(groups, walked):
        for i, f in zip(group, done):
            files[i] = f
    out = []
    for f in files:
        text = " ".join(" ".join(s["text"].strip() for s in f.segments).split())
        words = [(w["word"], w["start"], w["end"]) for s in f.segments for w in (s.get("words") or [])]
        out.append((text, words))
    return out


def encoder_rows_equal(model: Any, audios: Sequence[np.ndarray]) -> Optional[bool]:
    """Whether encoding the first windows together gives the same rows as one at a time
    (a diagnostic for tests and benchmarks; None for fewer than two audios)."""
    import ctranslate2

    if len(audios) < 2:
        return None
    files = [_File(model.feature_extractor(a)) for a in audios]
    batch = np.ascontiguousarray(np.stack([_window(model, f)[0] for f in files]).astype(np.float32))
    together = np.asarray(model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False))
    alone = [np.asarray(model.model.encode(ctranslate2.StorageView.from_array(batch[k:k + 1]), to_cpu=False))
             for k in range(len(files))]
    return all(np.array_equal(together[k:k + 1], a) for k, a in enumerate(alone))
