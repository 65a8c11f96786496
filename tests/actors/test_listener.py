"""Event fan-out: tell-based, and one broken sink never hurts the others."""

from __future__ import annotations

import threading
from typing import Any

import pykka

from purplegw.actors import listener
from purplegw.actors.listener import AccountInfo

from .conftest import wait_for

INFO = AccountInfo(1, "alice", "dummy", "alice@dummy")


class ActorSink(pykka.ThreadingActor, listener.EventSink):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.messages: list[tuple[str, str]] = []
        self.thread = ""

    def on_message(
        self, account: AccountInfo, contact: str, text: str, message_id: str | None
    ) -> None:
        self.thread = threading.current_thread().name
        if self.fail:
            raise RuntimeError("broken sink")
        self.messages.append((contact, text))


def test_events_reach_every_actor_sink_even_if_one_raises() -> None:
    good = ActorSink.start()
    bad = ActorSink.start(fail=True)
    try:
        for n in range(3):
            listener.send("on_message", account=INFO, contact="bob", text=f"t{n}", message_id=None)
        wait_for(lambda: len(good.proxy().messages.get(timeout=5)) == 3)
        assert good.proxy().messages.get(timeout=5) == [("bob", "t0"), ("bob", "t1"), ("bob", "t2")]
        # the broken sink is still alive and still receiving
        assert bad.is_alive()
        wait_for(lambda: bad.proxy().thread.get(timeout=5) != "")
        assert good.proxy().thread.get(timeout=5) != threading.current_thread().name
    finally:
        good.stop()
        bad.stop()


def test_send_survives_a_sink_that_stopped() -> None:
    sink = ActorSink.start()
    sink.stop()
    listener.send("on_message", account=INFO, contact="bob", text="x", message_id=None)


def test_plain_sink_errors_are_logged_not_raised(caplog: Any) -> None:
    class Broken(listener.EventSink):
        def on_typing(self, **_: Any) -> None:
            raise RuntimeError("nope")

    sink = Broken()
    listener.add_sink(sink)
    try:
        listener.send("on_typing", account=INFO, contact="bob", state=None)
    finally:
        listener.remove_sink(sink)
    assert "failed to handle on_typing" in caplog.text
