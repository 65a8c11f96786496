"""The gateway dies after reading an XMPP message and before storing it.

A writer holds the gateway's SQLite database (as a stalled disk or a slow
commit would), bob's message reaches the gateway's stream and the gateway's
outbox write waits; the gateway is killed with SIGKILL before the row could
commit.  The session acknowledges a received message to the server
(XEP-0198 ``<a/>``) only once the gateway reports its row stored (messaging
Rule 3), so the server still holds it.  Restarted at once, the gateway's
new stream (same resource) replaces the dead one and Prosody hands the
message to it; restarted after the dead stream's session ended, Prosody
kept the message offline for the account.  Either way the phone gets it.
Acknowledged on reading, as before, it was lost.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

import pytest

from tests.faults.traffic import (
    CountingPeer,
    Ids,
    gateway_for,
    kill_gateway,
    phone_cursor,
    registered_phone,
    wait_delivered,
    wait_until,
)
from tests.kit.binaries import missing_peer
from tests.kit.prosody import Prosody, prosody_binary
from tests.kit.tally import Tally

if TYPE_CHECKING:
    from pathlib import Path

SHORT_HIBERNATION = 2  # seconds Prosody keeps a dropped stream for resumption
# Long enough for a late <a/> (10 ms after the server's <r/>) to have gone out.
ACK_TIME = 1.5


def messages_in(gateway: object) -> int:
    return sum(a.get("messages_in", 0) for a in gateway.status())  # type: ignore[attr-defined]


def session_ended(prosody: Prosody) -> bool:
    """The dead stream's session is over: hibernated too long, or closed by a dying worker."""
    log = prosody.log_text()
    return "hibernating too long" in log or "Destroying session with" in log


# workers = 2: the ack tokens cross from a worker to the main process and back.
@pytest.mark.parametrize(
    ("workers", "restart"),
    [(0, "at once"), (0, "after the session ended"), (2, "after the session ended")],
)
def test_a_message_read_but_not_stored_survives_a_gateway_crash(
    tmp_path: Path, workers: int, restart: str
) -> None:
    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    at_once = restart == "at once"
    hibernation = 120 if at_once else SHORT_HIBERNATION
    with Prosody(hibernation=hibernation, log_level="debug") as prosody:
        account, bob = prosody.create_user("alice"), prosody.create_user("bob")
        tally = Tally(
            f"read, not stored, SIGKILL, restart {restart}, workers = {workers}: XMPP -> SIP"
        )
        gateway = gateway_for(
            prosody, tmp_path, {"alice": account}, actors={"workers": workers}
        ).start()
        peer = CountingPeer(
            bob.jid, bob.password, prosody.host, prosody.port, ca_file=prosody.ca_file, tally=tally
        )
        agent = None
        lock = None
        try:
            gateway.wait_accounts("connected")
            peer.start()
            agent = registered_phone(gateway, "alice")
            cursors = [phone_cursor(agent, None, tally)]
            ids = Ids("unstored", "xmpp")

            first = ids.next()  # one through a healthy gateway first
            wait_until(lambda: peer.send_counted(account.jid, first), 30, "bob sends")
            wait_delivered([tally], cursors, timeout=30, settle=peer.request_ack)
            assert first in tally.delivered, tally.line()

            # The outbox cannot commit: a writer holds the database.
            lock = sqlite3.connect(tmp_path / "data" / "purplegw.db", isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            before = messages_in(gateway)
            second = ids.next()
            assert peer.send_counted(account.jid, second)
            wait_until(lambda: messages_in(gateway) > before, 30, "the gateway read the message")
            time.sleep(ACK_TIME)
            assert second not in tally.delivered, tally.line()

            kill_gateway(gateway)
            lock.rollback()
            lock.close()
            lock = None
            if not at_once:
                # The dead stream's session ends; what it was not told of stays
                # offline.  (Workers see the main process gone and close their streams.)
                wait_until(
                    lambda: session_ended(prosody),
                    SHORT_HIBERNATION + 30,
                    "Prosody ended the dead stream's session",
                )
            gateway.start()
            gateway.wait_accounts("connected")
            wait_delivered([tally], cursors, timeout=60, settle=peer.request_ack)
            assert second in tally.delivered, tally.line()
            tally.check()
            # The first one was reported stored to its session (across the
            # worker's pipe too) and acknowledged: the server kept only the second.
            assert tally.duplicated == 0, tally.line()
        finally:
            if lock is not None:
                lock.close()
            if agent is not None:
                agent.stop()
            peer.stop()
            code = gateway.stop()
            assert code == 0, gateway.log_text()
