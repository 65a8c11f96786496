"""The asyncio loop thread and pykka actors that run on it.

Adapter sessions (slixmpp, the IRC client...) are asyncio code: their
objects may only be touched on their loop's thread.  In the default
``shared_loop`` runtime every account actor of a process runs *on* one
shared loop thread (``LoopActor``), so an account's state, its session and
its callbacks all live on one thread with no locks, and 5,000 accounts
cost 2 OS threads instead of 5,000 (measurements in docs/runtime.md).

``LoopActor`` plugs into pykka through its runtime hooks
(``_create_actor_inbox``, ``_create_future``, ``_start_actor_loop``) and
reuses its private ``_handle_receive``/``_stop``/``_handle_failure``; pykka
is pinned to 4.5.x in setup.py and tests/actors/test_loop.py fails loudly
if those change.

Rules for code on the loop: never block (no ``Future.get()``, no blocking
I/O: use ``run_in_executor``), never ``await`` a pykka future (its
``__await__`` blocks the loop), use ``tell`` not ``ask`` towards other actors.
Other threads reach the loop through ``call_soon_threadsafe`` only.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

import pykka
from pykka import ActorDeadError, messages

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Coroutine

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A callback that holds the loop longer than this is reported: one account
# blocking the shared loop delays every other account of the process.
SLOW_CALLBACK_SECONDS = 0.5


class LoopThread:
    """One asyncio event loop running forever in its own daemon thread."""

    def __init__(self, name: str = "purplegw-loop") -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()

    def start(self) -> LoopThread:
        self._thread.start()
        self._started.wait()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            self._close()

    def _close(self) -> None:
        # slixmpp's disconnect() leaves run_filters tasks behind: cancel
        # every leftover task and let it unwind before closing the loop.
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop; safe from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop; safe from any thread."""
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop.is_closed():
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # closed meanwhile
            return
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class _LoopInbox:
    """A pykka inbox whose ``put`` schedules processing on the loop.

    One wake-up per burst: while a drain is scheduled and has not started,
    a ``put`` only appends (the drain will see it).  Each
    ``call_soon_threadsafe`` writes the loop's self-pipe, a system call
    that gives up the GIL; the group commit hands an account hundreds of
    messages at once, which cost one write each.  Race-free without a
    lock: a ``put`` appends before it reads ``scheduled``, and the drain
    clears ``scheduled`` before it counts the queue, so an envelope is
    either counted by the running drain or schedules the next one (at
    worst a drain finds nothing).

    The envelopes wait in a ``queue.SimpleQueue``: ``put`` and ``get`` are
    each one C call under the GIL, as ``deque``'s ``append`` and
    ``popleft``, and an empty one is ~0.2 KiB where an empty deque is
    ~0.7 KiB (its first block of 64 slots); an idle account's is empty.
    """

    def __init__(self, actor: LoopActor) -> None:
        self._actor = actor
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.scheduled = False

    def put(self, envelope: Any, /) -> None:
        self._queue.put(envelope)
        if self.scheduled:
            return
        self.scheduled = True
        try:
            self._actor.actor_loop.call_soon_threadsafe(self._actor._process_queued)  # noqa: SLF001 - the mailbox is part of its actor
        except RuntimeError:  # loop closed: the process is shutting down
            self._actor._fail_pending()  # noqa: SLF001 - same

    def get(self) -> Any:
        return self._queue.get_nowait()

    def empty(self) -> bool:
        return self._queue.empty()

    def __len__(self) -> int:
        return self._queue.qsize()


class StoppedFlag(threading.Event):
    """``threading.Event`` without its ``Condition`` until someone waits.

    pykka gives every actor a ``threading.Event`` for "stopped": a
    ``Condition`` with a lock and a deque of waiters, ~1 KiB an actor,
    and pykka 4.5 only sets it and asks it (``ActorRef.is_alive``); nobody
    waits.  This one is a flag; a waiter, from any thread, gets a real
    ``Event`` made under one process-wide lock, which ``set`` takes too, so
    a ``set`` racing the first ``wait`` cannot be missed.
    """

    _make_lock = threading.Lock()

    def __init__(self) -> None:  # no super().__init__(): that builds the Condition
        self._set = False
        self._waited: threading.Event | None = None

    def is_set(self) -> bool:  # the base class's deprecated isSet() calls this too
        return self._set

    def set(self) -> None:
        with self._make_lock:
            self._set = True
            waited = self._waited
        if waited is not None:
            waited.set()

    def clear(self) -> None:
        with self._make_lock:
            self._set = False
            if self._waited is not None:
                self._waited.clear()

    def wait(self, timeout: float | None = None) -> bool:
        with self._make_lock:
            if self._set:
                return True
            if self._waited is None:
                self._waited = threading.Event()
            waited = self._waited
        return waited.wait(timeout)

    def _at_fork_reinit(self) -> None:
        self._waited = None  # an Event of the parent's threads; a waiter makes a new one


