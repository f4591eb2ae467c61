"""A reply's text as its tokens arrive: detokenized, cut at a stop string, released when safe.

Text that might be the start of a stop string is held back until the next tokens show whether
it is one, so a streamed reply never shows a stop string, not even in part.
"""

from __future__ import annotations

from typing import Any


class TextStream:
    def __init__(self, tokenizer: Any, stop_token_ids: set[int], stop_strings: list[str]):
        from lmstack.tokenizer import IncrementalDecoder

        self.decoder = IncrementalDecoder(tokenizer, skip_special_tokens=True)
        self.stop_token_ids, self.stop_strings = stop_token_ids, [s for s in stop_strings if s]
        self.text = ""
        self.released = 0  # characters of `text` safe to show
        self.stopped = False

    def push(self, token_id: int) -> bool:
        """Take one new token; True when it ends the reply at a stop string."""
        if token_id in self.stop_token_ids:  # generation ends on it; its text is not part of the reply
            return False
        self._extend(self.decoder.push(token_id))
        return self.stopped

    def finish(self) -> None:
        """The reply is over: release the held-back tail."""
        if not self.stopped:
            self._extend(self.decoder.flush())
        self.released = len(self.text)

    def _extend(self, piece: str) -> None:
        self.text += piece
        cut = _first_stop_string(self.text, self.stop_strings)
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
            self.released = cut
        else:
            self.released = max(self.released, len(self.text) - _partial_stop_length(self.text, self.stop_strings))


def _first_stop_string(text: str, stop_strings: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(found) if found else None


def _partial_stop_length(text: str, stop_strings: list[str]) -> int:
    """Length of the longest end of `text` that is the start of some stop string."""
    return max((n for s in stop_strings for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
