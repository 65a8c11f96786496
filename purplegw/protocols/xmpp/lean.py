"""Three of slixmpp's per-client queues and events, at the size the client uses; its send loop.

Every online XMPP account holds one ``ClientXMPP``, and slixmpp 1.17 gives
each an ``asyncio.Queue`` of stanzas to send (``waiting_queue``) and an
``asyncio.Event`` that records that the session is bound
(``session_bind_event``).  The queue keeps three deques and an event of its
own, the event one deque; CPython allocates an empty deque's first block of
64 slots up front.  Measured with tracemalloc: 3.3 KiB for the queue and
0.9 KiB for the event, ~4 KiB per account, 40 MB at 10,000 accounts
(docs/runtime.md, "Cost per account").  What slixmpp does with them is
narrower than their classes:

* the queue has one consumer (``run_filters``, a task per client), which
  ``get``s and calls ``task_done``; producers ``put_nowait``; a disconnect
  asks ``empty`` and may ``join``; a session's end drains it with
  ``get_nowait`` (without ``task_done``, as with ``asyncio.Queue``);
* the event is only ``set``, ``clear``ed and asked ``is_set``: nothing
  waits on it, so a ``purplegw.wakeup.Wakeup`` takes its place;
* XEP-0198's queue of stanzas sent and not yet acknowledged
  (``unacked_queue``, a ``collections.deque``, ~0.7 KiB empty, which it is
  after every ack) is ``append``ed, ``popleft``ed, iterated, measured and
  ``clear``ed: a ``Fifo``.

``Client`` swaps them in right after slixmpp built them, before any
connection (slixmpp is pinned to 1.17.x in setup.py).  ``send_loop`` is
slixmpp's consumer of that queue, minus what it kept between items.
"""

from __future__ import annotations

import asyncio
import logging
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any

from slixmpp.xmlstream.stanzabase import StanzaBase
from slixmpp.xmlstream.tostring import tostring
from slixmpp.xmlstream.xmlstream import ContinueQueue

from purplegw.fifo import Fifo
from purplegw.wakeup import Wakeup

if TYPE_CHECKING:
    from collections.abc import Awaitable

log = logging.getLogger(__name__)


class SendQueue(Fifo):
    """A FIFO for one consumer with ``asyncio.Queue``'s methods that slixmpp calls."""

    __slots__ = ("_joiners", "_ready", "_unfinished")

    def __init__(self) -> None:
        super().__init__()
        self._ready = Wakeup()  # the consumer's: set by every put
        self._joiners: list[asyncio.Future[None]] | None = None
        self._unfinished = 0

    def qsize(self) -> int:
        return len(self)

    def empty(self) -> bool:
        return not self

    def put_nowait(self, item: Any) -> None:
        self.append(item)
        self._unfinished += 1
        self._ready.set()

    def get_nowait(self) -> Any:
        if not self:
            raise asyncio.QueueEmpty
        return self.popleft()

    def wait_ready(self) -> Awaitable[None]:
        """Done once the queue has an item (at once if it has): the consumer's wait.

        Not a coroutine: the send loop's task waits here for an idle
        account's whole life, and a coroutine would be one more frame held.
        """
        if not self:
            self._ready.clear()  # else set: every put sets it, only this clears it
        return self._ready.wait()  # a second consumer at once: RuntimeError

    async def get(self) -> Any:
        while not self:
            await self.wait_ready()
        return self.get_nowait()

    def task_done(self) -> None:
        if self._unfinished <= 0:
            msg = "task_done() called too many times"  # as asyncio.Queue says it
            raise ValueError(msg)
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            for joiner in self._joiners:
                if not joiner.done():
                    joiner.set_result(None)
            self._joiners = None

    async def join(self) -> None:
        if self._unfinished == 0:
            return
        joiner = asyncio.get_running_loop().create_future()
        if self._joiners is None:
            self._joiners = []
        self._joiners.append(joiner)
        try:
            await joiner
        finally:
            if self._joiners is not None and joiner in self._joiners:
                self._joiners.remove(joiner)


async def send_loop(client: Any) -> None:
    """slixmpp 1.17's ``run_filters`` (the send queue's consumer), without its lingering locals.

    slixmpp's loop keeps what it last sent in its locals (the stanza, its
    serialised text, the set of filters run on it) until the next item
    arrives: for an idle account its last keepalive ping or query, ~1-2 KiB,
    and after a large message the whole message, twice.  Here each item is
    handled by ``_send_item``, whose frame goes when it returns, and the
    loop drops its reference to the item before it waits.  The steps, their
    order, the log lines and the task accounting are slixmpp's.
    """
    queue = client.waiting_queue
    while True:
        while queue.empty():
            await queue.wait_ready()
        item = queue.get_nowait()
        try:
            await _send_item(client, *item)
        except ContinueQueue as exc:
            log.debug("Stanza in send queue not sent: %s", exc)
        except asyncio.CancelledError:
            log.debug("Send coroutine received cancel(), stopping")
            return
        except Exception:
            log.exception("Exception raised in send queue:")
        del item
        queue.task_done()


async def _send_item(client: Any, data: Any, use_filters: bool) -> None:  # noqa: FBT001 - slixmpp's queue item
    """One item of the send queue: the outgoing filters, then the transport (slixmpp's steps)."""
    filters = client._XMLStream__filters  # noqa: SLF001 - slixmpp keeps them private (pinned 1.17.x)
    if use_filters and isinstance(data, StanzaBase):
        already_run_filters: set[Any] = set()
        for filter_mode in ("out", "out_sync", "out_sce"):
            for out_filter in filters[filter_mode]:
                already_run_filters.add(out_filter)
                # 'out_sync' filters are taken as synchronous without checking.
                if filter_mode != "out_sync" and iscoroutinefunction(out_filter):
                    task = asyncio.create_task(out_filter(data))
                    _completed, pending = await asyncio.wait({task}, timeout=1)
                    if pending:
                        client._XMLStream__slow_tasks.append(task)  # noqa: SLF001 - same
                        # Not kept, as in slixmpp: the filter's task is (above).
                        asyncio.ensure_future(  # noqa: RUF006
                            client._continue_slow_send(task, already_run_filters),  # noqa: SLF001 - same
                            loop=client.loop,
                        )
                        raise ContinueQueue("Slow coroutine, rescheduling filters")
                    data = task.result()
                elif isinstance(data, StanzaBase):
                    data = out_filter(data)
                if data is None:
                    raise ContinueQueue("Empty stanza")
    if isinstance(data, StanzaBase):
        client.send_raw(tostring(data.xml, xmlns=client.default_ns, stream=client, top_level=True))
    elif isinstance(data, (str, bytes)):
        client.send_raw(data)
