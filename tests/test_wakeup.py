"""``Wakeup``: ``asyncio.Event``'s behaviour for the one task that waits on it."""

from __future__ import annotations

import asyncio

import pytest

from purplegw.wakeup import Wakeup


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_wait_returns_at_once_when_set_and_blocks_after_clear() -> None:
    async def story() -> None:
        wakeup = Wakeup()
        wakeup.set()
        assert wakeup.is_set()
        await asyncio.wait_for(wakeup.wait(), 1)
        wakeup.clear()
        assert not wakeup.is_set()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), 0.05)

    run(story())


def test_set_wakes_the_waiter_and_stays_set() -> None:
    async def story() -> None:
        wakeup = Wakeup()
        waiter = asyncio.ensure_future(wakeup.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        wakeup.set()
        await asyncio.wait_for(waiter, 1)
        assert wakeup.is_set()
        await asyncio.wait_for(wakeup.wait(), 1)  # still set: no second wake needed

    run(story())


def test_a_waiter_woken_before_a_clear_still_returns() -> None:
    # As asyncio.Event: the drain clears and waits again only after it ran.
    async def story() -> None:
        wakeup = Wakeup()
        waiter = asyncio.ensure_future(wakeup.wait())
        await asyncio.sleep(0)
        wakeup.set()
        wakeup.clear()
        await asyncio.wait_for(waiter, 1)

    run(story())


def test_a_cancelled_waiter_leaves_room_for_the_next() -> None:
    async def story() -> None:
        wakeup = Wakeup()
        first = asyncio.ensure_future(wakeup.wait())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        wakeup.set()  # no waiter left to wake: nothing breaks
        wakeup.clear()
        second = asyncio.ensure_future(wakeup.wait())
        await asyncio.sleep(0)
        wakeup.set()
        await asyncio.wait_for(second, 1)

    run(story())


def test_a_second_waiter_at_the_same_time_is_refused() -> None:
    async def story() -> None:
        wakeup = Wakeup()
        first = asyncio.ensure_future(wakeup.wait())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="waiter already"):
            await wakeup.wait()
        wakeup.set()
        await asyncio.wait_for(first, 1)

    run(story())


def test_wait_is_the_waiters_future_not_a_coroutine() -> None:
    # The point of the class: a task parked on it holds no coroutine frame.
    async def story() -> None:
        wakeup = Wakeup()
        pending = wakeup.wait()
        assert isinstance(pending, asyncio.Future)
        wakeup.set()
        assert pending.done()
        await pending
        again = wakeup.wait()
        assert not asyncio.iscoroutine(again)
        await asyncio.wait_for(again, 1)  # set: done at once

    run(story())


def test_a_timed_out_wait_leaves_room_for_the_next() -> None:
    async def story() -> None:
        wakeup = Wakeup()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), 0.01)
        second = asyncio.ensure_future(wakeup.wait())
        await asyncio.sleep(0)
        wakeup.set()
        await asyncio.wait_for(second, 1)

    run(story())
