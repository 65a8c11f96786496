"""TimerService: keyed one-shot timers on an asyncio loop."""

from __future__ import annotations

import asyncio

from purplegw.actors.front.timers import TimerService


def run(coro):
    return asyncio.run(coro)


def test_timers_fire_in_deadline_order_and_cancel_and_restart():
    async def scenario():
        loop = asyncio.get_running_loop()
        timers = TimerService(loop, resolution=0.001)
        fired: list[object] = []
        timers.start("late", 0.06, fired.append)
        timers.start("early", 0.01, fired.append)
        timers.start("cancelled", 0.02, fired.append)
        timers.start("restarted", 0.01, fired.append)
        timers.start("restarted", 0.04, fired.append)  # replaces the first deadline
        assert timers.cancel("cancelled")
        assert not timers.cancel("never-started")
        assert len(timers) == 3
        await asyncio.sleep(0.15)
        return fired, len(timers)

    fired, left = run(scenario())
    assert fired == ["early", "restarted", "late"]
    assert left == 0


def test_failing_callback_does_not_stop_other_timers():
    async def scenario():
        timers = TimerService(asyncio.get_running_loop(), resolution=0.001)
        fired: list[object] = []

        def boom(key):
            raise RuntimeError(key)

        timers.start("a", 0.01, boom)
        timers.start("b", 0.01, fired.append)
        await asyncio.sleep(0.05)
        return fired

    assert run(scenario()) == ["b"]


def test_many_timers_share_wakeups():
    async def scenario():
        loop = asyncio.get_running_loop()
        timers = TimerService(loop, resolution=0.01)
        fired: list[object] = []
        for i in range(1000):
            timers.start(i, 0.02 + (i % 5) * 0.001, fired.append)
        for i in range(0, 1000, 2):
            timers.cancel(i)
        # one pending loop callback no matter how many timers
        assert len(loop._scheduled) <= 2
        await asyncio.sleep(0.1)
        return fired

    fired = run(scenario())
    assert sorted(fired) == list(range(1, 1000, 2))
