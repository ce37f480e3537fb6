"""Word and character error rates, on text normalised by Whisper's English normaliser.

- `AsrWer` ("asr_wer"): the Whisper transcript of the reply's speech against the reply's own
  text: does the system say what it writes? (the speech-text alignment of the IntrinsicVoice
  and LLaMA-Omni papers).
- `RefWer` ("ref_wer"): the reply (its speech transcript in speech-output modes, its text
  otherwise) against the task's reference answer.

Both report `wer` and `cer` per turn plus the counts `errors` and `ref_words`, so a report
can give both aggregates peers use: the mean of per-turn WER (URO-Bench) and corpus WER
= Σ errors / Σ ref_words. `details` holds the normalised texts and the word alignment, a
list of {"op": "equal" | "substitute" | "delete" | "insert", "ref": [...], "hyp": [...]}.

An empty normalised reference has no words to divide by: WER and CER are then 0 when the
hypothesis is empty too and 1 otherwise (the convention of `ivbench.asr.wer`), with the
reason given; its insertions still count in `errors` for corpus WER.

Neither takes options. Whisper's options (backend, model, …) belong to the transcript metric
whose transcripts they read; one given to asr_wer or ref_wer is refused with the spelling
that gives it to the transcript metric.
"""
from __future__ import annotations

from typing import Any, Optional

import difflib

from ..errors import PluginError
from ..types import Mode
from .base import FieldInfo, Metric, MetricResult, Need, ScoreItem, Status

WER_FIELDS = {
    "wer": FieldInfo(False, "", "word error rate: (substitutions + deletions + insertions) / reference words"),
    "cer": FieldInfo(False, "", "character error rate on the normalised texts"),
    "errors": FieldInfo(None, "words", "substitutions + deletions + insertions (sum it for corpus WER)"),
    "ref_words": FieldInfo(None, "words", "reference words after normalisation (sum it for corpus WER)"),
}


def _alignment(ref_words: list[str], hyp_words: list[str], chunks: Any) -> list[dict[str, Any]]:
    return [{"op": c.type, "ref": ref_words[c.ref_start_idx:c.ref_end_idx],
             "hyp": hyp_words[c.hyp_start_idx:c.hyp_end_idx]} for c in chunks]


def compare(reference: str, hypothesis: str) -> MetricResult:
    """WER, CER, counts and alignment of `hypothesis` against `reference` (both normalised)."""
    from ..asr.normalize import normalize_english

    ref = normalize_english(reference)
    hyp = normalize_english(hypothesis)
    ref_words, hyp_words = ref.split(), hyp.split()
    details: dict[str, Any] = {"ref": ref, "hyp": hyp}
    reason = None
    if not ref_words or not hyp_words:
        # jiwer cannot align against an empty side; the alignment is one delete or insert.
        if ref_words:
            ops = [{"op": "delete", "ref": ref_words, "hyp": []}]
            subs, dels, ins = 0, len(ref_words), 0
        elif hyp_words:
            ops = [{"op": "insert", "ref": [], "hyp": hyp_words}]
            subs, dels, ins = 0, 0, len(hyp_words)
        else:
            ops, subs, dels, ins = [], 0, 0, 0
        errors = subs + dels + ins
        if ref_words:
            wer_value = cer_value = 1.0
        else:
            wer_value = cer_value = 0.0 if not hyp_words else 1.0
            reason = ("the reference has no words after normalisation: WER and CER are 0 "
                      "when the hypothesis is empty too, else 1")
    else:
        import jiwer

        words = jiwer.process_words(ref, hyp)
        chars = jiwer.process_characters(ref, hyp)
        subs, dels, ins = words.substitutions, words.deletions, words.insertions
        errors = subs + dels + ins
        ops = _alignment(ref_words, hyp_words, words.alignments[0])
        wer_value = errors / len(ref_words)
        cer_value = (chars.substitutions + chars.deletions + chars.insertions) / len(ref)
    details.update(substitutions=subs, deletions=dels, insertions=ins, alignment=ops)
    values: dict[str, Optional[float]] = {"wer": float(wer_value), "cer": float(cer_value),
                                          "errors": float(errors), "ref_words": float(len(ref_words))}
    return MetricResult(values, Status.OK.value, reason, details)


