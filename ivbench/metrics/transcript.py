"""Whisper transcripts of the reply's speech and of the user turn's speech.

They report no numbers: the transcript is `details["text"]` (with `details["language"]`, and
with `word_times=true` also `details["words"]`, each [word, start s, end s]). The scoring
runner runs them before the metrics that need `Need.TRANSCRIPT` / `Need.USER_TRANSCRIPT` and
copies the text into `item.transcript` / `item.user_transcript`. No metric reads word times,
so they are not computed unless asked for (word alignment is about a tenth of the decoding
time); the option is part of the identity, as it can move where a long reply's next window
starts.

Options (`OPTIONS` below; metrics with the same options share one loaded model through
`ScoringContext.asr_models`). Each reply is decoded in Whisper windows of its own, so its
transcript depends on its audio and these options alone, and is cached by them. `pack=true`
is the opt-in exception (see ivbench.asr.whisper): packed transcripts depend on which replies
shared a window, so they are not cached, and a warning says what packing costs.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Optional

from ..scoring.context import AsrKey
from ..types import Audio, FieldInfo
from .base import Metric, MetricResult, Need, ScoreItem, ScoringContext, Status

log = logging.getLogger("ivbench")

# Each option with what it does (`ivbench list metrics` and the README show them).
OPTIONS = {
    "backend": "faster-whisper (CTranslate2, default) or openai-whisper (the reference code)",
    "model": "model name or path; default: the bundled Whisper tiny.en (offline, both backends)",
    "compute_type": "CTranslate2 precision (the decoder; the encoder too with encoder=ctranslate2); "
                    "default int8 on the CPU, float16 on a GPU "
                    "(openai-whisper: float32, float16 on a GPU)",
    "encoder": "faster-whisper's encoder: onnxruntime (float32, default on the CPU: faster there, and "
               "openai-whisper's precision) or ctranslate2 (at compute_type; default on a GPU)",
    "language": "spoken language (default en); null detects it per reply",
    "beam_size": "1: greedy (default); more: beam search",
    "batch_size": "replies decoded together, each in its own windows: speed only "
                  "(default 1 on the CPU, 16 on a GPU)",
    "workers": "batches decoded at the same time: speed only (default one per core on the CPU, 1 on a GPU)",
    "word_times": "true: also each word's start and end (details.words; default false: no metric reads "
                  "them, and aligning costs about a tenth of the decoding)",
    "pack": "true: several replies share one Whisper window (faster, but a reply's transcript then "
            "depends on its neighbours; not cached)",
}
PACK_WARNING = ("{name}:pack=true shares Whisper windows between replies: each reply's transcript then "
                "depends on which replies shared its window (measured on 188 replies: per-reply WER moved "
                "by 3.6 points on average and up to 100 points, words given to the neighbouring reply; "
                "benchmarks/scoring_vs_peer.py --pack). These transcripts are not cached.")


class _WhisperTranscript(Metric):
    uses_gpu = True
    fields: dict[str, FieldInfo] = {}
    option_help: ClassVar[dict[str, str]] = OPTIONS
    _which: ClassVar[str] = ""  # "reply" or "user"

    def __init__(self, backend: str = "faster-whisper", model: Optional[str] = None,
                 compute_type: Optional[str] = None, language: Optional[str] = "en",
                 beam_size: int = 1, batch_size: Optional[int] = None, pack: bool = False,
                 workers: Optional[int] = None, word_times: bool = False,
                 encoder: Optional[str] = None) -> None:
        from ..asr.whisper import WhisperASR

        # batch_size and workers change the speed, not the transcripts: they stay out of the
        # options that make the identity. Building a WhisperASR checks every option first.
        super().__init__(backend=backend, model=model, compute_type=compute_type,
                         language=language, beam_size=beam_size, pack=pack, word_times=word_times,
                         encoder=encoder)
        self.batch_size, self.workers = batch_size, workers
        try:
            WhisperASR(backend=backend, model=model, compute_type=compute_type, language=language,
                       beam_size=beam_size, batch_size=batch_size, pack=pack, workers=workers,
                       word_timestamps=word_times, encoder=encoder)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        self.asr: Any = None

    def load(self, context: ScoringContext) -> None:
        from ..asr.whisper import WhisperASR

        device = context.device or "cpu"
        o = self.options
        key = AsrKey(backend=o["backend"], model=o["model"], device=device, compute_type=o["compute_type"],
                     language=o["language"], beam_size=o["beam_size"], batch_size=self.batch_size,
                     workers=self.workers, pack=o["pack"], word_times=o["word_times"], encoder=o["encoder"])
        asr = context.asr_models.get(key)
        if asr is None:
            asr = WhisperASR(backend=o["backend"], model=o["model"], device=device,
                             compute_type=o["compute_type"], language=o["language"],
                             beam_size=o["beam_size"], batch_size=self.batch_size, pack=o["pack"],
                             word_timestamps=o["word_times"], encoder=o["encoder"],
                             workers=self.workers or WhisperASR.bulk_workers(device))
            asr.load()
            context.asr_models[key] = asr
            if o["pack"]:
                log.warning(PACK_WARNING.format(name=self.name))
        self.asr = asr

    def _ensure_loaded(self) -> None:
        if self.asr is None:
            self.load(ScoringContext())

    def identity(self) -> dict[str, Any]:
        self._ensure_loaded()
        return {"metric": self.name, "asr": self.asr.identity()}

    def _audio(self, item: ScoreItem) -> Optional[Audio]:
        raise NotImplementedError

    def _sha256(self, item: ScoreItem) -> Optional[str]:
        raise NotImplementedError

    def _absent(self, item: ScoreItem) -> MetricResult:
        raise NotImplementedError

    def cache_inputs(self, item: ScoreItem) -> Optional[dict[str, Any]]:
        if self.options["pack"]:
            return None  # a packed transcript depends on its window's other replies too
        sha = self._sha256(item)
        return None if sha is None else {"audio_sha256": sha}

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        results: list[Optional[MetricResult]] = [None] * len(items)
        todo: list[int] = []
        audios: list[Audio] = []
        for i, item in enumerate(items):
            try:
                audio = self._audio(item)
            except Exception as exc:  # an unreadable file fails this item, not the batch
                results[i] = MetricResult.unavailable(self.fields, Status.FAILED,
                                                      f"cannot read the {self._which} audio: {exc}")
                continue
            if audio is None:
                results[i] = self._absent(item)
            else:
                todo.append(i)
                audios.append(audio)
        if todo:
            self._ensure_loaded()
            for i, transcript in zip(todo, self.asr.transcribe_batch(audios)):
                results[i] = MetricResult({}, Status.OK.value, None, transcript.to_json())
        return results  # type: ignore[return-value]  # every slot is filled


class ReplyTranscript(_WhisperTranscript):
    """Whisper transcript of the reply's speech (what asr_wer, ref_wer and the judge read)."""

    name = "transcript"
    description = "Whisper transcript of the reply's speech (used by asr_wer and the judge)"
    needs = frozenset({Need.REPLY_AUDIO})
    _which = "reply"

    def _audio(self, item: ScoreItem) -> Optional[Audio]:
        return item.reply_audio()

    def _sha256(self, item: ScoreItem) -> Optional[str]:
        return item.reply_audio_sha256()

    def _absent(self, item: ScoreItem) -> MetricResult:
        return MetricResult.unavailable(self.fields, Status.NOT_APPLICABLE,
                                        f"no reply audio (mode {item.record.mode})")


class UserTranscript(_WhisperTranscript):
    """Whisper transcript of the user turn's speech (what a judge reads as the question).

    Not applicable to text-input turns, which have no user audio. It does not depend on the
    system's reply, so a turn the system failed is still transcribed.
    """

    name = "user_transcript"
    description = "Whisper transcript of the user turn's speech (what the judge reads)"
    needs: ClassVar[frozenset[Need]] = frozenset()
    _which = "user"

    def precheck(self, item: Any) -> Optional[MetricResult]:
        if item.record.user_audio is None:
            return self._absent(item)
        return None

    def _audio(self, item: ScoreItem) -> Optional[Audio]:
        return item.user_audio()

    def _sha256(self, item: ScoreItem) -> Optional[str]:
        return item.user_audio_sha256()

    def _absent(self, item: ScoreItem) -> MetricResult:
        return MetricResult.unavailable(self.fields, Status.NOT_APPLICABLE,
                                        f"the user turn had no audio (mode {item.record.mode})")
