"""Presence end to end: pjsua2 phones <-> purplegw daemon <-> Prosody <-> an XMPP user.

pjsip's own stack publishes (PUBLISH, PIDF+RPID), subscribes (SUBSCRIBE) and
reports the NOTIFYs it accepts as buddy states; the XMPP user is an
independent slixmpp client on a real Prosody.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.deployment import deployment, phone
from tests.kit.pjsua_agent import PjsuaAgent

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def setup(prosody: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield from deployment(prosody, tmp_path, "p")


@pytest.fixture
def short_setup(prosody: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Subscriptions last 10 s at most, so that expiry plays out in the test."""
    yield from deployment(
        prosody, tmp_path, "p", "[presence]\nsubscribe_min_expires = 1\nsubscribe_max_expires = 10"
    )


def buddy(agent: PjsuaAgent, uri: str, **want: str) -> dict[str, Any]:
    return agent.wait_for(
        lambda e: (
            e["event"] == "buddy"
            and e["uri"] == uri
            and all(e.get(k) == v for k, v in want.items())
        ),
        timeout=30,
    )


def test_publish_reaches_xmpp_and_contact_request_is_answered_from_the_phone(
    setup: dict[str, Any],
) -> None:
    gateway, account, bob, peer = (setup[k] for k in ("gateway", "account", "bob", "peer"))
    with phone(gateway, publish=True) as agent:
        # bob asks to see alice's presence: the phone gets a MESSAGE and answers it.
        peer.subscribe(account.jid)
        ask = agent.wait_for(
            lambda e: e["event"] == "im" and "asks to see your presence" in e["body"], timeout=30
        )
        assert bob.jid in ask["body"], ask
        assert f"sip:{bob.jid};proto=xmpp" in ask["from"]
        agent.message(ask["from"].strip("<>"), "Allow")
        status = agent.wait_for(lambda e: e["event"] == "im_status" and e["body"] == "Allow")
        assert status["code"] == 200, (status, gateway.log_text())
        peer.wait_for(lambda e: e.kind == "subscribed" and e.bare == account.jid, timeout=30)

        agent.publish(online=True, activity="away", note="in a meeting")
        got = peer.wait_for(
            lambda e: e.kind == "presence" and e.bare == account.jid and e.show == "away",
            timeout=30,
        )
        assert got.status == "in a meeting", got

        # basic=closed logs the XMPP account out, open logs it in again.
        agent.publish(online=False)
        peer.wait_for(
            lambda e: (
                e.kind == "presence"
                and e.bare == account.jid
                and e.ptype == "unavailable"
                and e.at > got.at
            ),
            timeout=30,
        )
        gateway.wait_accounts("logged_out", timeout=30)
        agent.publish(online=True, activity="busy", note="on a call")
        back = peer.wait_for(
            lambda e: (
                e.kind == "presence" and e.bare == account.jid and e.show == "dnd" and e.at > got.at
            ),
            timeout=60,
        )
        assert back.status == "on a call"
        gateway.wait_accounts("connected", timeout=30)

        # Publications are kept in the database: after a restart the account
        # is back with the phone's presence, and the phone's next PUBLISH
        # refreshes its entity-tag (no 412, no need to publish afresh).
        assert gateway.stop() == 0
        gateway.start()
        gateway.wait_accounts("connected")
        kept = peer.wait_for(
            lambda e: (
                e.kind == "presence"
                and e.bare == account.jid
                and e.show == "dnd"
                and e.at > back.at
                and e.status == "on a call"
            ),
            timeout=60,
        )
        assert kept.status == "on a call"
        agent.publish(online=True, activity="away", note="after a restart")
        again = peer.wait_for(
            lambda e: (
                e.kind == "presence" and e.bare == account.jid and e.status == "after a restart"
            ),
            timeout=60,
        )
        assert again.show == "away", (again, gateway.log_text())
        assert "PUBLISH from alice@sip.test: 412" not in gateway.log.read_text()
    # The "Allow" answer was consumed by the gateway, never sent to bob.
    assert "Allow" not in peer.received_bodies(account.jid)


def test_subscribe_pending_then_active_notifies_every_device_and_survives_restart(
    setup: dict[str, Any],
) -> None:
    gateway, account, bob, peer = (setup[k] for k in ("gateway", "account", "bob", "peer"))
    uri = f"sip:{bob.jid}"
    first = phone(gateway)
    second: PjsuaAgent | None = None
    try:
        first.subscribe(uri)
        buddy(first, uri, sub_state="PENDING")
        peer.wait_for(lambda e: e.kind == "subscribe" and e.bare == account.jid, timeout=30)
        peer.answer_subscription(account.jid, allow=True)
        buddy(first, uri, sub_state="ACTIVE", status="online")

        peer.send_presence(show="dnd", status="deep in code")
        state = buddy(first, uri, activity="busy", note="deep in code")
        assert state["status"] == "online"

        # A second device of the same user: active at once, with the current state.
        second = phone(gateway)
        second.subscribe(uri)
        buddy(second, uri, sub_state="ACTIVE", note="deep in code")
        peer.send_presence(show="away", status="lunch")
        for agent in (first, second):
            buddy(agent, uri, activity="away", note="lunch")

        # Unsubscribe one device: the other keeps getting changes.
        second.unsubscribe(uri)
        buddy(second, uri, sub_state="TERMINATED")
        seen_by_second = len(second.matching(lambda e: e["event"] == "buddy"))

        # The subscription survives a gateway restart (kept in the store).
        assert gateway.stop() == 0
        gateway.start()
        gateway.wait_accounts("connected")
        peer.send_presence(show="xa", status="gone fishing")
        buddy(first, uri, note="gone fishing")
        assert len(second.matching(lambda e: e["event"] == "buddy")) == seen_by_second
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_refused_subscription_is_terminated_rejected(setup: dict[str, Any]) -> None:
    gateway, account, bob, peer = (setup[k] for k in ("gateway", "account", "bob", "peer"))
    uri = f"sip:{bob.jid}"
    with phone(gateway) as agent:
        agent.subscribe(uri)
        buddy(agent, uri, sub_state="PENDING")
        peer.wait_for(lambda e: e.kind == "subscribe" and e.bare == account.jid, timeout=30)
        peer.answer_subscription(account.jid, allow=False)
        state = buddy(agent, uri, sub_state="TERMINATED")
        assert state["sub_term_reason"] == "rejected", state


