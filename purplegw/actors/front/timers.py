"""Timer service for the sans-IO SIP machines, run on the front's asyncio loop.

The transaction machines return ``StartTimer(name, delay)`` / ``CancelTimer(name)``
actions; the front maps them onto :class:`TimerService` with a key of
``(transaction key, timer name)``.

Why not one ``loop.call_later`` per timer: a busy UDP front keeps one Timer J
(64*T1 = 32 s) per answered request, i.e. hundreds of thousands of pending
timers, and most timers of the client side are cancelled. asyncio handles are
relatively heavy objects and cancelled ones linger in the loop's heap. Here a
plain heap of ``(deadline, seq, key)`` tuples plus a dict holds them; a
cancellation is a dict delete (the heap entry is skipped when it surfaces),
and the loop only ever has ONE pending ``call_at`` (for the earliest deadline).
Deadlines are rounded up to ``resolution`` so bursts of timers share wake-ups.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Hashable

logger = logging.getLogger(__name__)


class TimerService:
    """Keyed one-shot timers on an asyncio loop. Not thread-safe: call from the loop thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, resolution: float = 0.005) -> None:
        self._loop = loop
        self._resolution = resolution
        self._heap: list[tuple[float, int, Hashable]] = []
        # key -> (seq, callback index): a tuple of ints, which the garbage
        # collector stops tracking, unlike one holding the callback itself
        self._timers: dict[Hashable, tuple[int, int]] = {}
        self._callbacks: list[Callable[[Any], object]] = []
        self._callback_index: dict[Callable[[Any], object], int] = {}
        self._seq = itertools.count()
        self._wakeup: asyncio.TimerHandle | None = None
        self._wakeup_at = math.inf

    def __len__(self) -> int:
        return len(self._timers)

    def start(self, key: Hashable, delay: float, callback: Callable[[Any], object]) -> None:
        """Run ``callback(key)`` after ``delay`` seconds; restarting a key replaces its timer.

        The key is passed back so callers can share one callback object for
        all timers instead of allocating a closure per timer. Callbacks are
        remembered for the service's lifetime: pass long-lived callables
        (a stored bound method), not a fresh lambda per timer.
        """
        r = self._resolution
        deadline = math.ceil((self._loop.time() + delay) / r) * r
        seq = next(self._seq)
        index = self._callback_index.get(callback)
        if index is None:
            index = self._callback_index[callback] = len(self._callbacks)
            self._callbacks.append(callback)
        self._timers[key] = (seq, index)
        heapq.heappush(self._heap, (deadline, seq, key))
        if deadline < self._wakeup_at:
            self._schedule(deadline)

    def cancel(self, key: Hashable) -> bool:
        """Cancel a pending timer; False when there was none."""
        return self._timers.pop(key, None) is not None

    def active(self, key: Hashable) -> bool:
        return key in self._timers

    def clear(self) -> None:
        self._timers.clear()
        self._heap.clear()
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        self._wakeup_at = math.inf

    def _schedule(self, deadline: float) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup_at = deadline
        self._wakeup = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._wakeup = None
        self._wakeup_at = math.inf
        now = self._loop.time()
        heap, timers = self._heap, self._timers
        while heap and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            entry = timers.get(key)
            if entry is None or entry[0] != seq:
                continue  # cancelled or restarted since
            del timers[key]
            try:
                self._callbacks[entry[1]](key)
            except Exception:
                # one broken timer callback must not stop the others
                logger.exception("timer %r failed", key)
        # drop cancelled entries at the top so an idle service does not wake up for nothing
        while heap and (heap[0][2] not in timers or timers[heap[0][2]][0] != heap[0][1]):
            heapq.heappop(heap)
        if heap:
            self._schedule(heap[0][0])
