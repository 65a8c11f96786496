"""The buddy list (RFC 4662) end to end: sipp subscribes to sip:alice-buddies@sip.test.

alice's XMPP account on Prosody has bob and carol on its roster (Prosody's
own roster files); both are online with independent XMPP clients.  sipp
(not our code) is alice's phone, from a trusted address: it must get a
multipart/related NOTIFY whose RLMI lists both contacts with a PIDF part,
then a partial NOTIFY when bob changes, then the end of the subscription.
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING

import pytest

from tests.e2e.test_presence_limits import ANSWER_NOTIFY, expect, request, scenario, sipp
from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.prosody import _encode
from tests.kit.sipp import run_sipp, sipp_binary
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from pathlib import Path

    from tests.kit.prosody import Prosody, XmppUser

pytestmark = pytest.mark.timeout(240)

LIST = "sip:alice-buddies@sip.test"
SUPPORTED = "      Supported: eventlist\n"


def write_roster(prosody: Prosody, owner: XmppUser, items: dict[str, str]) -> None:
    """Prosody's roster file of ``owner``: {jid: subscription}."""
    assert prosody.run_dir is not None
    folder = prosody.run_dir / "data" / _encode(prosody.domain) / "roster"
    folder.mkdir(parents=True, exist_ok=True)
    entries = "".join(
        f'\t["{jid}"] = {{\n\t\t["groups"] = {{}};\n\t\t["subscription"] = "{sub}";\n\t}};\n'
        for jid, sub in items.items()
    )
    body = f'return {{\n\t[false] = {{\n\t\t["version"] = 1;\n\t}};\n{entries}}};\n'
    (folder / f"{_encode(owner.localpart)}.dat").write_text(body)


def wait_log(gateway: GatewayProcess, pattern: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, gateway.log.read_text(errors="replace")):
            return
        time.sleep(0.2)
    pytest.fail(f"{pattern!r} never logged:\n{gateway.log_text()}")


def list_request(**kwargs: object) -> str:
    return request("SUBSCRIBE", LIST, **kwargs).replace(
        "      Event: presence\n",
        "      Event: presence\n"
        + SUPPORTED
        + "      Accept: application/rlmi+xml, multipart/related, application/pidf+xml\n",
    )


def check_notify(var: int, *patterns: str) -> str:
    checks = "".join(
        f'      <ereg regexp="{p}" search_in="msg" check_it="true" assign_to="{var + i}"/>\n'
        for i, p in enumerate(patterns)
    )
    answer = ANSWER_NOTIFY.format(state="active", var=var + len(patterns))
    return answer.replace("    <action>\n", "    <action>\n" + checks)


def test_the_roster_as_one_resource_list(prosody: Prosody, tmp_path: Path) -> None:
    if sipp_binary() is None:
        missing_peer("sipp", "sip-tester")
    tag = tmp_path.name[-8:].replace("_", "").lower()
    alice = prosody.create_user(f"blalice{tag}")
    bob = prosody.create_user(f"blbob{tag}")
    carol = prosody.create_user(f"blcarol{tag}")
    write_roster(prosody, alice, {bob.jid: "to", carol.jid: "to"})
    write_roster(prosody, bob, {alice.jid: "from"})
    write_roster(prosody, carol, {alice.jid: "from"})
    gateway = GatewayProcess(
        tmp_path, sip={"trusted": ["127.0.0.1/32"]}, extra_config=prosody.gateway_section()
    )
    gateway.cli("db", "init")
    gateway.cli(
        "accounts",
        "add",
        "alice@sip.test",
        alice.jid,
        "xmpp",
        "--password-stdin",
        stdin=alice.password + "\n",
    )
    peers = [
        XmppPeer(u.jid, u.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
        for u in (bob, carol)
    ]
    try:
        for peer, (show, text) in zip(peers, (("away", "at lunch"), ("dnd", "busy")), strict=True):
            peer.start()
            peer.send_presence(show=show, status=text)
        gateway.start()
        gateway.wait_accounts("connected")
        for user in (bob, carol):
            wait_log(gateway, rf"sees {re.escape(user.jid)} \(xmpp\): (away|dnd)")

        refused = scenario(
            tmp_path,
            "no_eventlist",
            request("SUBSCRIBE", LIST),
            expect(421, text="Require: eventlist"),
        )
        sipp(gateway, refused, 1)
        others = scenario(
            tmp_path,
            "not_mine",
            list_request().replace("<sip:alice@sip.test>;tag", "<sip:bob@sip.test>;tag"),
            expect(403),
        )
        sipp(gateway, others, 1)

        bob_uri = re.escape(f"sip:{bob.jid};proto=xmpp")
        carol_uri = re.escape(f"sip:{carol.jid};proto=xmpp")
        flow = scenario(
            tmp_path,
            "buddylist",
            list_request(),
            expect(200, text="Require: eventlist"),
            check_notify(
                10,
                "Content-Type: multipart/related;type=.application/rlmi\\+xml.",
                "Require: eventlist",
                "fullState=.true.",
                f"uri=.{bob_uri}.",
                f"uri=.{carol_uri}.",
                "Content-Type: application/pidf\\+xml",
                "at lunch",
                "busy",
            ),
            check_notify(30, "fullState=.false.", f"uri=.{bob_uri}.", "gone fishing"),
            list_request(expires=0, cseq=2, in_dialog=True),
            expect(200),
            ANSWER_NOTIFY.format(state="terminated", var="40"),
        )
        outcome: list[object] = []
        runner = threading.Thread(
            target=lambda: outcome.append(
                run_sipp(flow, "127.0.0.1", gateway.port, calls=1, timeout=60)
            )
        )
        runner.start()
        wait_log(gateway, "subscribes to its buddy list")
        time.sleep(1.0)  # the first NOTIFY is answered before bob changes
        peers[0].send_presence(show="xa", status="gone fishing")
        runner.join(90)
        (result,) = outcome
        assert result.returncode == 0, result.describe() + gateway.log_text()  # type: ignore[attr-defined]
    finally:
        for peer in peers:
            peer.stop()
        assert gateway.stop() == 0, gateway.log_text()
