"""Speech recognition (Whisper backends) and the text normalisation WER is computed on.

Shared by the WER metric and the cascade's ASR stage; importing this package imports no
model code (that happens in `WhisperASR.load()`).
"""
from .normalize import normalize_english, normalizer_identity, wer, word_errors
from .whisper import Transcript, WhisperASR

__all__ = ["Transcript", "WhisperASR", "normalize_english", "normalizer_identity", "wer", "word_errors"]
