"""Text-to-speech voices, for user turns and for systems' speech output."""
from .base import Voice, split_sentences

__all__ = ["Voice", "split_sentences"]
