"""Issue 19: the roster as one SIP buddy list, and watcher information, end to end.

alice@sip.test has an XMPP account on Prosody, whose roster (Prosody's own
roster file) names bob and carol, and an IRC account on ngIRCd, which
watches one nick.  sipp (not our code) is alice's phone, from a trusted
address.  It subscribes to ``sip:alice-buddies@sip.test`` and must see one
multipart/related NOTIFY whose RLMI lists the three contacts of both
accounts with the roster's names, then a partial NOTIFY naming only dave,
whom another XMPP client of alice's account adds to the roster (a roster
push through Prosody), then another naming only the IRC contact, gone with
the IRC account when its row is removed and the table reloaded.  Then
``Event: presence.winfo``: a real XMPP contact's pending request is listed,
another's arrives as a partial document, and the phone's ``allow`` MESSAGE
shows as approved.
"""

from __future__ import annotations

import json
import re
import threading
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import pytest

from tests.e2e.test_buddylist import list_request, wait_log
from tests.e2e.test_presence_limits import ANSWER_NOTIFY, expect, request, scenario, sipp
from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.ngircd import Ngircd, ngircd_binary
from tests.kit.prosody import _encode
from tests.kit.sipp import run_sipp, sipp_binary
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.kit.prosody import Prosody, XmppUser

pytestmark = pytest.mark.timeout(240)

USER = "alice@sip.test"


@pytest.fixture(scope="module")
def ngircd() -> Iterator[Ngircd]:
    if ngircd_binary() is None:
        missing_peer("ngIRCd", "ngircd")
    with Ngircd() as server:
        yield server


def write_roster(prosody: Prosody, owner: XmppUser, items: dict[str, tuple[str, str]]) -> None:
    """Prosody's roster file of ``owner``: {jid: (subscription, name)}."""
    assert prosody.run_dir is not None
    folder = prosody.run_dir / "data" / _encode(prosody.domain) / "roster"
    folder.mkdir(parents=True, exist_ok=True)
    entries = "".join(
        f'\t["{jid}"] = {{\n\t\t["groups"] = {{}};\n\t\t["subscription"] = "{sub}";\n'
        + (f'\t\t["name"] = "{name}";\n' if name else "")
        + "\t};\n"
        for jid, (sub, name) in items.items()
    )
    body = f'return {{\n\t[false] = {{\n\t\t["version"] = 1;\n\t}};\n{entries}}};\n'
    (folder / f"{_encode(owner.localpart)}.dat").write_text(body)


def start_gateway(
    prosody: Prosody,
    tmp_path: Path,
    alice: XmppUser,
    irc_account: str | None = None,
    workers: int = 0,
) -> GatewayProcess:
    extra = prosody.gateway_section()
    if irc_account is not None:
        port = irc_account.partition("|")[2]
        extra += f'\n[protocols.irc]\ntls = false\nserver = "127.0.0.1:{port}"\n'
    gateway = GatewayProcess(
        tmp_path,
        sip={"trusted": ["127.0.0.1/32"]},
        extra_config=extra,
        actors={"workers": workers},
    )
    gateway.cli("db", "init")
    gateway.cli(
        "accounts", "add", USER, alice.jid, "xmpp", "--password-stdin", stdin=alice.password + "\n"
    )
    if irc_account is not None:
        nick = irc_account.partition("|")[0]
        gateway.cli(
            "accounts", "add", USER, f"{nick}@127.0.0.1", "irc", "--password-stdin", stdin="\n"
        )
    gateway.start()
    gateway.wait_accounts("connected")
    return gateway


def in_background(flow: Path, gateway: GatewayProcess) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            run_sipp(flow, "127.0.0.1", gateway.port, calls=1, timeout=90)
        )
    )
    runner.start()
    return runner, outcome


def finished(runner: threading.Thread, outcome: list[Any], gateway: GatewayProcess) -> None:
    runner.join(120)
    assert outcome, "sipp did not finish"
    (result,) = outcome
    assert result.returncode == 0, result.describe() + gateway.log_text()[-6000:]


def answer_checked(var: int, *patterns: str, absent: tuple[str, ...] = ()) -> str:
    """Receive a NOTIFY whose text matches every pattern and none of ``absent``; answer 200."""
    checks = [
        f'<ereg regexp={quoteattr(p)} search_in="msg" check_it="true" assign_to="{var + i}"/>'
        for i, p in enumerate(patterns)
    ]
    checks += [
        f'<ereg regexp={quoteattr(p)} search_in="msg" check_it_inverse="true" '
        f'assign_to="{var + len(patterns) + i}"/>'
        for i, p in enumerate(absent)
    ]
    answer = ANSWER_NOTIFY.format(state="active", var=var + len(patterns) + len(absent))
    return answer.replace("    <action>\n", "    <action>\n      " + "\n      ".join(checks) + "\n")


