"""Decisions read from fuzz input bytes, so an op sequence is just bytes.

Stateful targets (transactions, subscriptions) turn their input into a
sequence of operations through a ``Draw``; mutating the bytes then mutates the
sequence, a reproducer is the byte string alone, and a coverage-guided engine
(atheris/libFuzzer) can drive the same target.  Past the end of the input
every read returns the smallest choice, as libFuzzer's FuzzedDataProvider
does, so every byte string decodes to some sequence.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

__all__ = ["Draw"]

T = TypeVar("T")


class Draw:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.data)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int(self, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi]`` from as few bytes as the range needs."""
        span = hi - lo
        if span <= 0:
            return lo
        value = 0
        for _ in range((span.bit_length() + 7) // 8):
            value = (value << 8) | self.byte()
        return lo + value % (span + 1)

    def bool(self) -> bool:
        return bool(self.byte() & 1)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.int(0, len(options) - 1)]

    def bytes(self, max_len: int) -> bytes:
        n = min(self.int(0, max_len), len(self.data) - self.pos)
        n = max(n, 0)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out
