"""``SendQueue``, ``Wakeup``, ``Fifo`` do what slixmpp asks of asyncio's Queue and Event, deque.

Each behaviour is checked against the asyncio class it replaces, side by
side, so the two cannot drift apart unnoticed.  The live path (slixmpp's
``run_filters`` sending through it, a disconnect waiting for it) is covered
by test_xmpp_session.py and test_xmpp_reconnect.py against Prosody.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from slixmpp.plugins.base import BasePlugin

from purplegw.fifo import COMPACT_AFTER, Fifo
from purplegw.protocols.xmpp.lean import SendQueue
from purplegw.wakeup import Wakeup

from .test_xmpp_sm_acks import Transport

QUEUES = [pytest.param(asyncio.Queue, id="asyncio.Queue"), pytest.param(SendQueue, id="SendQueue")]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("make", QUEUES)
def test_items_come_out_in_order_and_a_getter_waits_for_the_next(make: Any) -> None:
    async def story() -> list[Any]:
        queue = make()
        for i in range(5):
            queue.put_nowait(i)
        assert queue.qsize() == 5
        got = [await queue.get() for _ in range(5)]
        assert queue.empty()
        waiting = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        queue.put_nowait("late")
        got.append(await asyncio.wait_for(waiting, 1))
        return got

    assert run(story()) == [0, 1, 2, 3, 4, "late"]


@pytest.mark.parametrize("make", QUEUES)
def test_get_nowait_on_empty_raises_queue_empty(make: Any) -> None:
    async def story() -> None:
        queue = make()
        with pytest.raises(asyncio.QueueEmpty):
            queue.get_nowait()
        queue.put_nowait("a")
        assert queue.get_nowait() == "a"
        with pytest.raises(asyncio.QueueEmpty):
            queue.get_nowait()

    run(story())


@pytest.mark.parametrize("make", QUEUES)
def test_join_waits_for_every_task_done(make: Any) -> None:
    async def story() -> None:
        queue = make()
        await asyncio.wait_for(queue.join(), 1)  # nothing put: returns at once
        queue.put_nowait("a")
        queue.put_nowait("b")
        joiners = [asyncio.ensure_future(queue.join()) for _ in range(2)]
        queue.get_nowait()
        queue.task_done()
        await asyncio.sleep(0)
        assert not any(j.done() for j in joiners)
        queue.get_nowait()
        queue.task_done()
        await asyncio.wait_for(asyncio.gather(*joiners), 1)
        with pytest.raises(ValueError, match="too many times"):
            queue.task_done()

    run(story())


@pytest.mark.parametrize("make", QUEUES)
def test_a_join_timed_out_leaves_the_others_waiting(make: Any) -> None:
    # slixmpp's disconnect waits for the queue with wait_for(join(), wait).
    async def story() -> None:
        queue = make()
        queue.put_nowait("a")
        other = asyncio.ensure_future(queue.join())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.join(), 0.01)
        assert not other.done()
        queue.get_nowait()
        queue.task_done()
        await asyncio.wait_for(other, 1)

    run(story())


@pytest.mark.parametrize("make", QUEUES)
def test_drained_without_task_done_a_join_still_waits(make: Any) -> None:
    # slixmpp's session end discards what is queued with get_nowait alone.
    async def story() -> None:
        queue = make()
        queue.put_nowait("a")
        while not queue.empty():
            queue.get_nowait()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.join(), 0.01)

    run(story())


def test_a_cancelled_consumer_leaves_room_for_the_next() -> None:
    async def story() -> Any:
        queue = SendQueue()
        first = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        queue.put_nowait("kept")  # not lost to the cancelled getter
        return await asyncio.wait_for(queue.get(), 1)

    assert run(story()) == "kept"


def test_a_second_consumer_is_refused() -> None:
    async def story() -> None:
        queue = SendQueue()
        first = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="waiter already"):
            await queue.get()
        queue.put_nowait("x")
        assert await asyncio.wait_for(first, 1) == "x"

    run(story())


def test_a_queue_that_never_empties_keeps_only_what_is_unread() -> None:
    queue = SendQueue()
    queue.put_nowait(0)
    for i in range(1, 10 * COMPACT_AFTER):
        queue.put_nowait(i)
        assert queue.get_nowait() == i - 1  # one behind, never empty
    assert queue.qsize() == 1
    assert len(queue._items) <= 2 * COMPACT_AFTER + 1
    assert queue.get_nowait() == 10 * COMPACT_AFTER - 1
    assert queue._items == []


@pytest.mark.parametrize("make", [asyncio.Event, Wakeup])
def test_the_bound_flag_sets_and_clears_as_the_event(make: Any) -> None:
    flag = make()
    assert not flag.is_set()
    flag.set()
    flag.set()
    assert flag.is_set()
    flag.clear()
    assert not flag.is_set()


def test_a_client_uses_them() -> None:
    from purplegw.protocols.xmpp.session import Client

    async def story() -> Client:
        return Client("someone@example.org", "secret")

    client = run(story())
    assert isinstance(client.waiting_queue, SendQueue)
    assert isinstance(client.session_bind_event, Wakeup)
    client.register_plugin("xep_0198", {"window": 32})
    assert isinstance(client.plugin["xep_0198"].unacked_queue, Fifo)
    # Only handlers that do something stay on "session_bind" (slixmpp's own, for one).
    hooked = client._XMLStream__event_handlers["session_bind"]
    assert hooked
    assert all(getattr(h, "__func__", None) is not BasePlugin.session_bind for h, _ in hooked)


@pytest.mark.parametrize("make", [collections.deque, Fifo], ids=["deque", "Fifo"])
def test_a_fifo_does_what_xep_0198_does_with_its_deque(make: Any) -> None:
    queue = make()
    assert not queue
    assert len(queue) == 0
    with pytest.raises(IndexError):
        queue.popleft()
    for n in range(5):
        queue.append((n, f"stanza {n}"))
    assert queue.popleft() == (0, "stanza 0")
    assert len(queue) == 4
    assert bool(queue)
    assert list(queue) == [(n, f"stanza {n}") for n in range(1, 5)]
    while queue:
        queue.popleft()
    queue.append((9, "late"))
    assert list(queue) == [(9, "late")]
    queue.clear()
    assert not queue
    assert list(queue) == []
    # A queue that never empties keeps only what is still unread.
    for n in range(3000):
        queue.append(n)
        if n % 3:
            queue.popleft()
    assert list(queue) == list(range(2000, 3000))
    if isinstance(queue, Fifo):
        assert len(queue._items) < 2 * len(queue) + 1024


def _sending_client(loop: asyncio.AbstractEventLoop) -> Any:
    """A client whose send loop runs and whose writes are recorded."""
    from purplegw.protocols.xmpp.session import Client

    async def build() -> Any:
        return Client("someone@example.org", "secret")

    client = loop.run_until_complete(build())
    client.transport = Transport()
    client._always_send_everything = True  # no session to wait for: stanzas go out
    client._run_out_filters = loop.create_task(client.run_filters())
    return client


def _written(loop: asyncio.AbstractEventLoop, client: Any) -> bytes:
    loop.run_until_complete(asyncio.wait_for(client.waiting_queue.join(), 5))
    loop.run_until_complete(asyncio.sleep(0))  # the turn's one write (flush_writes)
    return b"".join(client.transport.written)


def test_the_send_loop_keeps_nothing_of_what_it_sent() -> None:
    # slixmpp's loop kept the last stanza and its text in its locals until
    # the next item came: an idle account's last ping, or a whole message.
    import gc
    import weakref

    loop = asyncio.new_event_loop()
    try:
        client = _sending_client(loop)
        message = client.make_message("bob@example.org", "x" * 20_000, mtype="chat")
        gone = weakref.ref(message)
        message.send()
        assert b"x" * 20_000 in _written(loop, client)
        del message
        gc.collect()
        assert gone() is None
        frame = client._run_out_filters.get_coro().cr_frame
        assert not [v for v in frame.f_locals.values() if isinstance(v, (str, bytes, tuple))]
        client._run_out_filters.cancel()
        loop.run_until_complete(asyncio.gather(client._run_out_filters, return_exceptions=True))
    finally:
        loop.close()


@pytest.mark.parametrize("whitespace", [False, True])
def test_the_whitespace_keepalive_is_scheduled_only_when_asked(whitespace: bool) -> None:
    from purplegw.protocols.xmpp.session import Client

    async def story() -> set[str]:
        client = Client("someone@example.org", "secret")
        client.whitespace_keepalive = whitespace
        client.event("session_start")
        await asyncio.sleep(0)
        scheduled = set(client.scheduled_events)
        client.cancel_schedule("Whitespace Keepalive")
        return scheduled

    assert ("Whitespace Keepalive" in run(story())) is whitespace


def test_the_last_presence_sent_is_not_kept_by_slixmpp() -> None:
    # slixmpp's roster kept it (~1.3 KiB per account) for answers the
    # session never lets slixmpp give (subscriptions, probes).
    import gc
    import weakref

    loop = asyncio.new_event_loop()
    try:
        client = _sending_client(loop)
        presence = client.make_presence(pshow="away", pstatus="at lunch")
        gone = weakref.ref(presence)
        presence.send()
        written = _written(loop, client)
        assert b"<show>away</show>" in written
        assert b"at lunch" in written
        del presence
        gc.collect()
        assert gone() is None
        assert client.client_roster.last_status is None
        client._run_out_filters.cancel()
        loop.run_until_complete(asyncio.gather(client._run_out_filters, return_exceptions=True))
    finally:
        loop.close()


def test_the_send_loop_runs_the_outgoing_filters_as_slixmpp_does() -> None:
    loop = asyncio.new_event_loop()
    try:
        client = _sending_client(loop)

        def tag(stanza: Any) -> Any:
            stanza["id"] = "tagged-" + stanza["id"]
            return stanza

        def drop(stanza: Any) -> Any:
            return None if stanza["body"] == "drop me" else stanza

        def broken(stanza: Any) -> Any:
            if stanza["body"] == "break":
                raise ValueError("a broken filter")
            return stanza

        async def later(stanza: Any) -> Any:
            await asyncio.sleep(0)
            stanza["subject"] = "async"
            return stanza

        for out_filter in (tag, drop, broken, later):
            client.add_filter("out", out_filter)
        for n, body in enumerate(("one", "drop me", "break", "two")):
            msg = client.make_message("bob@example.org", body, mtype="chat")
            msg["id"] = f"m{n}"
            msg.send()
        client.send("<r xmlns='urn:xmpp:sm:3'/>")  # a string passes the filters untouched
        written = _written(loop, client).decode()
        assert 'id="tagged-m0"' in written
        assert 'id="tagged-m3"' in written
        assert "<subject>async</subject>" in written
        assert "drop me" not in written  # a filter's None: not sent, the loop goes on
        assert ">break<" not in written  # a raising filter: logged, not sent, the loop goes on
        assert written.index("tagged-m0") < written.index("tagged-m3")
        assert written.endswith("<r xmlns='urn:xmpp:sm:3'/>")
        client._run_out_filters.cancel()
        loop.run_until_complete(asyncio.gather(client._run_out_filters, return_exceptions=True))
    finally:
        loop.close()


def test_presence_from_contacts_keeps_no_roster_state_in_slixmpp() -> None:
    # slixmpp made a RosterNode per sender and copied each presence into its
    # roster items; the session keeps presence itself (XmppSession._resources).
    from .test_xmpp_sm_acks import client_on

    loop = asyncio.new_event_loop()
    try:
        client = client_on(loop)
        client.transport = Transport()
        seen: list[tuple[str, str]] = []
        for event in ("presence", "presence_away", "presence_unavailable", "changed_subscription"):
            client.add_event_handler(event, lambda p, e=event: seen.append((e, p["from"].full)))
        client.init_parser()
        client.data_received(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='example.org'>"
        )
        for n in range(50):
            client.data_received(
                f"<presence from='c{n}@example.org/phone'><show>away</show></presence>".encode()
            )
        client.data_received(b"<presence from='c0@example.org/phone' type='unavailable'/>")
        client.data_received(b"<presence from='@@bad@@' />")  # dropped, as slixmpp does
        client.data_received(
            b"<presence from='c1@example.org' to='alice@example.org' type='unsubscribe'/>"
        )
        loop.run_until_complete(asyncio.sleep(0.01))
        assert seen[:2] == [
            ("presence", "c0@example.org/phone"),
            ("presence_away", "c0@example.org/phone"),
        ]
        assert seen.count(("presence_unavailable", "c0@example.org/phone")) == 1
        assert ("changed_subscription", "c1@example.org") in seen
        assert len(seen) == 2 * 50 + 2 + 2
        assert list(client.roster._rosters) == [client.boundjid.bare]  # no node per sender
        assert "c5@example.org" not in client.client_roster  # nor an item per contact
        assert "c1@example.org" in client.client_roster  # subscriptions: slixmpp's, kept
    finally:
        loop.close()
