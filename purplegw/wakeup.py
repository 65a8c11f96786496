"""``Wakeup``: an ``asyncio.Event`` for a single waiter, at a tenth of its size.

``asyncio.Event`` keeps a deque of waiters, and an empty deque is ~0.7 KiB
(CPython allocates its first block of 64 slots up front).  Each online
account held several events for its life that at most one task ever waits
on: the account actor's "the stream was lost" (actors/account.py; its
"the outbox has work" went with the outbox drain's parked task), and in an
XMPP client slixmpp's send queue's getter and its bind flag
(protocols/xmpp/lean.py); docs/runtime.md, "Per-account asyncio objects".
``Wakeup`` keeps the one waiter's future, made when it waits, and ``wait``
returns that future itself rather than a coroutine awaiting it: a coroutine
is ~0.25 KiB with its frame, and an idle account has two tasks parked on a
``Wakeup`` for its life.

Semantics are ``asyncio.Event``'s for that one waiter: ``set`` wakes it and
stays set until ``clear``; ``wait`` returns at once when set; a waiter woken
by ``set`` returns even if ``clear`` came before it ran.  A second waiter
while one waits is a bug of the caller and raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Generator


class _AlreadySet:
    """What ``wait`` returns when set: done at once, as ``await`` on a set ``asyncio.Event``."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that ends at once


_ALREADY_SET = _AlreadySet()


class Wakeup:
    __slots__ = ("_is_set", "_waiter")

    def __init__(self) -> None:
        self._is_set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    def wait(self) -> Awaitable[None]:
        """An awaitable done once set (at once if set now); call it in a running loop.

        The waiter's future itself: cancelling the task that awaits it
        cancels the future, which frees the place for the next waiter.
        """
        if self._is_set:
            return _ALREADY_SET
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            msg = "Wakeup has a waiter already"
            raise RuntimeError(msg)
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        return waiter
