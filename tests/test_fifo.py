"""``Fifo`` against ``collections.deque`` for what the account's outbox does with it.

The outbox (actors/account.py) takes a request, and puts it back first when
the connection drops under it or the server says "not now"; messages the
server never acked go back in front of the queue, oldest first.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

from purplegw.fifo import Fifo


@pytest.mark.parametrize("make", [collections.deque, Fifo], ids=["deque", "Fifo"])
def test_a_request_put_back_comes_out_first(make: Any) -> None:
    queue = make()
    for n in range(4):
        queue.append(n)
    taken = queue.popleft()
    queue.appendleft(taken)  # the retry
    assert list(queue) == [0, 1, 2, 3]
    assert [queue.popleft() for _ in range(2)] == [0, 1]
    for n in reversed(range(10, 13)):  # unacked messages, oldest first
        queue.appendleft(n)
    assert list(queue) == [10, 11, 12, 2, 3]
    assert len(queue) == 5
    queue.append(4)
    assert [queue.popleft() for _ in range(len(queue))] == [10, 11, 12, 2, 3, 4]
    assert not queue
    queue.appendleft("alone")
    assert list(queue) == ["alone"]
    assert queue.popleft() == "alone"
    with pytest.raises(IndexError):
        queue.popleft()


def test_an_emptied_fifo_holds_no_array_and_nothing_it_gave_out() -> None:
    import gc
    import weakref

    class Request:
        pass

    queue: Fifo[Request] = Fifo()
    first, second = Request(), Request()
    gone = weakref.ref(first)
    queue.append(first)
    queue.append(second)
    assert queue.popleft() is first
    del first
    gc.collect()
    assert gone() is None  # read, so not kept until the list empties
    assert queue.popleft() is second
    assert queue._items == []
