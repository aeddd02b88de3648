"""Token ids to streamed text: incremental decoding, and stop strings that are never sent.

Decoding only the newest ids would break where one character spans tokens (byte-level BPE splits
UTF-8) or where a decoder needs the token before (a leading-space marker); decoding every id at
every step costs O(n) per token. So each step decodes a short window: the ids from `_prefix`
(already-read context) and the text past what the window's first `_read - _prefix` ids gave is new,
unless it ends in U+FFFD (a character still incomplete), in which case the next token completes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

CONTEXT_IDS = 5  # prompt ids the first window starts with: enough for any decoder's look-back
INCOMPLETE = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


class TextStream:
    """The text of one sequence's new tokens, emitted in deltas that hold back a possible stop string."""

    def __init__(self, decoder: Decoder, prompt: Sequence[int], stops: Sequence[str]) -> None:
        self._decoder = decoder
        self._ids = list(prompt[-CONTEXT_IDS:])
        self._prefix, self._read = 0, len(self._ids)
        self._stops = tuple(stops)
        self._longest = max((len(s) for s in self._stops), default=0)
        self.text = ""
        """Every new token's text so far, cut before a stop string once one appears."""
        self._sent = 0

    def add(self, token: int) -> bool:
        """Append a token; True when the text now holds a stop string (and was cut before it)."""
        self._ids.append(token)
        window = self._decoder.decode(self._ids[self._prefix :])
        if window.endswith(INCOMPLETE):
            return False
        read = self._decoder.decode(self._ids[self._prefix : self._read])
        if len(window) <= len(read):
            return False
        new = window[len(read) :]
        self._prefix, self._read = self._read, len(self._ids)
        self.text += new
        return self._cut(len(new))

    def flush(self) -> None:
        """At the end: the text of ids still held back as an incomplete character, as decoded."""
        window = self._decoder.decode(self._ids[self._prefix :])
        read = self._decoder.decode(self._ids[self._prefix : self._read])
        if len(window) > len(read):
            self.text += window[len(read) :]
            self._prefix = self._read = len(self._ids)
            self._cut(len(window) - len(read))

    def delta(self, final: bool) -> str:
        """Text not sent yet; unless final, without a tail that could start a stop string."""
        end = len(self.text) if final else len(self.text) - self._held()
        out = self.text[self._sent : end] if end > self._sent else ""
        self._sent = max(self._sent, end)
        return out

    def _cut(self, added: int) -> bool:
        if not self._stops:
            return False
        start = max(0, len(self.text) - added - self._longest + 1)  # a stop may straddle the old text
        found = [i for i in (self.text.find(s, start) for s in self._stops) if i >= 0]
        if not found:
            return False
        self.text = self.text[: min(found)]
        return True

    def _held(self) -> int:
        """The longest tail of the text that is a proper prefix of a stop string."""
        held = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(self.text)), held, -1):
                if self.text.endswith(stop[:k]):
                    held = k
                    break
        return held
