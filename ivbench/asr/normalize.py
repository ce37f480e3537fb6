"""English text normalisation for WER, and WER itself (jiwer on normalised words).

`normalize_english` is Whisper's English text normaliser, the one the Whisper paper and the
LLaMA-Omni evaluation compute WER on: lower case, bracketed and parenthesised text dropped,
fillers ("uh", "um") dropped, contractions expanded ("don't" -> "do not", "it's" -> "it is"),
spelled numbers and currencies written as digits ("twenty-five dollars" -> "$25"), British
spellings made American, punctuation removed. It comes from the `whisper-normalizer`
package (the same rules as openai-whisper's copy, without importing torch), one of ivbench's
own dependencies, so a WER never depends on what else is installed; `normalizer_identity()`
names it, for cache keys and manifests.

Two steps are ivbench's own: before Whisper's rules, typographic apostrophes (’ ‘ ʼ `) become
ASCII ones, so "don’t" in a model's text and "don't" in a transcript normalise alike; after
them, a token without a letter or digit (Whisper's rules leave "..." as ".") is dropped.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

from ..provenance import package_version

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_SOURCE = "whisper-normalizer"


@lru_cache(maxsize=1)
def _load() -> Callable[[str], str]:
    try:
        from whisper_normalizer.english import EnglishTextNormalizer
    except ImportError:
        raise ImportError(
            "WER needs Whisper's English text normaliser: `pip install whisper-normalizer` "
            "(one of ivbench's own dependencies)"
        ) from None
    return EnglishTextNormalizer()


def normalizer_identity() -> dict[str, Any]:
    """Which normaliser (and version) WER is computed with."""
    _load()
    return {"normalizer": f"{_SOURCE}:EnglishTextNormalizer", "version": package_version(_SOURCE),
            "ivbench_steps": ["typographic apostrophes -> ascii", "drop tokens without letters or digits"]}


def normalize_english(text: str) -> str:
    """Lower-cased words separated by single spaces, normalised by Whisper's English rules."""
    if not text:
        return ""
    words = _load()(text.translate(_APOSTROPHES)).split()
    return " ".join(w for w in words if any(c.isalnum() for c in w))


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after normalising both,
    the two sums a corpus WER divides."""
    ref = normalize_english(reference)
    hyp = normalize_english(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    if not hyp:
        return len(ref.split()), len(ref.split())
    import jiwer

    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference`, both normalised first.

    An empty reference gives 0.0 when the hypothesis is empty too and 1.0 otherwise (there
    is no count of reference words to divide by; `word_errors` gives the raw numbers).
    """
    errors, words = word_errors(reference, hypothesis)
    if words == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / words
