"""MariaDB stopped for 30 s while the gateway runs.

The issue's promise: accounts stay online, new work is queued (202) or
refused with a 5xx, nothing accepted is lost, and the gateway recovers
without a restart once MariaDB is back (same data directory, same port).
Messages flow both ways during the whole outage: a pjsua2 phone sends
SIP MESSAGEs to an XMPP user on Prosody, who writes back.
"""

from __future__ import annotations

import time
import tomllib
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import tomli_w

from tests.e2e.deployment import SIP_PASSWORD, phone
from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.mariadb import MariaDB, mariadb_binaries
from tests.kit.tally import Tally, report
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

OUTAGE = 30.0  # the number
SEND_EVERY = 1.0


@pytest.fixture
def outage_mariadb() -> Iterator[MariaDB]:
    """A MariaDB of this test alone: it is stopped and started again."""
    if mariadb_binaries() is None:
        missing_peer("MariaDB server", "mariadb-server")
    with MariaDB() as server:
        yield server


def _use_database(gateway: GatewayProcess, db_url: str) -> None:
    config = tomllib.loads(gateway.config.read_text())
    config["store"]["db_url"] = db_url
    gateway.config.write_text(tomli_w.dumps(config))


def _deliveries(tally: Tally, bodies: list[str]) -> None:
    sent = set(tally.sent)
    for body in bodies:
        if body in sent:
            tally.deliver(body)


def test_mariadb_stopped_30s_while_messages_flow_both_ways(  # noqa: C901, PLR0915 - one scenario
    prosody: Any,
    outage_mariadb: MariaDB,
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:8]
    account = prosody.create_user(f"dbalice{tag}")
    bob = prosody.create_user(f"dbbob{tag}")
    gateway = GatewayProcess(tmp_path, extra_config=prosody.gateway_section())
    _use_database(gateway, outage_mariadb.create_database("purplegw_outage"))
    gateway.cli("db", "init")
    gateway.cli("users", "add", "alice@sip.test", "--password-stdin", stdin=SIP_PASSWORD + "\n")
    gateway.cli(
        "accounts",
        "add",
        "alice@sip.test",
        account.jid,
        "xmpp",
        "--password-stdin",
        stdin=account.password + "\n",
    )
    to_xmpp = Tally("mariadb outage 30s: SIP -> XMPP")
    to_sip = Tally("mariadb outage 30s: XMPP -> SIP")
    gateway.start()
    peer = XmppPeer(bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    try:
        gateway.wait_accounts("connected")
        peer.start()
        with phone(gateway) as agent:
            statuses: dict[str, int] = {}

            def sip_send(label: str) -> None:
                body = f"sip->xmpp {label} {uuid.uuid4().hex}"
                to_xmpp.send(body)
                agent.message(f"sip:{bob.jid}", body)

            def xmpp_send(label: str) -> None:
                body = f"xmpp->sip {label} {uuid.uuid4().hex}"
                to_sip.send(body)
                peer.send_message(account.jid, body)
                to_sip.accept(body)  # Prosody took it; from here on it is the gateway's

            def harvest_statuses() -> None:
                for event in agent.matching(lambda e: e["event"] == "im_status"):
                    statuses[event["body"]] = event["code"]

            # Both ways work before the outage.
            sip_send("before")
            xmpp_send("before")
            first = agent.wait_for(lambda e: e["event"] == "im_status")
            assert first["code"] == 202, (first, gateway.log_text())
            peer.wait_for(lambda e: e.kind == "message" and e.body == to_xmpp.sent[0])
            agent.wait_for(lambda e: e["event"] == "im" and e["body"] == to_sip.sent[0])
            online = gateway.status()[0]
            assert online["state"] == "connected", online

            outage_mariadb.stop()
            started = time.monotonic()
            n = 0
            states = []
            while time.monotonic() - started < OUTAGE:
                n += 1
                sip_send(f"outage {n}")
                xmpp_send(f"outage {n}")
                states.append(gateway.status()[0])
                time.sleep(max(0.0, started + n * SEND_EVERY - time.monotonic()))
            outage_mariadb.start()
            recovered_at = time.monotonic()

            # Accounts stayed online: same connection all along, no reconnect.
            for state in states:
                assert state["state"] == "connected", state
                assert (state["since"], state["reconnects"]) == (
                    online["since"],
                    online["reconnects"],
                ), state

            # Every SIP MESSAGE got a final answer from the gateway: 202 or 5xx.
            deadline = time.monotonic() + 60
            while len(statuses) < len(to_xmpp.sent) and time.monotonic() < deadline:
                harvest_statuses()
                time.sleep(0.2)
            harvest_statuses()
            for body in to_xmpp.sent:
                code = statuses.get(body)
                assert code is not None, f"no answer to {body!r}\n{gateway.log_text()}"
                if code == 202:
                    to_xmpp.accept(body)
                else:
                    assert 500 <= code < 600, (body, code)
                    to_xmpp.refuse(body)

            # Everything accepted arrives, without restarting the gateway.
            def arrived() -> tuple[set[str], set[str]]:
                at_bob = {
                    e.body for e in peer.snapshot() if e.kind == "message" and e.bare == account.jid
                }
                at_phone = {e["body"] for e in agent.matching(lambda e: e["event"] == "im")}
                return at_bob, at_phone

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                at_bob, at_phone = arrived()
                if to_xmpp.accepted <= at_bob and to_sip.accepted <= at_phone:
                    break
                time.sleep(0.2)
            drained_after = time.monotonic() - recovered_at
            _deliveries(
                to_xmpp,
                [e.body for e in peer.snapshot() if e.kind == "message" and e.bare == account.jid],
            )
            _deliveries(to_sip, [e["body"] for e in agent.matching(lambda e: e["event"] == "im")])
            assert gateway.process is not None
            assert gateway.process.poll() is None, "the gateway exited"
            after = gateway.status()[0]
            assert after["state"] == "connected", after
            assert after["reconnects"] == online["reconnects"], after
            report(
                f"mariadb outage {OUTAGE:g}s: {n} messages each way during it; everything "
                f"accepted delivered {drained_after:.1f}s after MariaDB was back"
            )
    finally:
        peer.stop()
        code = gateway.stop()
        assert code == 0, gateway.log_text()
    to_xmpp.check()
    to_sip.check()
