"""English text normalisation for WER, and WER itself (jiwer on normalised words).

`normalize_english` is deliberately small and predictable: lower case, a few unambiguous
contractions expanded, punctuation removed, spaces collapsed. Numbers are left as written
(no spelling out either way), so "3" and "three" differ on purpose: a voice that reads
digits differently from its text is a real mismatch.
"""
from __future__ import annotations

import re
import unicodedata

# Unambiguous contractions only ("'s" and "'d" have several expansions and are left alone).
_CONTRACTIONS = [
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bcannot\b"), "can not"),
    (re.compile(r"\bshan't\b"), "shall not"),
    (re.compile(r"\bain't\b"), "is not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"\bi'm\b"), "i am"),
]
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NOT_WORD = re.compile(r"[^\w']+|_")  # anything but letters, digits and apostrophes
_EDGE_APOSTROPHES = re.compile(r"(?<!\w)'|'(?!\w)")


def normalize_english(text: str) -> str:
    """Lower-cased words separated by single spaces, without punctuation."""
    text = unicodedata.normalize("NFKC", text or "").translate(_APOSTROPHES).lower()
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    text = _NOT_WORD.sub(" ", text)  # hyphens, dots, commas… become word breaks
    text = _EDGE_APOSTROPHES.sub(" ", text)  # quotes, not apostrophes inside a word
    text = text.replace("'", "")  # "it's" -> "its", the same on both sides
    return " ".join(text.split())


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
