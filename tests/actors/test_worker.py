"""The gateway's worker: one thread for its tasks, its timers and every hop back."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import TYPE_CHECKING

import pytest

from purplegw.actors.worker import Worker

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 5.0


@pytest.fixture
def worker() -> Iterator[Worker]:
    w = Worker(name="test-worker")
    yield w
    w.stop()


def on_worker(worker: Worker) -> None:
    """Wait until everything submitted so far has run."""
    done = threading.Event()
    worker.submit(done.set)
    assert done.wait(TIMEOUT)


def test_tasks_run_in_order_on_one_thread(worker: Worker) -> None:
    seen: list[tuple[int, str]] = []
    for n in range(100):
        worker.submit(lambda n=n: seen.append((n, threading.current_thread().name)))
    on_worker(worker)
    assert [n for n, _ in seen] == list(range(100))
    assert {name for _, name in seen} == {"test-worker"}


def test_timers_fire_on_the_worker_in_deadline_order_and_cancel(worker: Worker) -> None:
    fired: list[tuple[str, str]] = []
    done = threading.Event()

    def record(name: str) -> None:
        fired.append((name, threading.current_thread().name))
        if name == "last":
            done.set()

    worker.call_later(0.06, record, "last")
    worker.call_later(0.02, record, "first")
    cancelled = worker.call_later(0.04, record, "cancelled")
    cancelled.cancel()
    assert done.wait(TIMEOUT)
    assert fired == [("first", "test-worker"), ("last", "test-worker")]


def test_a_timer_cancelled_by_a_task_queued_ahead_of_it_never_runs(worker: Worker) -> None:
    """Restarting a keyed timer cancels the old one even when it is already due."""
    fired: list[str] = []
    gate = threading.Event()
    worker.submit(gate.wait, TIMEOUT)  # hold the worker while the timer falls due
    old = worker.call_later(0.0, fired.append, "old")
    worker.submit(old.cancel)  # runs before the due timer: it was submitted first
    threading.Timer(0.05, gate.set).start()
    on_worker(worker)
    on_worker(worker)
    assert fired == []


def test_completion_runs_the_callback_on_the_worker_whatever_thread_completes(
    worker: Worker,
) -> None:
    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    ran = threading.Event()
    seen: list[tuple[int, str]] = []

    def callback(done: concurrent.futures.Future[int]) -> None:
        seen.append((done.result(), threading.current_thread().name))
        ran.set()

    future.add_done_callback(worker.completion(callback))
    threading.Thread(target=future.set_result, args=(7,), name="foreign-loop").start()
    assert ran.wait(TIMEOUT)
    assert seen == [(7, "test-worker")]


def test_a_failing_task_is_logged_and_the_worker_goes_on(
    worker: Worker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    after: list[int] = []
    with caplog.at_level(logging.ERROR, logger="purplegw.actors.worker"):
        worker.submit(broken)
        worker.submit(after.append, 1)
        on_worker(worker)
    assert after == [1]
    assert "broken" in caplog.text
    assert "boom" in caplog.text


def test_stop_runs_what_was_submitted_drops_timers_and_refuses_more() -> None:
    worker = Worker(name="stopping-worker")
    gate = threading.Event()
    ran: list[str] = []
    worker.submit(gate.wait, TIMEOUT)
    worker.submit(ran.append, "queued")
    timer = worker.call_later(0.0, ran.append, "timer")
    threading.Timer(0.05, gate.set).start()
    worker.stop()
    assert ran == ["queued"]
    assert timer.cancelled
    worker.submit(ran.append, "late")
    late_timer = worker.call_later(0.0, ran.append, "late timer")
    assert late_timer.cancelled
    assert ran == ["queued"]


def test_completions_run_before_requests_still_waiting(worker: Worker) -> None:
    """An answer already under way is not queued behind every new request."""
    gate = threading.Event()
    order: list[str] = []
    worker.submit(gate.wait, TIMEOUT)  # the worker is busy while all this arrives
    for n in range(3):
        worker.submit(order.append, f"request {n}")
    future: concurrent.futures.Future[str] = concurrent.futures.Future()
    future.add_done_callback(worker.completion(lambda done: order.append(done.result())))
    future.set_result("answer")
    gate.set()
    on_worker(worker)
    assert order == ["answer", "request 0", "request 1", "request 2"]


def test_offloaded_work_runs_in_order_on_the_store_thread_and_answers_on_the_worker(
    worker: Worker,
) -> None:
    ran: list[tuple[int, str]] = []
    answered: list[tuple[object, str]] = []
    done = threading.Event()
    release = threading.Event()

    def work(n: int) -> int:
        if n == 0:
            assert release.wait(TIMEOUT)  # a slow commit: the worker goes on meanwhile
        ran.append((n, threading.current_thread().name))
        if n == 3:
            raise ValueError("three")
        return n * 10

    def answer(future: concurrent.futures.Future[int]) -> None:
        result = future.exception() or future.result()
        answered.append((result, threading.current_thread().name))
        if len(answered) == 5:
            done.set()

    for n in range(5):
        worker.submit(
            lambda n=n: worker.offload(lambda: work(n)).add_done_callback(worker.completion(answer))
        )
    on_worker(worker)  # the worker is free while the store thread waits in work(0)
    assert ran == []
    release.set()
    assert done.wait(TIMEOUT)
    assert [n for n, _ in ran] == [0, 1, 2, 3, 4]
    assert {name for _, name in ran} == {"test-worker-store"}
    assert [str(r) for r, _ in answered] == ["0", "10", "20", "three", "40"]
    assert {name for _, name in answered} == {"test-worker"}


def test_stop_waits_for_offloaded_work_and_runs_its_completion() -> None:
    worker = Worker(name="test-worker")
    answered = threading.Event()
    release = threading.Event()

    def slow() -> str:
        assert release.wait(TIMEOUT)
        return "committed"

    future = worker.offload(slow)
    future.add_done_callback(worker.completion(lambda _f: answered.set()))
    threading.Timer(0.05, release.set).start()
    worker.stop()
    assert future.result(0) == "committed"
    assert answered.is_set()
    late = worker.offload(lambda: threading.current_thread().name)  # after stop: on the caller
    assert late.result(0) == threading.current_thread().name
