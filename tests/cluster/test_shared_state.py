"""Bindings and publications survive a restart of a single node, on SQLite and on MariaDB.

A pjsua2 phone registers (digest) and publishes "busy"; the daemon is
stopped and started again; a message from an XMPP contact then reaches the
phone without it registering again, and the account comes back online with
the phone's published presence without a new PUBLISH.  The SQLite run stops
the daemon cleanly (SIGTERM); the MariaDB run kills it (SIGKILL) once the
rows are in the database, so nothing but the database carries the state.
"""

from __future__ import annotations

import time
import tomllib
from typing import TYPE_CHECKING, Any

import pytest
import tomli_w

from purplegw.store import Database
from tests.e2e.deployment import SIP_PASSWORD
from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def prosody() -> Iterator[Any]:
    from tests.kit.prosody import Prosody, prosody_binary

    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    with Prosody() as server:
        yield server


def stop(gateway: GatewayProcess, db_url: str) -> None:
    """SIGTERM on SQLite; on MariaDB SIGKILL, once the rows are in the database."""
    if not db_url.startswith("mysql"):
        assert gateway.stop() == 0, gateway.log_text()
        return
    rows = Database.create(db_url)
    deadline = time.monotonic() + 10
    try:
        while not all(
            rows.fetchall(f"SELECT 1 FROM {table}")  # noqa: S608 - constant names
            for table in ("purplegw_bindings", "purplegw_publications")
        ):
            assert time.monotonic() < deadline, "rows never written"
            time.sleep(0.05)
    finally:
        rows.close()
    assert gateway.process is not None
    gateway.process.kill()
    gateway.process.wait()
    gateway.process = None


def test_bindings_and_publications_survive_a_restart(
    prosody: Any, db_url: str, tmp_path: Path
) -> None:
    tag = tmp_path.name[-8:].replace("_", "").lower()
    account = prosody.create_user(f"ralice{tag}")
    bob = prosody.create_user(f"rbob{tag}")
    gateway = GatewayProcess(tmp_path, extra_config=prosody.gateway_section())
    config = tomllib.loads(gateway.config.read_text())
    config["store"]["db_url"] = db_url
    gateway.config.write_text(tomli_w.dumps(config))
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
    gateway.start()
    peer = XmppPeer(bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    agent = PjsuaAgent.start()
    try:
        gateway.wait_accounts("connected")
        peer.start()
        peer.subscribe(account.jid)  # bob sees alice's presence (policy: ask -> the phone)
        agent.account(
            "sip:alice@sip.test",
            registrar=gateway.uri,
            username="alice",
            password=SIP_PASSWORD,
            proxy=f"{gateway.uri};lr",
            publish=True,
        )
        assert agent.wait_for(lambda e: e["event"] == "reg")["code"] == 200
        ask = agent.wait_for(
            lambda e: e["event"] == "im" and "asks to see your presence" in e["body"], timeout=30
        )
        agent.message(ask["from"].strip("<>"), "Allow")
        peer.wait_for(lambda e: e.kind == "subscribed" and e.bare == account.jid, timeout=30)
        agent.publish(online=True, activity="busy", note="kept across restarts")
        before = peer.wait_for(
            lambda e: e.kind == "presence" and e.bare == account.jid and e.show == "dnd",
            timeout=30,
        )
        registers = gateway.log.read_text().count("alice@sip.test registered")
        assert registers >= 1

        stop(gateway, db_url)
        gateway.start()
        gateway.wait_accounts("connected")
        log = gateway.log.read_text()
        assert "Restored 1 registered contact(s)" in log, gateway.log_text()
        assert "Restored 1 publication(s) of 1 user(s)" in log, gateway.log_text()

        # The account is back with the published presence: no PUBLISH since the restart.
        again = peer.wait_for(
            lambda e: (
                e.kind == "presence"
                and e.bare == account.jid
                and e.show == "dnd"
                and e.at > before.at
                and e.status == "kept across restarts"
            ),
            timeout=60,
        )
        assert again.status == "kept across restarts"

        # A message from the contact reaches the phone through the restored binding.
        peer.send_message(account.jid, "after the restart ✓")
        im = agent.wait_for(
            lambda e: e["event"] == "im" and e["body"] == "after the restart ✓", timeout=30
        )
        assert f"sip:{bob.jid};proto=xmpp" in im["from"]
        # ...and the phone never registered again to get it.
        assert gateway.log.read_text().count("alice@sip.test registered") == registers
        assert "PUBLISH from alice@sip.test" not in gateway.log.read_text()[len(log) :]
    finally:
        agent.stop()
        peer.stop()
        assert gateway.stop() == 0, gateway.log_text()