def test_dead_phone_delays_nobody_and_its_subscription_expires(
    short_setup: dict[str, Any],
) -> None:
    gateway, account, bob, peer = (short_setup[k] for k in ("gateway", "account", "bob", "peer"))
    uri = f"sip:{bob.jid}"
    alive, dead = phone(gateway), phone(gateway)
    try:
        alive.subscribe(uri)
        buddy(alive, uri, sub_state="PENDING")
        peer.wait_for(lambda e: e.kind == "subscribe" and e.bare == account.jid, timeout=30)
        peer.answer_subscription(account.jid, allow=True)
        buddy(alive, uri, sub_state="ACTIVE", status="online")
        dead.subscribe(uri)
        buddy(dead, uri, sub_state="ACTIVE", status="online")
        dead.process.kill()  # gone without unsubscribing: its NOTIFYs go nowhere
        dead.process.wait()

        peer.send_presence(show="away", status="first change")
        buddy(alive, uri, note="first change")
        # 10 s lifetime: the dead phone's subscription times out, the live one
        # is refreshed by pjsip and keeps working.
        deadline = time.monotonic() + 40
        while "ended: timeout" not in gateway.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "ended: timeout" in gateway.log.read_text(), gateway.log_text()
        peer.send_presence(show="dnd", status="second change")
        state = buddy(alive, uri, note="second change")
        assert state["sub_state"] == "ACTIVE"
    finally:
        alive.stop()
        dead.stop()


KAMAILIO_PRESENCE = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
listen=udp:LISTEN
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"
loadmodule "db_text.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"
modparam("presence", "db_url", "text://DBDIR")
modparam("presence", "server_address", "sip:127.0.0.1:PORT")
modparam("presence_xml", "db_url", "text://DBDIR")
modparam("presence_xml", "force_active", 1)

request_route {
    if (is_method("OPTIONS")) { sl_send_reply("200", "OK"); exit; }
    if (is_method("REGISTER")) { save("location"); exit; }
    if (is_method("PUBLISH|SUBSCRIBE")) {
        if (!t_newtran()) { sl_reply_error(); exit; }
        if (is_method("PUBLISH")) { handle_publish(); } else { handle_subscribe(); }
        t_release();
        exit;
    }
    sl_send_reply("404", "Not here");
}
"""


@pytest.fixture
def kamailio_presence(tmp_path: Path) -> Iterator[Any]:
    """Kamailio's presence server (presence + presence_xml on db_text)."""
    import shutil

    from tests.kit.kamailio import Kamailio, require_kamailio
    from tests.kit.ports import free_port

    require_kamailio()
    schema = Path("/usr/share/kamailio/dbtext/kamailio")
    if not schema.is_dir():
        pytest.skip("Kamailio db_text schema files are not installed")
    db_dir = tmp_path / "kamailio-db"
    shutil.copytree(schema, db_dir)
    port = free_port("udp")
    config = KAMAILIO_PRESENCE.replace("DBDIR", str(db_dir)).replace("PORT", str(port))
    server = Kamailio(config, port=port).start()
    try:
        yield server
    finally:
        server.stop()


def test_upstream_mode_publishes_contacts_into_kamailio_presence(
    prosody: Any, tmp_path: Path, kamailio_presence: Any
) -> None:
    upstream = f'[presence]\nupstream = "sip:127.0.0.1:{kamailio_presence.port}"'
    setup = deployment(prosody, tmp_path, "p", upstream)
    state = next(setup)
    gateway, account, bob, peer = (state[k] for k in ("gateway", "account", "bob", "peer"))
    uri = f"sip:{bob.jid}"
    through_gateway = phone(gateway)
    through_kamailio = PjsuaAgent.start()
    try:
        # The contact gets on the roster through the gateway, as usual...
        through_gateway.subscribe(uri)
        peer.wait_for(lambda e: e.kind == "subscribe" and e.bare == account.jid, timeout=30)
        peer.answer_subscription(account.jid, allow=True)
        buddy(through_gateway, uri, sub_state="ACTIVE", status="online")
        # ...and a phone subscribed at Kamailio sees what the gateway published there.
        kamailio = f"sip:127.0.0.1:{kamailio_presence.port}"
        through_kamailio.account("sip:watcher@sip.test", registrar=kamailio, proxy=f"{kamailio};lr")
        # pjsua drops a subscription asked for before its account is ready.
        through_kamailio.wait_for(lambda e: e["event"] == "reg" and e["code"] == 200)
        through_kamailio.subscribe(uri)
        buddy(through_kamailio, uri, sub_state="ACTIVE", status="online")
        peer.send_presence(show="dnd", status="published upstream")
        got = buddy(through_kamailio, uri, note="published upstream")
        assert got["activity"] == "busy", got
    finally:
        through_gateway.stop()
        through_kamailio.stop()
        next(setup, None)
