"""LoopActor: pykka actors handled on the shared asyncio loop thread.

These also guard the pykka private hooks the runtime relies on: an upgrade
that renames them fails here, not in production.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import pykka
import pytest

from purplegw.actors.loop import LoopActor, LoopThread, StoppedFlag

if TYPE_CHECKING:
    from collections.abc import Iterator


class Counter(LoopActor):
    def __init__(self, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.count = 0
        self.threads: set[str] = set()
        self.started_on = ""

    def on_start(self) -> None:
        self.started_on = threading.current_thread().name

    def add(self, n: int) -> int:
        self.threads.add(threading.current_thread().name)
        self.count += n
        return self.count

    def boom(self) -> None:
        raise ValueError("boom")

    def running_loop(self) -> bool:
        return asyncio.get_running_loop() is self.actor_loop


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread(name="test-loop").start()
    yield thread
    pykka.ActorRegistry.stop_all()
    thread.stop()


def test_pykka_hooks_exist() -> None:
    for name in (
        "_create_actor_inbox",
        "_create_future",
        "_start_actor_loop",
        "_handle_receive",
        "_stop",
        "_handle_failure",
        "_actor_loop_setup",
    ):
        assert hasattr(pykka.Actor, name), (
            f"pykka.Actor.{name} is gone: update purplegw.actors.loop"
        )


def test_messages_run_in_order_on_the_loop_thread(loop_thread: LoopThread) -> None:
    ref = Counter.start(loop=loop_thread.loop)
    proxy = ref.proxy()
    futures = [proxy.add(1) for _ in range(200)]
    assert [f.get(timeout=10) for f in futures] == list(range(1, 201))
    assert proxy.threads.get(timeout=10) == {"test-loop"}
    assert proxy.started_on.get(timeout=10) == "test-loop"
    assert proxy.running_loop().get(timeout=10) is True


def test_a_burst_of_messages_wakes_the_loop_once_and_keeps_its_order(
    loop_thread: LoopThread,
) -> None:
    """While a drain is pending, tells only queue: one self-pipe write per burst."""
    ref = Counter.start(loop=loop_thread.loop)
    proxy = ref.proxy()
    assert proxy.add(0).get(timeout=10) == 0
    wakeups = []
    real = loop_thread.loop.call_soon_threadsafe

    def counting(callback, *args, **kwargs):
        wakeups.append(callback)
        return real(callback, *args, **kwargs)

    busy, release = threading.Event(), threading.Event()
    loop_thread.loop.call_soon_threadsafe(lambda: (busy.set(), release.wait(10)))
    assert busy.wait(10)  # the loop is held: nothing of the burst can run yet
    loop_thread.loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        futures = [proxy.add(1) for _ in range(300)]
    finally:
        loop_thread.loop.call_soon_threadsafe = real  # type: ignore[method-assign]
        release.set()
    assert [f.get(timeout=10) for f in futures] == list(range(1, 301))
    assert len(wakeups) == 1
    # The next message after the burst schedules a drain of its own.
    assert proxy.add(1).get(timeout=10) == 301


def test_exception_goes_to_the_caller_and_actor_survives(loop_thread: LoopThread) -> None:
    ref = Counter.start(loop=loop_thread.loop)
    with pytest.raises(ValueError, match="boom"):
        ref.proxy().boom().get(timeout=10)
    assert ref.proxy().add(2).get(timeout=10) == 2


def test_tell_to_a_stopped_actor_raises_actor_dead(loop_thread: LoopThread) -> None:
    ref = Counter.start(loop=loop_thread.loop)
    ref.stop(timeout=10)
    assert not ref.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("anything")


def test_unhandled_exception_in_tell_stops_only_that_actor(loop_thread: LoopThread) -> None:
    bad = Counter.start(loop=loop_thread.loop)
    good = Counter.start(loop=loop_thread.loop)
    bad.tell(pykka.messages.ProxyCall(attr_path=("boom",), args=(), kwargs={}))
    good_proxy = good.proxy()
    assert good_proxy.add(1).get(timeout=10) == 1
    for _ in range(500):
        if not bad.is_alive():
            break
        good_proxy.add(0).get(timeout=10)
    assert not bad.is_alive()
    assert good.is_alive()


def test_many_actors_share_one_thread(loop_thread: LoopThread) -> None:
    before = threading.active_count()
    refs = [Counter.start(loop=loop_thread.loop) for _ in range(300)]
    futures = [ref.proxy().add(1) for ref in refs]
    assert all(f.get(timeout=20) == 1 for f in futures)
    assert threading.active_count() == before


def test_loop_stop_cancels_leftover_tasks() -> None:
    thread = LoopThread(name="leftovers").start()
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    thread.call(lambda: thread.loop.create_task(forever()))
    thread.submit(asyncio.sleep(0)).result(timeout=10)
    thread.stop()
    assert cancelled.is_set()
    assert thread.loop.is_closed()


def test_stopped_flag_is_an_event_that_builds_its_condition_only_for_a_waiter() -> None:
    flag = StoppedFlag()
    assert isinstance(flag, threading.Event)
    assert not hasattr(flag, "_cond")  # what threading.Event costs: ~1 KiB a flag
    assert not flag.is_set()
    assert flag.wait(0.01) is False
    flag.set()
    assert flag.is_set()
    assert flag.wait(0) is True
    flag.clear()
    assert not flag.is_set()
    assert flag.wait(0.01) is False


def test_a_set_racing_the_first_wait_is_never_missed() -> None:
    # The waiter's Event is made under the lock set() takes: whichever comes
    # first, the waiter returns True (a missed set would wait the 10 s out).
    for _ in range(300):
        flag = StoppedFlag()
        results: list[bool] = []
        waiter = threading.Thread(target=lambda f=flag, r=results: r.append(f.wait(10)))
        waiter.start()
        flag.set()
        waiter.join(15)
        assert results == [True]


def test_a_loop_actor_stops_through_its_stopped_flag(loop_thread: LoopThread) -> None:
    ref = Counter.start(loop=loop_thread.loop)
    actor_flag = ref.actor_stopped
    assert isinstance(actor_flag, StoppedFlag)
    assert ref.is_alive()
    assert ref.proxy().add(2).get(timeout=5) == 2
    ref.stop()
    assert not ref.is_alive()
    assert actor_flag.wait(0) is True
