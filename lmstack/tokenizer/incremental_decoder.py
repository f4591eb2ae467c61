"""Streaming detokenization: turn token ids into text one token at a time.

Decoding each token on its own is wrong in two ways: an emoji or CJK character can be split over
several byte tokens (each alone decodes to "�"), and some decoders treat the first token of a
sequence specially (e.g. drop its leading space). So we decode a short window of recent tokens
twice, with and without the newest ones, and emit the difference, holding text back while it
ends in an incomplete character.
"""

from __future__ import annotations

from lmstack.tokenizer.tokenizer import Tokenizer

_INCOMPLETE = "\ufffd"  # what decoders produce for bytes that do not (yet) form a character


class IncrementalDecoder:
    """`push(token_id)` returns the newly completed text; `flush()` returns whatever is left."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._ids: list[int] = []
        self._window_start = 0  # decoding starts here, so context for the first new token exists
        self._emitted_until = 0  # ids before this index have been emitted as text

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        new_text = self._pending_text()
        if new_text.endswith(_INCOMPLETE):
            return ""  # wait for the rest of the character
        self._window_start, self._emitted_until = self._emitted_until, len(self._ids)
        return new_text

    def flush(self) -> str:
        """The held-back tail (an incomplete character decodes as "�" here), then reset."""
        rest = self._pending_text()
        self._ids, self._window_start, self._emitted_until = [], 0, 0
        return rest

    def _pending_text(self) -> str:
        already = self._decode(self._ids[self._window_start : self._emitted_until])
        return self._decode(self._ids[self._window_start :])[len(already) :]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)
