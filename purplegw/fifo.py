"""``Fifo``: the deque methods a per-account queue uses, in a list read from an index.

An empty ``collections.deque`` is ~0.7 KiB: CPython allocates its first
block of 64 slots up front.  An online account kept several for its life
that are empty nearly always: XEP-0198's queue of stanzas not yet acked
(protocols/xmpp/lean.py) and the account actor's outbox of requests waiting
for a connection (actors/account.py).  An empty list is 56 bytes.

Not thread-safe: ``popleft`` may empty the list a concurrent ``append``
just wrote to.  Each of its queues is used on one event loop's thread.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterator

T = TypeVar("T")

COMPACT_AFTER = 1024  # items read before a never-empty queue drops them from its list


class Fifo(Generic[T]):
    """A FIFO in a list read from ``_head``: append, appendleft, popleft, len, iter, clear.

    An empty ``collections.deque`` is ~0.7 KiB (its first block of 64 slots
    is allocated up front), an empty list 56 bytes.  The list is emptied
    (its array freed) whenever the reader catches up, so an idle account
    holds an empty list, and a burst costs no ``pop(0)`` moves; a queue that
    never empties drops what was read once that is half its list.
    """

    __slots__ = ("_head", "_items")

    def __init__(self) -> None:
        self._items: list[T | None] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return self._head < len(self._items)

    def __iter__(self) -> Iterator[T]:
        return itertools.islice(self._items, self._head, None)

    def append(self, item: T) -> None:
        self._items.append(item)

    def clear(self) -> None:
        self._items = []
        self._head = 0

    def appendleft(self, item: T) -> None:
        """Put ``item`` first: into the slot the last ``popleft`` freed, if any.

        A request taken and put back (a retry) costs no move of the others.
        """
        head = self._head
        if head:
            self._head = head - 1
            self._items[head - 1] = item
        else:
            self._items.insert(0, item)

    def popleft(self) -> T:
        items = self._items
        head = self._head
        if head >= len(items):
            msg = "pop from an empty Fifo"
            raise IndexError(msg)
        item = items[head]
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= COMPACT_AFTER and head * 2 >= len(items):
            # A queue that never quite empties: drop the read half (amortised O(1)).
            del items[:head]
            head = 0
        else:
            items[head - 1] = None  # not kept alive until the list empties
        self._head = head
        return item
