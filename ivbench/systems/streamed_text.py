"""A reply's text handed on as its tokens arrive (the TextDelta events of a streaming system)."""
from __future__ import annotations

from typing import Any
from collections.abc import Iterable


class StreamedText:
    """Decodes the growing token list and returns the text each new token adds. Text ending in
    an incomplete multi-byte character (U+FFFD) is held back until the next token completes
    it, and a decode that rewrites earlier text is not handed on: the pieces always join up to
    a prefix of the reply."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""  # what has been handed on

    def add(self, ids: Iterable[int]) -> str:
        """The new piece after `ids` ("" when there is none yet)."""
        self.ids.extend(int(i) for i in ids)
        return self._piece(final=False)

    def finish(self) -> str:
        """The rest of the text, an incomplete character included."""
        return self._piece(final=True)

    def _piece(self, final: bool) -> str:
        if not self.ids:
            return ""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if (not final and text.endswith("\ufffd")) or len(text) <= len(self.text) or not text.startswith(self.text):
            return ""
        piece, self.text = text[len(self.text):], text
        return piece
