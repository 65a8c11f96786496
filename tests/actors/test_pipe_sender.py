"""A worker's end of the pipe: a loop turn's messages leave together, in order."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from typing import Any

from purplegw.actors.workers import _PipeSender


def _received(conn: Any) -> list[Any]:
    out = []
    while conn.poll(0.2):
        out.append(conn.recv())
    return out


def test_what_a_loop_turn_sends_arrives_as_one_batch_in_order() -> None:
    ours, theirs = multiprocessing.Pipe()
    sender = _PipeSender(ours)

    async def turns() -> None:
        for n in range(3):
            sender.send(("event", "first", n))
        assert not theirs.poll(0)  # nothing written before the turn ends
        await asyncio.sleep(0)
        sender.send(("event", "alone", 0))
        await asyncio.sleep(0)

    asyncio.run(turns())
    assert _received(theirs) == [
        ("batch", [("event", "first", 0), ("event", "first", 1), ("event", "first", 2)]),
        ("event", "alone", 0),  # a batch of one goes as itself
    ]


def test_a_send_from_another_thread_goes_after_the_pending_batch() -> None:
    # The status pusher's periodic snapshot (its own thread) must not
    # overtake what the loop sent before it: an older status would win.
    ours, theirs = multiprocessing.Pipe()
    sender = _PipeSender(ours)

    async def turn() -> None:
        sender.send(("event", "on_loop", 1))
        other = threading.Thread(target=sender.send, args=(("statuses", "snapshot", 2),))
        other.start()
        other.join()
        sender.send(("event", "on_loop", 3))  # a new batch: the first one is gone
        await asyncio.sleep(0)

    asyncio.run(turn())
    assert _received(theirs) == [
        ("event", "on_loop", 1),
        ("statuses", "snapshot", 2),
        ("event", "on_loop", 3),
    ]


def test_the_pusher_holds_the_lock_across_its_snapshot_and_send() -> None:
    # Reentrant: the pusher takes the sender's lock, reads, then sends.
    ours, theirs = multiprocessing.Pipe()
    sender = _PipeSender(ours)
    with sender.lock:
        sender.send(("statuses", [], []))
    assert _received(theirs) == [("statuses", [], [])]


def test_a_batch_left_when_the_loop_stops_is_sent_by_flush() -> None:
    ours, theirs = multiprocessing.Pipe()
    sender = _PipeSender(ours)
    loop = asyncio.new_event_loop()
    try:
        loop.call_soon(sender.send, ("event", "last", 1))
        loop.call_soon(loop.stop)  # before the flush the send scheduled
        loop.run_forever()
    finally:
        loop.close()
    assert not theirs.poll(0.1)
    sender.flush()  # the worker's shutdown
    assert _received(theirs) == [("event", "last", 1)]


def test_a_closed_pipe_drops_the_batch_and_says_so_at_debug(caplog: Any) -> None:
    ours, theirs = multiprocessing.Pipe()
    sender = _PipeSender(ours)
    theirs.close()

    async def turn() -> None:
        sender.send(("event", "lost", 1))  # the main process is gone: we exit soon
        await asyncio.sleep(0)

    with caplog.at_level("DEBUG", logger="purplegw.actors.workers"):
        asyncio.run(turn())
    assert "pipe closed" in caplog.text
