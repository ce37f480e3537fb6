"""From a stream of LLM text pieces to the chunks the TTS stage speaks.

A chunk ends every Θ (`theta`) words or at the end of a sentence, whichever comes first, so
the first chunk can be spoken while the LLM is still writing the rest. A word counts once
the whitespace after it has arrived (so "3." followed by "5" stays "3.5"); whatever is left
when the LLM finishes is the last chunk. `theta=None` cuts nothing: the whole reply is one
chunk, spoken after the LLM has finished.
"""
from __future__ import annotations

import re
from typing import Optional

_SPACE_SPLIT = re.compile(r"(\s+)")
# A word that ends a sentence: final . ! or ?, possibly inside closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*$")
# Markup a spoken reply must not read out: emphasis/heading/code marks, table bars, and
# list bullets at the start of a line.
_EMPHASIS = re.compile(r"[*`~]+")
_MARKUP = re.compile(r"[#_|]+")
_BULLET = re.compile(r"(^|\n)\s*(?:[-\u2022+>]\s+)")
_ALNUM = re.compile(r"\w")


def speakable(text: str) -> str:
    """`text` without markdown marks and bullets; empty when nothing is left to say."""
    text = _BULLET.sub(r"\1", text)
    text = _MARKUP.sub(" ", _EMPHASIS.sub("", text))
    text = " ".join(text.split())
    return text if _ALNUM.search(text) else ""


class Chunker:
    """Cuts a stream of text pieces into chunks to speak (see the module docstring)."""

    def __init__(self, theta: Optional[int]) -> None:
        if theta is not None and (isinstance(theta, bool) or not isinstance(theta, int) or theta < 1):
            raise ValueError(f"theta={theta!r}: give a number of words of at least 1, or None for "
                             "the whole text")
        self.theta = theta
        self._partial = ""  # text after the last complete word
        self._words: list[str] = []  # complete words of the chunk being built
        self._whole: list[str] = []  # theta=None: every piece, in order

    def feed(self, piece: str) -> list[str]:
        """Take the next piece of text; return the chunks it completes (often none)."""
        if self.theta is None:
            self._whole.append(piece)
            return []
        parts = _SPACE_SPLIT.split(self._partial + piece)
        # parts alternates word, space, word, space, …; the last element is the word still
        # being written ("" when the text ends with whitespace).
        self._partial = parts[-1]
        chunks: list[str] = []
        for i in range(0, len(parts) - 1, 2):
            word, space = parts[i], parts[i + 1]
            if word:
                self._words.append(word)
            if not self._words:
                continue
            if (len(self._words) >= self.theta or _SENTENCE_END.search(self._words[-1])
                    or "\n" in space):
                chunks.append(" ".join(self._words))
                self._words = []
        return chunks

    def flush(self) -> list[str]:
        """The text not yet returned (the LLM has finished)."""
        if self.theta is None:
            text, self._whole = "".join(self._whole).strip(), []
            return [text] if text else []
        words = self._words + ([self._partial] if self._partial else [])
        self._words, self._partial = [], ""
        return [" ".join(words)] if words else []