def option_error(metric: str, options: dict[str, Any]) -> PluginError:
    """The error for options given to a WER metric: Whisper's go to the transcript metric."""
    from .transcript import OPTIONS as TRANSCRIPT_OPTIONS

    whisper = {k: v for k, v in options.items() if k in TRANSCRIPT_OPTIONS}
    if whisper:
        given = ",".join(f"{k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}"
                         for k, v in sorted(whisper.items()))
        return PluginError(
            f"{metric} has no option {', '.join(repr(k) for k in sorted(whisper))}: Whisper's options belong to "
            f"the transcript metric, whose transcripts {metric} reads. Give them to it: "
            f"--metrics 'transcript:{given};{metric}' (separate metrics with ';' when options hold ',')")
    unknown = sorted(options)
    close = difflib.get_close_matches(unknown[0], list(TRANSCRIPT_OPTIONS), n=1, cutoff=0.6)
    hint = f" Did you mean the transcript metric's {close[0]!r} (transcript:{close[0]}=…)?" if close else ""
    return PluginError(f"{metric} takes no options (got {', '.join(repr(k) for k in unknown)}).{hint} "
                       "`ivbench list metrics` shows each metric's options.")


class _WerMetric(Metric):
    fields = WER_FIELDS
    options_note = "Whisper's options go to the transcript metric it reads: --metrics 'transcript:backend=…;{name}'"

    def __init__(self, **options: Any) -> None:
        if options:
            raise option_error(self.name, options)
        super().__init__()

    def identity(self) -> dict[str, Any]:
        from ..asr.normalize import normalizer_identity

        return {"metric": self.name, "options": self.options, **normalizer_identity()}

    def cache_inputs(self, item: ScoreItem) -> Optional[dict[str, Any]]:
        return None  # an alignment of two short texts is cheaper than a cache look-up

    def _pair(self, item: ScoreItem) -> tuple[Optional[str], Optional[str], Optional[MetricResult], str]:
        raise NotImplementedError

    def score(self, items: list[ScoreItem]) -> list[MetricResult]:
        results = []
        for item in items:
            ref, hyp, unavailable, source = self._pair(item)
            if unavailable is not None:
                results.append(unavailable)
                continue
            result = compare(ref or "", hyp or "")
            result.details["hyp_source"] = source
            results.append(result)
        return results


class AsrWer(_WerMetric):
    """The reply's speech transcript against the reply's own text."""

    name = "asr_wer"
    description = "WER/CER of the reply's speech transcript against the reply's own text"
    needs = frozenset({Need.REPLY_AUDIO, Need.REPLY_TEXT, Need.TRANSCRIPT})

    def _pair(self, item: ScoreItem) -> tuple[Optional[str], Optional[str], Optional[MetricResult], str]:
        if item.transcript is None:
            return None, None, MetricResult.unavailable(
                self.fields, Status.MISSING,
                "the reply audio has no transcript (the transcript metric did not run or failed)"), ""
        return item.record.reply_text, item.transcript, None, "transcript"


class RefWer(_WerMetric):
    """The reply against the task's reference answer: its speech transcript in speech-output
    modes, its text otherwise. A speech-output reply without audio is scored as empty."""

    name = "ref_wer"
    description = "WER/CER of the reply (transcript or text) against the task's reference answer"
    needs = frozenset({Need.REFERENCE, Need.TRANSCRIPT})

    def _pair(self, item: ScoreItem) -> tuple[Optional[str], Optional[str], Optional[MetricResult], str]:
        record = item.record
        try:
            speech_out = Mode.parse(record.mode).speech_out
        except ValueError:
            speech_out = record.reply_audio is not None
        if not speech_out:
            return record.reference, record.reply_text or "", None, "text"
        if record.reply_audio is None:
            return record.reference, "", None, "transcript (no reply audio)"
        if item.transcript is None:
            return None, None, MetricResult.unavailable(
                self.fields, Status.MISSING,
                "the reply audio has no transcript (the transcript metric did not run or failed)"), ""
        return record.reference, item.transcript, None, "transcript"
