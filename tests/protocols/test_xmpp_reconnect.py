"""Connection loss: a Prosody restart mid-conversation loses no message.

The test plays the account actor: it sends through the session, and when the
session reports TRANSIENT_DISCONNECT it takes ``unacked_messages()``, logs a
new session in (with a short backoff) and resends them, plus every message
whose ``send_message`` raised ``DeliveryError`` meanwhile.  The independent
peer must end up with every message id; duplicates (same id) are allowed,
silence is not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from purplegw.protocols.base import ConnectionState, DeliveryError, TransientError
from purplegw.testing.prosody import Prosody, prosody_binary
from purplegw.testing.xmpp_peer import XmppPeer

from .xmpp_harness import LoopThread, make_session

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def own_prosody() -> Iterator[Prosody]:
    """A server of its own: this module restarts it."""
    if prosody_binary() is None:
        from purplegw.testing.binaries import missing_peer

        missing_peer("Prosody", "prosody")
    with Prosody() as server:
        yield server


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def login_with_retry(loop, prosody, user, cfg, deadline):
    while True:
        session, events = make_session(loop, user.jid, user.password, cfg)
        try:
            loop.run(session.login())
            return session, events
        except TransientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_prosody_restart_mid_conversation_loses_no_message(loop, own_prosody):
    prosody = own_prosody
    alice, bob_user = prosody.create_user("ralice"), prosody.create_user("rbob")
    cfg = {
        "server": prosody.address,
        "ca_file": prosody.ca_file,
        "keepalive": 0,
        "connect_timeout": 5,
        "login_timeout": 10,
    }
    total, restart_at = 120, 40
    sent_ids = [f"r-{i}" for i in range(total)]
    resent = 0
    surfaced_by_ledger = 0
    sessions = 1
    with XmppPeer(
        bob_user.jid, bob_user.password, prosody.host, prosody.port, ca_file=prosody.ca_file
    ) as bob:
        session, events = login_with_retry(loop, prosody, alice, cfg, time.monotonic() + 30)
        restarter = threading.Thread(target=prosody.restart)
        pending: list[tuple[str, str]] = []

        def dead(evts) -> bool:
            return any(a[0] is ConnectionState.TRANSIENT_DISCONNECT for a in evts.of("state"))

        for i, mid in enumerate(sent_ids):
            if i == restart_at:
                restarter.start()
            try:
                loop.run(session.send_message(bob_user.jid, f"message {i}", mid))
            except DeliveryError:
                pending.append((mid, f"message {i}"))
            if dead(events):
                # What the account actor does: keep the unacked ones, log in again, resend.
                ledger = [(m.message_id, m.text) for m in session.unacked_messages()]
                surfaced_by_ledger += len(ledger)
                pending = ledger + [p for p in pending if p[0] not in {m for m, _ in ledger}]
                restarter.join(30)
                session, events = login_with_retry(loop, prosody, alice, cfg, time.monotonic() + 30)
                sessions += 1
                for pmid, text in pending:
                    loop.run(session.send_message(bob_user.jid, text, pmid))
                    resent += 1
                pending = []
            time.sleep(0.005)
        restarter.join(30)
        if pending:  # never reported dead but refused sends: resend once more
            for pmid, text in pending:
                loop.run(session.send_message(bob_user.jid, text, pmid))
                resent += 1

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = {e.msg_id for e in bob.snapshot() if e.kind == "message" and e.bare == alice.jid}
            if got >= set(sent_ids):
                break
            time.sleep(0.1)
        received = [e.msg_id for e in bob.snapshot() if e.kind == "message" and e.bare == alice.jid]
        missing = sorted(set(sent_ids) - set(received), key=lambda m: int(m[2:]))
        loop.run(session.logout())
    print(
        f"sent {total}, received {len(set(received))} distinct / {len(received)} total, "
        f"resent {resent} ({surfaced_by_ledger} from the unacked ledger), sessions {sessions}"
    )
    assert sessions >= 2, "the restart was not noticed"
    assert not missing, f"lost {len(missing)} message(s): {missing}"


def test_dropped_connection_is_resumed_without_losing_unacked_messages(loop, own_prosody):
    prosody = own_prosody
    alice, bob_user = prosody.create_user("salice"), prosody.create_user("sbob")
    cfg = {"server": prosody.address, "ca_file": prosody.ca_file, "keepalive": 0}
    with XmppPeer(
        bob_user.jid, bob_user.password, prosody.host, prosody.port, ca_file=prosody.ca_file
    ) as bob:
        session, events = login_with_retry(loop, prosody, alice, cfg, time.monotonic() + 30)

        async def send_then_cut() -> None:
            # Written to the socket buffer, then the TCP connection dies before
            # any ack can come back: only resumption can get it delivered.
            await session.send_message(bob_user.jid, "before the cut", "cut-1")
            session.client.transport.abort()

        loop.run(send_then_cut())
        resumed = events.wait_for(
            "state", lambda s, r: s is ConnectionState.CONNECTED and "resumed" in r
        )
        assert resumed
        loop.run(session.send_message(bob_user.jid, "after the cut", "cut-2"))
        bob.wait_for(lambda e: e.kind == "message" and e.msg_id == "cut-2")
        bob.wait_for(lambda e: e.kind == "message" and e.msg_id == "cut-1")
        states = [a[0] for a in events.of("state")]
        assert ConnectionState.TRANSIENT_DISCONNECT not in states
        deadline = time.monotonic() + 10
        while session.unacked_messages() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert session.unacked_messages() == []
        loop.run(session.logout())


def test_frozen_server_is_detected_by_keepalive(loop, own_prosody):
    """No TCP close at all (server process stopped): the ping keepalive notices."""
    import os
    import signal

    prosody = own_prosody
    alice = prosody.create_user("kalice")
    cfg = {
        "server": prosody.address,
        "ca_file": prosody.ca_file,
        "keepalive": 1,
        "connect_timeout": 1,
        "login_timeout": 1,
    }
    session, events = login_with_retry(loop, prosody, alice, cfg, time.monotonic() + 30)
    assert prosody.proc is not None
    os.kill(prosody.proc.pid, signal.SIGSTOP)
    try:
        state, reason = events.wait_for(
            "state", lambda s, r: s is ConnectionState.TRANSIENT_DISCONNECT, timeout=30
        )
    finally:
        os.kill(prosody.proc.pid, signal.SIGCONT)
    assert "resum" in reason
    with pytest.raises(DeliveryError):
        loop.run(session.send_message("nobody@localhost", "x", "k-1"))
    loop.run(session.logout())
    assert events.of("state")[-1][0] is ConnectionState.LOGGED_OUT
