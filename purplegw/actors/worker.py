"""The gateway's worker: one thread that runs its tasks and its timers, in order.

The gateway's rules (purplegw.gateway) are plain objects with no thread of
their own; everything they do runs here, one task at a time, so their
state needs no locks and the store (which blocks) never runs on the SIP
front's loop or on an account loop.  Timers fire on this same thread (a
heap, not one ``threading.Timer`` thread per timer), and ``completion``
is the one way a callback from another thread (a SIP client transaction
ending on the front's loop, an account actor answering on the shared loop)
gets back here.

Rules:

Rule 1. Tasks run in submission order; a timer runs once its deadline has
        passed, before any task submitted after that moment.
Rule 2. Completions (``completion``) run before the tasks still waiting, in
        the order they arrived: work already under way finishes before new
        work starts, so a SIP answer that waits for an account (202) or a
        NOTIFY's answer is not queued behind every request that arrived
        since.  A user's requests keep their order among themselves.
Rule 3. A task that raises is logged and the worker goes on.
Rule 4. ``stop()`` refuses new tasks and timers, runs what was already
        submitted, drops the timers that have not fired, and joins the thread.
Rule 5. ``offload(fn)`` runs ``fn`` on the worker's store thread, one at a
        time in submission order, and returns a future of its result: a
        blocking store write (a group commit and its fsync) runs there while
        the worker goes on with the rules; its completion comes back through
        ``completion``.  ``stop()`` first lets the store thread finish what
        was offloaded, so those completions still run; offloaded afterwards,
        ``fn`` runs on the caller.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TimerHandle:
    """A pending ``call_later``; ``cancel()`` is safe from any thread, and twice.

    A timer cancelled on the worker thread before it ran never runs, even if
    its deadline has passed.
    """

    __slots__ = ("args", "cancelled", "deadline", "fn")

    def __init__(self, deadline: float, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.deadline = deadline
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Worker:
    """One thread, a FIFO of tasks and a heap of timers (see the module rules)."""

    def __init__(
        self, name: str = "purplegw-gateway", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._tasks: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._completions: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        # The store thread (Rule 5), started at the first offload.
        self._store_name = (
            name.replace("gateway", "store") if "gateway" in name else f"{name}-store"
        )
        self._store_cond = threading.Condition()
        self._store_jobs: deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = deque()
        self._store_thread: threading.Thread | None = None
        self._store_closed = False

    def submit(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Run ``fn(*args)`` on the worker; dropped (logged) once stopping."""
        self._put(self._tasks, fn, args)

    def _put(
        self,
        queue: deque[tuple[Callable[..., object], tuple[Any, ...]]],
        fn: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        with self._cond:
            if self._stopping:
                logger.debug("gateway worker stopped; dropped %s", _name(fn))
                return
            queue.append((fn, args))
            self._cond.notify()

    def call_later(self, delay: float, fn: Callable[..., object], /, *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` on the worker after ``delay`` seconds, unless cancelled."""
        handle = TimerHandle(self._clock() + max(0.0, delay), fn, args)
        with self._cond:
            if self._stopping:
                handle.cancel()
                return handle
            heapq.heappush(self._timers, (handle.deadline, next(self._seq), handle))
            if self._timers[0][2] is handle:
                self._cond.notify()  # the thread may sleep towards a later deadline
        return handle

    def completion(self, callback: Callable[[T], object]) -> Callable[[T], None]:
        """A done-callback for another thread's future that runs ``callback(future)`` here.

        Hand it to ``add_done_callback`` of a ``concurrent.futures.Future`` (the
        SIP front's client transactions) or of an account's ``OutcomeFuture``:
        whichever thread completes the future, ``callback`` runs on the worker.
        """

        def hop(done: T) -> None:
            self._put(self._completions, callback, (done,))

        return hop

    def offload(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn()`` on the store thread (Rule 5); the future holds its result or error."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._store_cond:
            if not self._store_closed:
                if self._store_thread is None:
                    self._store_thread = threading.Thread(
                        target=self._store_run, name=self._store_name, daemon=True
                    )
                    self._store_thread.start()
                self._store_jobs.append((fn, future))
                self._store_cond.notify()
                return future
        _settle(future, fn)  # stopping: on the caller
        return future

    def _store_run(self) -> None:
        while True:
            with self._store_cond:
                while not self._store_jobs and not self._store_closed:
                    self._store_cond.wait()
                if not self._store_jobs:
                    return
                fn, future = self._store_jobs.popleft()
            _settle(future, fn)

    def stop(self, timeout: float = 10.0) -> None:
        with self._store_cond:
            self._store_closed = True
            self._store_cond.notify()
            store = self._store_thread
        if store is not None and store is not threading.current_thread():
            store.join(timeout)  # its completions still reach the worker
        with self._cond:
            self._stopping = True
            for _deadline, _seq, handle in self._timers:
                handle.cancel()
            self._timers.clear()
            for fn, args in self._tasks:  # due, queued, not run yet: dropped too
                if fn is _fire:
                    args[0].cancel()
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # --- the thread ---------------------------------------------------------------

    def _next(self) -> tuple[Callable[..., object], tuple[Any, ...]] | None:
        """The next thing to run, waiting for it; None once stopped and drained."""
        with self._cond:
            while True:
                now = self._clock()
                while self._timers and (self._timers[0][2].cancelled or self._timers[0][0] <= now):
                    _deadline, _seq, handle = heapq.heappop(self._timers)
                    if not handle.cancelled:
                        # Checked again when it runs: a task queued ahead of it
                        # may still cancel it (a restarted timer).
                        self._tasks.append((_fire, (handle,)))
                if self._completions:
                    return self._completions.popleft()
                if self._tasks:
                    return self._tasks.popleft()
                if self._stopping:
                    return None
                wait = self._timers[0][0] - now if self._timers else None
                self._cond.wait(wait)

    def _run(self) -> None:
        while (task := self._next()) is not None:
            fn, args = task
            try:
                fn(*args)
            except Exception:
                named = args[0].fn if fn is _fire else fn  # a timer: name what it ran
                logger.exception("gateway task %s failed", _name(named))


def _settle(future: concurrent.futures.Future[T], fn: Callable[[], T]) -> None:
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
        future.set_exception(exc)
    else:
        future.set_result(result)


def _fire(handle: TimerHandle) -> None:
    if not handle.cancelled:
        handle.cancelled = True  # fired: a late cancel() is a no-op
        handle.fn(*handle.args)


def _name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
