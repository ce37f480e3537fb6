"""Speech recognition (Whisper backends) and the text normalisation WER is computed on.

Shared by the WER metric and the cascade's ASR stage; importing this package imports no
model code (that happens in `WhisperASR.load()`).
"""
from .normalize import normalize_english, wer, word_errors
from .whisper import WhisperASR

__all__ = ["WhisperASR", "normalize_english", "wer", "word_errors"]
