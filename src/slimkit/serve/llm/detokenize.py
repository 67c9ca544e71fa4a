"""Generated token ids to text as they come: incremental decoding and stop strings.

Decoding token by token is not ``decode(one token)``: a character may span tokens (UTF-8
bytes of byte-level BPE) and a leading space may depend on the previous token. So each new
token is decoded with a few tokens before it and only the text past theirs is emitted, once it
no longer ends in an incomplete character (the method of Hugging Face's text-generation-
inference). Stop strings are matched on the text: text that could be the start of a stop
string is held back until it is clear, and the stop string itself is never returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CONTEXT_TOKENS = 5  # prompt tokens decoded before the first new one (its leading space)
INCOMPLETE = "\ufffd"  # what a tokenizer decodes a partial UTF-8 character to


class TextStream:
    """The text of a generation, pushed token by token; ``stopped`` once a stop string showed.

    Example:
        >>> class Chars:  # a toy tokenizer: token i is chr(i)
        ...     def decode(self, ids, skip_special_tokens=True):
        ...         return "".join(map(chr, ids))
        >>> s = TextStream(Chars(), prompt=[], stop=("\\n\\n",))
        >>> [s.push(ord(c)) for c in "ab\\nc\\n\\nd"]
        ['a', 'b', '', '\\nc', '', '', '']
        >>> s.stopped, s.text
        (True, 'ab\\nc')
    """

    def __init__(self, tokenizer: Any, prompt: Sequence[int], stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self._ids = list(prompt[-CONTEXT_TOKENS:])
        self._prefix = 0  # decoding starts here
        self._read = len(self._ids)  # text of ids before this was returned already
        self._pending = ""  # decoded, not returned yet (could start a stop string)
        self.text = ""  # everything returned
        self.stopped = False

    def push(self, token: int) -> str:
        """The new text that ``token`` makes final (may be empty); nothing once stopped."""
        if self.stopped:
            return ""
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if len(after) <= len(before) or after.endswith(INCOMPLETE):
            return ""  # wait for the rest of a character
        self._prefix, self._read = self._read, len(self._ids)
        return self._release(after[len(before):])

    def finish(self) -> str:
        """The text held back at the end of the generation (no stop string followed)."""
        if self.stopped:
            return ""
        rest, self._pending = self._pending, ""
        self.text += rest
        return rest

    def _release(self, new: str) -> str:
        pending = self._pending + new
        hits = [i for i in (pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped, out, self._pending = True, pending[:min(hits)], ""
        else:
            hold = _held_back(pending, self.stop)
            out, self._pending = pending[:len(pending) - hold], pending[len(pending) - hold:]
        self.text += out
        return out

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))


def _held_back(text: str, stop: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is the start of a stop string."""
    for n in range(min(len(text), max((len(s) for s in stop), default=1) - 1), 0, -1):
        if any(s.startswith(text[-n:]) for s in stop):
            return n
    return 0