class LoopActor(pykka.Actor):
    """A pykka actor whose messages are handled on an asyncio loop thread.

    Subclasses pass ``loop=`` to ``start()``/``__init__``.  Everything else
    is ordinary pykka: ``ActorRef.tell``/``ask``, proxies, the registry.
    """

    def __init__(self, *args: Any, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        # Must be set before pykka creates the inbox.
        self.actor_loop = loop
        super().__init__(*args, **kwargs)
        # Before the actor starts: nothing has read or set pykka's Event yet.
        self.actor_stopped = self._actor_ref.actor_stopped = StoppedFlag()

    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        return _LoopInbox(self)

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        self.actor_loop.call_soon_threadsafe(self._actor_loop_setup)

    def _process_queued(self) -> None:
        """Handle the envelopes queued when this drain was scheduled (_LoopInbox)."""
        inbox = self.actor_inbox
        inbox.scheduled = False
        for _ in range(len(inbox)):
            if inbox.empty():  # a stop failed the rest (_fail_pending)
                return
            self._process_one()

    def _process_one(self) -> None:
        """Handle one envelope: the body of pykka's ``_actor_loop_running``."""
        if self.actor_stopped.is_set():
            self._fail_pending()
            return
        envelope = self.actor_inbox.get()
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                logger.info("Exception returned from %s to caller:", self, exc_info=True)
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:  # noqa: BLE001 - pykka's own policy
                    self._handle_failure(*sys.exc_info())
        except BaseException:  # noqa: BLE001 - pykka's policy: SystemExit and KeyboardInterrupt stop all actors
            # pykka stops everything on SystemExit/KeyboardInterrupt: do the
            # same, but never let them escape into the shared loop.
            logger.debug("%r in %s. Stopping all actors.", sys.exc_info()[1], self)
            self._stop()
            pykka.ActorRegistry.stop_all(block=False)
        if self.actor_stopped.is_set():
            self._fail_pending()

    def _undeliverable(self, message: Any) -> None:
        """Triggered for a ``tell`` that arrived after the actor stopped."""

    def _fail_pending(self) -> None:
        while not self.actor_inbox.empty():
            envelope = self.actor_inbox.get()
            if envelope.reply_to is None:
                self._undeliverable(envelope.message)
                continue
            if isinstance(envelope.message, messages._ActorStop):  # noqa: SLF001
                envelope.reply_to.set(None)
            else:
                error = ActorDeadError(f"{self.actor_ref} stopped before handling the message")
                envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))


_shared: LoopThread | None = None
_shared_lock = threading.Lock()


def shared_loop() -> LoopThread:
    """The process's shared loop thread, started on first use."""
    global _shared  # noqa: PLW0603 - one loop per process is the point
    with _shared_lock:
        if _shared is None or _shared.loop.is_closed() or not _shared.thread.is_alive():
            _shared = LoopThread().start()
        return _shared


def stop_shared_loop(timeout: float = 10.0) -> None:
    global _shared  # noqa: PLW0603
    with _shared_lock:
        if _shared is not None:
            _shared.stop(timeout)
            _shared = None


_login_gates: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[int, asyncio.Semaphore]
] = weakref.WeakKeyDictionary()
_gates_lock = threading.Lock()


def login_gate(loop: asyncio.AbstractEventLoop, limit: int) -> asyncio.Semaphore:
    """The semaphore that bounds concurrent logins of the accounts on ``loop``.

    Thousands of accounts starting together (start-up, reload, a server
    back from an outage) would otherwise all connect in the same instant,
    overflow the server's listen backlog and end up in backoff; with a
    bounded number in flight the server works at its own pace.  The shared
    loop outlives a configuration (tests, a restarted runtime), so a new
    limit gets a new semaphore.
    """
    with _gates_lock:
        current = _login_gates.get(loop)
        if current is None or current[0] != limit:
            current = _login_gates[loop] = (limit, asyncio.Semaphore(limit))
        return current[1]