def resource(uri: str, name: str, state: str) -> str:
    """An RLMI <resource> with its <name> and instance state (the encoder's layout)."""
    return (
        f"<resource uri=.{re.escape(uri)}.><name>{re.escape(name)}</name>"
        f"<instance id=.[0-9a-f]+. state=.{state}."
    )


# With a worker process the roster events cross a pipe to the gateway (pickled).
@pytest.mark.parametrize("workers", [0, 1])
def test_the_roster_of_two_accounts_is_one_list_with_names_and_roster_pushes(
    prosody: Prosody, ngircd: Ngircd, tmp_path: Path, workers: int
) -> None:
    if sipp_binary() is None:
        missing_peer("sipp", "sip-tester")
    tag = tmp_path.name[-8:].replace("_", "").lower()
    alice = prosody.create_user(f"ralice{tag}")
    bob = prosody.create_user(f"rbob{tag}")
    carol = prosody.create_user(f"rcarol{tag}")
    dave = prosody.create_user(f"rdave{tag}")
    write_roster(
        prosody, alice, {bob.jid: ("to", "Bob Builder"), carol.jid: ("both", "Carol Singer")}
    )
    write_roster(prosody, bob, {alice.jid: ("from", "")})
    write_roster(prosody, carol, {alice.jid: ("both", "")})
    irc_nick = f"rdan{tag}"[:9]
    peers = [
        XmppPeer(u.jid, u.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
        for u in (bob, carol)
    ]
    for peer, (show, text) in zip(peers, (("away", "at lunch"), ("dnd", "singing")), strict=True):
        peer.start()
        peer.send_presence(show=show, status=text)
    gateway = start_gateway(
        prosody, tmp_path, alice, f"rl{tag}"[:9] + f"|{ngircd.port}", workers=workers
    )
    other = XmppPeer(
        f"{alice.jid}/desk", alice.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file
    )
    try:
        wait_log(gateway, rf"Roster of {USER} \(xmpp\): 2 contact")
        for user, show in ((bob, "away"), (carol, "dnd")):
            wait_log(gateway, rf"sees {re.escape(user.jid)} \(xmpp\): {show}")
        # The IRC account's roster is what it watches: the phone subscribes to a nick.
        irc_uri = f"sip:{irc_nick}@127.0.0.1;proto=irc"
        watch = scenario(
            tmp_path,
            "irc_watch",
            request("SUBSCRIBE", irc_uri),
            expect(200),
            ANSWER_NOTIFY.format(state="active|pending", var="1"),
        )
        sipp(gateway, watch, 1)
        wait_log(gateway, rf"Roster of {USER} \(irc\): {irc_nick} '' both")
        wait_log(gateway, rf"sees {irc_nick} \(irc\): offline")  # the first poll's answer
        other.start()  # another client of alice's account, to change the roster

        bob_uri = f"sip:{bob.jid};proto=xmpp"
        flow = scenario(
            tmp_path,
            "roster_list",
            list_request(),
            expect(200, text="Require: eventlist"),
            answer_checked(
                10,
                "Content-Type: multipart/related;type=.application/rlmi\\+xml.",
                "Require: eventlist",
                "fullState=.true.",
                resource(bob_uri, "Bob Builder", "active"),
                resource(f"sip:{carol.jid};proto=xmpp", "Carol Singer", "active"),
                resource(irc_uri, irc_nick, "active"),
                "Content-Type: application/pidf\\+xml",
                "at lunch",
                "singing",
            ),
            answer_checked(
                30,
                "fullState=.false.",
                resource(f"sip:{dave.jid};proto=xmpp", "Dave Digger", "pending"),
                absent=(re.escape(bob_uri),),
            ),
            # The IRC account leaves the table: its contact leaves the list.
            answer_checked(
                50,
                "fullState=.false.",
                resource(irc_uri, irc_nick, "terminated") + " reason=.noresource.",
                absent=(re.escape(bob_uri),),
            ),
            list_request(expires=0, cseq=2, in_dialog=True),
            expect(200),
            ANSWER_NOTIFY.format(state="terminated", var="60"),
        )
        runner, outcome = in_background(flow, gateway)
        wait_log(gateway, "subscribes to its buddy list")
        # The full-state NOTIFY is out: the roster push that follows is a partial one.
        other.set_roster_item(dave.jid, "Dave Digger")
        wait_log(gateway, rf"Roster of {USER} \(xmpp\): {re.escape(dave.jid)} 'Dave Digger' none")
        (irc_row,) = [
            row
            for row in json.loads(gateway.cli("accounts", "list", "--json").stdout)
            if row["protocol"] == "irc"
        ]
        gateway.cli("accounts", "remove", str(irc_row["id"]))
        gateway.cli("reload")
        finished(runner, outcome, gateway)
        wait_log(gateway, rf"{USER} \(irc\) left: off the user's lists")
    finally:
        other.stop()
        for peer in peers:
            peer.stop()
        assert gateway.stop() == 0, gateway.log_text()


WINFO = "      Event: presence\n"


def winfo_request(target: str = f"sip:{USER}", **kwargs: Any) -> str:
    return request("SUBSCRIBE", target, **kwargs).replace(
        WINFO,
        "      Event: presence.winfo\n      Accept: application/watcherinfo+xml\n",
    )


def message(target: str, text: str) -> str:
    return f"""  <send retrans="500">
    <![CDATA[

      MESSAGE {target} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:{USER}>;tag=[pid]M[call_number]
      To: <{target}>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Content-Type: text/plain
      Content-Length: [len]

{text}
    ]]>
  </send>
"""


def test_watcher_info_lists_pending_requests_of_real_contacts_and_the_answer(
    prosody: Prosody, tmp_path: Path
) -> None:
    if sipp_binary() is None:
        missing_peer("sipp", "sip-tester")
    tag = tmp_path.name[-8:].replace("_", "").lower()
    alice = prosody.create_user(f"walice{tag}")
    erin = prosody.create_user(f"werin{tag}")
    frank = prosody.create_user(f"wfrank{tag}")
    gateway = start_gateway(prosody, tmp_path, alice)
    peers = [
        XmppPeer(u.jid, u.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
        for u in (erin, frank)
    ]
    try:
        for peer in peers:
            peer.start()
        refused = scenario(
            tmp_path, "winfo_not_mine", winfo_request("sip:bob@sip.test"), expect(403)
        )
        sipp(gateway, refused, 1)

        peers[0].subscribe(alice.jid, status="hello")
        wait_log(gateway, rf"Authorization request of {re.escape(erin.jid)} to {USER}: asking")
        erin_uri = re.escape(f"sip:{erin.jid};proto=xmpp")
        frank_uri = re.escape(f"sip:{frank.jid};proto=xmpp")
        flow = scenario(
            tmp_path,
            "winfo",
            winfo_request(),
            expect(200),
            answer_checked(
                10,
                "Event: presence.winfo",
                "Content-Type: application/watcherinfo\\+xml",
                "state=.full.",
                f"<watcher-list resource=.sip:{re.escape(USER)}. package=.presence.>",
                f"status=.pending. event=.subscribe.>{erin_uri}</watcher>",
            ),
            answer_checked(
                20,
                "state=.partial.",
                f"status=.pending. event=.subscribe.>{frank_uri}</watcher>",
                absent=(erin_uri,),
            ),
            answer_checked(
                30,
                "state=.partial.",
                f"status=.active. event=.approved.>{erin_uri}</watcher>",
                absent=(frank_uri,),
            ),
            winfo_request(expires=0, cseq=2, in_dialog=True),
            expect(200),
            ANSWER_NOTIFY.format(state="terminated", var="40"),
        )
        runner, outcome = in_background(flow, gateway)
        wait_log(gateway, "subscribes to its watcher information")
        peers[1].subscribe(alice.jid)
        wait_log(gateway, rf"Authorization request of {re.escape(frank.jid)} to {USER}: asking")
        # The phone allows erin as before, by MESSAGE to the contact's URI.
        allow = scenario(
            tmp_path, "allow", message(f"sip:{erin.jid};proto=xmpp", "allow"), expect(200)
        )
        sipp(gateway, allow, 1)
        peers[0].wait_for(lambda e: e.kind == "subscribed" and e.bare == alice.jid)
        finished(runner, outcome, gateway)
    finally:
        for peer in peers:
            peer.stop()
        assert gateway.stop() == 0, gateway.log_text()
