"""XEP-0198 acks held until the gateway reports a received message stored, against Prosody.

The session gives each received message an ack token when its events object
``takes_ack_tokens``; every ``<a/>`` it writes stops before the oldest
message not yet reported (``messages_stored``), and once reports catch up it
tells the server the rest unasked.  A message never reported is let go after
``ACK_HOLD_MAX``.  Prosody closes a stream whose ``<a/>`` counts wrongly
(more than it sent, or less than already acknowledged), so the stream still
carrying a message at the end is part of each check.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from purplegw.protocols.xmpp import session as session_module
from tests.kit.xmpp_peer import XmppPeer

from .xmpp_harness import LoopThread, RecordingEvents, make_session

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.kit.prosody import Prosody

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()
ACK = re.compile(r"^<a xmlns='urn:xmpp:sm:3' h='(\d+)'/>$")


class TokenEvents(RecordingEvents):
    """The gateway's side: takes tokens and keeps them for the test to report."""

    takes_ack_tokens = True

    def on_message(
        self,
        contact: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
        receipts: str = "",
        ack_token: int | None = None,
    ) -> None:
        super().on_message(contact, text, message_id, sent_at, receipts)
        self._add("token", message_id, ack_token)


class Acks:
    """Every <a/> the session writes, by its h."""

    def __init__(self, client: Any) -> None:
        self.values: list[int] = []
        self._lock = threading.Lock()
        send_raw = client.send_raw

        def recording(data: Any) -> None:
            text = data.decode() if isinstance(data, bytes) else str(data)
            match = ACK.match(text)
            if match:
                with self._lock:
                    self.values.append(int(match[1]))
            send_raw(data)

        client.send_raw = recording

    def snapshot(self) -> list[int]:
        with self._lock:
            return list(self.values)

    def wait(self, predicate: Any, timeout: float = 10.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while not predicate(self.snapshot()):
            if time.monotonic() > deadline:
                raise AssertionError(f"no such <a/> within {timeout}s: {self.snapshot()}")
            time.sleep(0.02)
        return self.snapshot()


@pytest.fixture
def pair(loop: LoopThread, prosody: Prosody) -> Iterator[tuple[Any, TokenEvents, XmppPeer, str]]:
    """alice (the session, tokens on) and bob (a plain client), fresh accounts."""
    n = next(_names)
    alice, bob = prosody.create_user(f"holder{n}"), prosody.create_user(f"sender{n}")
    events = TokenEvents()
    config = {"server": prosody.address, "ca_file": prosody.ca_file, "keepalive": 0}
    session, _ = make_session(loop, alice.jid, alice.password, config, events=events)
    loop.run(session.login())
    with XmppPeer(
        bob.jid, bob.password, prosody.host, prosody.port, ca_file=prosody.ca_file
    ) as peer:
        yield session, events, peer, alice.jid
    loop.run(session.logout())


def held(loop: LoopThread, session: Any) -> list[tuple[int, int]]:
    """(token, count) of the messages the session holds, read on its loop."""

    async def read() -> list[tuple[int, int]]:
        return [(token, n) for token, n, _since in session.client._held or ()]

    return loop.run(read())


def handled(loop: LoopThread, session: Any) -> int:
    async def read() -> int:
        return session.client.plugin["xep_0198"].handled

    return loop.run(read())


def report(loop: LoopThread, session: Any, *tokens: int) -> None:
    loop.loop.call_soon_threadsafe(session.messages_stored, list(tokens))


def still_carries(loop: LoopThread, session: Any, peer: XmppPeer, text: str) -> None:
    loop.run(session.send_message(peer.jid.partition("/")[0], text, f"id-{text}"))
    peer.wait_for(lambda e: e.kind == "message" and e.body == text)


def test_acks_stop_before_the_oldest_message_not_reported_stored(loop, pair):
    session, events, peer, alice = pair
    acks = Acks(session.client)
    for n in range(3):
        peer.send_message(alice, f"held {n}", msg_id=f"held-{n}")
    for n in range(3):
        events.wait_for("token", lambda mid, _t, n=n: mid == f"held-{n}")
    tokens = [token for _mid, token in events.of("token")]
    assert all(isinstance(t, int) for t in tokens)
    counts = dict(held(loop, session))
    first, third = counts[tokens[0]], counts[tokens[2]]
    # Prosody asks after the first stanza; the answer leaves the held ones out.
    values = acks.wait(lambda v: len(v) >= 1)
    assert max(values) <= first - 1, (values, first)

    report(loop, session, tokens[1])  # out of order: the first still holds the count
    time.sleep(0.3)
    assert max(acks.snapshot()) <= first - 1

    report(loop, session, tokens[0])  # now up to the third, unasked
    acks.wait(lambda v: third - 1 in v)
    report(loop, session, tokens[2])
    everything = handled(loop, session)
    acks.wait(lambda v: max(v) == everything)
    assert held(loop, session) == []
    still_carries(loop, session, peer, "after the reports")


def test_a_message_never_reported_is_let_go_after_the_hold_limit(loop, pair, monkeypatch, caplog):
    session, events, peer, alice = pair
    monkeypatch.setattr(session_module, "ACK_HOLD_MAX", 0.5)
    acks = Acks(session.client)
    peer.send_message(alice, "never reported", msg_id="lost-report")
    events.wait_for("token", lambda mid, _t: mid == "lost-report")
    time.sleep(0.7)
    peer.send_message(alice, "next", msg_id="next")
    token = events.wait_for("token", lambda mid, _t: mid == "next")[1]
    (next_count,) = [n for t, n in held(loop, session) if t == token]
    # The server's <r/> after "next" is answered up to it: the first was let go.
    acks.wait(lambda v: next_count - 1 in v)
    assert "not reported stored within 0.5 s" in caplog.text
    report(loop, session, token)
    still_carries(loop, session, peer, "after the hold limit")
