"""Per-account records stay small: what 10,000 accounts multiply."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from purplegw.actors.account import LoopAccountActor

from .conftest import row, wait_for


def test_an_account_actor_shares_its_attribute_names(make_accounts: Any, network: Any) -> None:
    # CPython keeps one table of attribute names for the instances of a
    # class while an instance has at most 29 of them (3.11: the 30th
    # insertion gives the instance a dict of its own, ~1.5 KiB): an
    # account actor stays under that, even after it logged in.
    accounts = make_accounts()
    accounts.apply([row(1), row(2)])
    wait_for(lambda: {"user1@dummy", "user2@dummy"} <= set(network.online()))
    # Only this test's two: an earlier test's stopped actors may not be collected yet.
    mine = {row(1).ext_user, row(2).ext_user}
    actors = [
        o
        for o in gc.get_objects()
        if isinstance(o, LoopAccountActor)
        and o.credentials.ext_user in mine
        and o.actor_ref.is_alive()
    ]
    assert len(actors) == 2
    for actor in actors:
        assert len(vars(actor)) <= 29, sorted(vars(actor))


def test_an_account_actor_holds_no_asyncio_event(make_accounts: Any, network: Any) -> None:
    # An asyncio.Event keeps a deque of waiters, ~0.7 KiB even empty; the two
    # an actor waits on ("lost", "work to do") are Wakeups (purplegw/wakeup.py).
    accounts = make_accounts()
    accounts.apply([row(3)])
    wait_for(lambda: row(3).ext_user in set(network.online()))
    actors = [
        o
        for o in gc.get_objects()
        if isinstance(o, LoopAccountActor)
        and o.credentials.ext_user == row(3).ext_user
        and o.actor_ref.is_alive()
    ]
    assert len(actors) == 1
    events = [k for k, v in vars(actors[0]).items() if isinstance(v, asyncio.Event)]
    assert events == []


def test_an_idle_account_actor_lets_its_last_request_go(make_accounts: Any, network: Any) -> None:
    # The outbox's drain loop waited for the next request with the last one
    # (its future, its outcome) still in a local: every idle account kept
    # the request it answered last, ~1.5 KiB with the future's locks.
    accounts = make_accounts()
    accounts.apply([row(4)])
    wait_for(lambda: row(4).ext_user in set(network.online()))
    handle = accounts.directory.get(row(4).sip_user, "dummy")
    future = handle.send_message("echo@dummy", "hello", "idle-1")
    assert future.get(timeout=10).status == 200
    gone = weakref.ref(future)
    del future
    wait_for(lambda: gc.collect() >= 0 and gone() is None, what="the answered request let go")
