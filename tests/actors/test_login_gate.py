"""Many accounts starting together log in a bounded number at a time."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from purplegw.protocols.dummy import DummySession
from tests.actors.conftest import row, wait_for

if TYPE_CHECKING:
    import pytest


def test_logins_in_flight_never_exceed_the_limit(
    make_accounts: Any, network: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    in_flight = {"now": 0, "max": 0}
    original = DummySession.login

    async def counting_login(self: DummySession) -> None:
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            await original(self)
        finally:
            with lock:
                in_flight["now"] -= 1

    monkeypatch.setattr(DummySession, "login", counting_login)
    accounts = make_accounts(protocols={"dummy": {"login_delay": 0.05}}, max_concurrent_logins=3)
    accounts.apply([row(n) for n in range(20)])
    wait_for(lambda: len(network.online()) == 20, what="all 20 accounts online")
    assert in_flight["max"] == 3  # the gate was full, and never more than full
