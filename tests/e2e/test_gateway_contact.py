"""The gateway as a SIP contact end to end: a pjsua2 phone <-> purplegw <-> Prosody and ngIRCd.

alice@sip.test has an XMPP account on Prosody, an IRC account on ngIRCd and
one on a disabled protocol (dummy); carol@sip.test has an XMPP account whose
password is wrong.  pjsip's own stack (not ours) is each user's phone: it
subscribes to sip:gateway@sip.test and reads the PIDF (one tuple per
account), sends it commands and reads the MESSAGEs it answers with.  bob is
an independent XMPP client on Prosody.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.deployment import SIP_PASSWORD
from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.ngircd import Ngircd, ngircd_binary
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.kit.prosody import Prosody

pytestmark = pytest.mark.timeout(240)

GATEWAY = "sip:gateway@sip.test"


@pytest.fixture(scope="module")
def ngircd() -> Iterator[Ngircd]:
    if ngircd_binary() is None:
        missing_peer("ngIRCd", "ngircd")
    with Ngircd() as server:
        yield server


def wait_states(gateway: GatewayProcess, want: dict[tuple[str, str], str]) -> None:
    """Until `purplegw status` shows each (sip_user, protocol) in its state."""
    deadline = time.monotonic() + 60
    last: Any = None
    while time.monotonic() < deadline:
        if gateway.process is not None and gateway.process.poll() is not None:
            pytest.fail(f"gateway exited:\n{gateway.log_text()}")
        try:
            last = {(a["sip_user"], a["protocol"]): a["state"] for a in gateway.status()}
        except RuntimeError:  # not listening on its control socket yet
            last = None
            time.sleep(0.2)
            continue
        if all(last.get(key) == state for key, state in want.items()):
            return
        time.sleep(0.2)
    pytest.fail(f"accounts not in {want}: {last}\n{gateway.log_text()}")


@pytest.fixture(params=[0, 1], ids=["accounts-in-process", "accounts-in-a-worker"])
def setup(
    prosody: Prosody, ngircd: Ngircd, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """``[actors] workers`` 0 and 1: states and events come over a pipe in the second."""
    tag = tmp_path.name[-8:].replace("_", "").lower()
    alice = prosody.create_user(f"gcalice{tag}")
    bob = prosody.create_user(f"gcbob{tag}")
    carol = prosody.create_user(f"gccarol{tag}")
    gateway = GatewayProcess(
        tmp_path,
        actors={"workers": request.param},
        extra_config=prosody.gateway_section()
        + f'\n[protocols.irc]\ntls = false\nserver = "127.0.0.1:{ngircd.port}"\n',
    )
    gateway.cli("db", "init")
    for user in ("alice@sip.test", "carol@sip.test"):
        gateway.cli("users", "add", user, "--password-stdin", stdin=SIP_PASSWORD + "\n")
    irc = f"gc{tag}@127.0.0.1"
    for user, ext, protocol, password in (
        ("alice@sip.test", alice.jid, "xmpp", alice.password),
        ("alice@sip.test", irc, "irc", ""),
        ("alice@sip.test", "alice", "dummy", "pw"),  # [protocols.dummy] is off by default
        ("carol@sip.test", carol.jid, "xmpp", "not-" + carol.password),
    ):
        gateway.cli(
            "accounts", "add", user, ext, protocol, "--password-stdin", stdin=password + "\n"
        )
    gateway.start()
    peer = XmppPeer(bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    try:
        wait_states(
            gateway,
            {
                ("alice@sip.test", "xmpp"): "connected",
                ("alice@sip.test", "irc"): "connected",
                ("alice@sip.test", "dummy"): "unknown_error",
                ("carol@sip.test", "xmpp"): "bad_credentials",
            },
        )
        peer.start()
        yield {
            "gateway": gateway,
            "alice": alice,
            "bob": bob,
            "carol": carol,
            "irc": irc,
            "peer": peer,
        }
    finally:
        peer.stop()
        code = gateway.stop()
        assert code == 0, gateway.log_text()


def phone(gateway: GatewayProcess, user: str) -> PjsuaAgent:
    agent = PjsuaAgent.start()
    agent.account(
        f"sip:{user}@sip.test",
        registrar=gateway.uri,
        username=user,
        password=SIP_PASSWORD,
        proxy=f"{gateway.uri};lr",
    )
    event = agent.wait_for(lambda e: e["event"] == "reg")
    assert event["code"] == 200, event
    return agent


def tuples(message: str) -> dict[str, str]:
    """{note: basic} of a NOTIFY's PIDF (each tuple's note is its account's line)."""
    found = {}
    for block in re.findall(r"<tuple.*?</tuple>", message, re.DOTALL):
        basic = re.search(r"<basic>(\w+)</basic>", block)
        note = re.search(r"<note[^>]*>([^<]*)</note>", block)
        assert basic, block
        assert note, block
        found[note.group(1)] = basic.group(1)
    return found


def since(agent: PjsuaAgent, mark: int, predicate: Any) -> int:
    """The position of the first event from position ``mark`` on that ``predicate`` picks."""
    event = agent.wait_for(lambda e: any(x is e for x in agent.events[mark:]) and predicate(e))
    return next(i for i, x in enumerate(agent.events) if x is event)


def state_of(message: str, prefix: str) -> str | None:
    """The basic of the tuple whose note starts with ``prefix``."""
    for note, basic in tuples(message).items():
        if note.startswith(prefix):
            return basic
    return None


def answers(agent: PjsuaAgent) -> list[str]:
    return [
        str(e["body"])
        for e in agent.matching(lambda e: e["event"] == "im" and GATEWAY in e["from"])
    ]


def ask(agent: PjsuaAgent, text: str) -> str:
    """Send ``text`` to the gateway contact; the body of the answer that follows."""
    before = len(answers(agent))
    agent.message(GATEWAY, text)
    status = agent.wait_for(lambda e: e["event"] == "im_status" and e["body"] == text)
    assert status["code"] == 200, status
    agent.wait_for(lambda _e: len(answers(agent)) > before)
    return answers(agent)[before]


def test_the_gateway_contact_shows_the_accounts_and_takes_commands(
    setup: dict[str, Any],
) -> None:
    gateway, alice, bob, irc = (setup[k] for k in ("gateway", "alice", "bob", "irc"))
    peer: XmppPeer = setup["peer"]
    xmpp_line = f"xmpp {alice.jid}: connected"
    irc_line = f"irc {irc}: connected"
    dummy_line = "dummy alice: disabled (protocol 'dummy' is disabled)"
    with phone(gateway, "alice") as agent:
        agent.subscribe(GATEWAY)
        state = agent.wait_for(
            lambda e: e["event"] == "buddy" and e["uri"] == GATEWAY and e["sub_state"] == "ACTIVE"
        )
        assert state["status"] == "online", state
        notify = agent.wait_for(lambda e: e["event"] == "notify" and e["uri"] == GATEWAY)
        assert tuples(notify["message"]) == {
            xmpp_line: "open",
            irc_line: "open",
            dummy_line: "closed",
        }

        status = ask(agent, "status")
        assert status.splitlines() == [dummy_line, irc_line, xmpp_line], status
        assert "relogin [ACCOUNT]" in ask(agent, "help")
        assert "Send 'help'" in ask(agent, "hello?")

        # relogin: the account logs out and in again, and every step is NOTIFYed.
        mark = len(agent.events)
        assert ask(agent, "relogin irc") == f"Logging in again: irc {irc}."
        for words, basic in ((f"irc {irc}: logged out", "closed"), (irc_line, "open")):
            mark = 1 + since(
                agent,
                mark,
                lambda e, w=words, b=basic: (
                    e["event"] == "notify" and state_of(e["message"], w) == b
                ),
            )
        assert "Account alice@sip.test/irc" in gateway.log_text()

        # add: the XMPP roster gets bob and bob gets alice's authorization request.
        added = ask(agent, f"add {bob.jid}")
        assert added == (
            f"Added {bob.jid} to your xmpp account {alice.jid} and asked to see their presence."
        )
        peer.wait_for(lambda e: e.kind == "subscribe" and e.bare == alice.jid, timeout=30)
        assert ask(agent, f"remove {bob.jid}") == (
            f"Removed {bob.jid} from your xmpp account {alice.jid}."
        )
        peer.wait_for(lambda e: e.kind == "unsubscribe" and e.bare == alice.jid, timeout=30)
        # A bare name goes to the only account that takes bare names (IRC).
        assert ask(agent, "add somebody").startswith(f"Added somebody to your irc account {irc}")
        assert ask(agent, "add bob icq") == "Unknown protocol 'icq'."
        assert ask(agent, "allow nobody@example.org") == (
            "No open request from nobody@example.org. Open requests: none."
        )
        # bob asks to see alice's presence: the phone is told (from bob's URI)
        # and answers through the gateway contact instead.
        peer.subscribe(alice.jid)
        agent.wait_for(
            lambda e: e["event"] == "im" and bob.jid in e["from"] and "asks to see" in e["body"]
        )
        assert ask(agent, f"allow sip:{bob.jid};proto=xmpp") == (
            f"{bob.jid} allowed to see your presence (xmpp)."
        )
        peer.wait_for(lambda e: e.kind == "subscribed" and e.bare == alice.jid, timeout=30)


def test_a_bad_password_is_told_to_its_user_once(setup: dict[str, Any]) -> None:
    gateway, carol = setup["gateway"], setup["carol"]
    with phone(gateway, "carol") as agent:
        notice = agent.wait_for(
            lambda e: e["event"] == "im" and GATEWAY in e["from"] and "stopped" in e["body"]
        )
        assert notice["body"].startswith(
            f"Your xmpp account {carol.jid} stopped: bad credentials"
        ), notice
        agent.subscribe(GATEWAY)
        state = agent.wait_for(lambda e: e["event"] == "buddy" and e["sub_state"] == "ACTIVE")
        assert state["status"] == "offline", state
        assert "bad credentials" in state["note"], state
        # A relogin fails the same way: no second notice.  The answer to
        # "status", queued after the new state's event, comes after any
        # notice that state could have caused (one conversation, in order).
        mark = len(agent.events)
        assert ask(agent, "relogin") == f"Logging in again: xmpp {carol.jid}."
        mark = since(agent, mark, lambda e: e["event"] == "notify" and "logged out" in e["message"])
        since(
            agent, mark + 1, lambda e: e["event"] == "notify" and "bad credentials" in e["message"]
        )
        wait_states(gateway, {("carol@sip.test", "xmpp"): "bad_credentials"})
        assert "bad credentials" in ask(agent, "status")
        notices = [a for a in answers(agent) if "stopped" in a]
        assert len(notices) == 1, answers(agent)


@pytest.mark.parametrize("workers", [0, 1], ids=["accounts-in-process", "accounts-in-a-worker"])
def test_an_unreachable_server_shows_until_when(tmp_path: Path, workers: int) -> None:
    if ngircd_binary() is None:
        missing_peer("ngIRCd", "ngircd")
    tag = tmp_path.name[-8:].replace("_", "").lower()
    nick = f"gu{tag}@127.0.0.1"
    with Ngircd() as server:
        gateway = GatewayProcess(
            tmp_path,
            actors={"workers": workers},
            extra_config=f'[protocols.irc]\ntls = false\nserver = "127.0.0.1:{server.port}"\n',
        )
        gateway.cli("db", "init")
        gateway.cli("users", "add", "alice@sip.test", "--password-stdin", stdin=SIP_PASSWORD + "\n")
        gateway.cli(
            "accounts", "add", "alice@sip.test", nick, "irc", "--password-stdin", stdin="\n"
        )
        gateway.start()
        try:
            wait_states(gateway, {("alice@sip.test", "irc"): "connected"})
            with phone(gateway, "alice") as agent:
                agent.subscribe(GATEWAY)
                mark = since(
                    agent,
                    0,
                    lambda e: (
                        e["event"] == "notify"
                        and state_of(e["message"], f"irc {nick}: connected") == "open"
                    ),
                )
                server.kill()
                mark = since(
                    agent,
                    mark,
                    lambda e: (
                        e["event"] == "notify"
                        and state_of(e["message"], f"irc {nick}: server unreachable") == "closed"
                        and re.search(r"backing off until \d\d:\d\d UTC", e["message"]) is not None
                    ),
                )
                server.start()
                since(
                    agent,
                    mark,
                    lambda e: (
                        e["event"] == "notify"
                        and state_of(e["message"], f"irc {nick}: connected") == "open"
                    ),
                )
                assert ask(agent, "status") == f"irc {nick}: connected"
        finally:
            code = gateway.stop()
        assert code == 0, gateway.log_text()


@pytest.mark.parametrize("workers", [0, 1], ids=["accounts-in-process", "accounts-in-a-worker"])
def test_giving_up_after_flapping_is_told_once_and_relogin_brings_it_back(
    tmp_path: Path, workers: int
) -> None:
    if ngircd_binary() is None:
        missing_peer("ngIRCd", "ngircd")
    tag = tmp_path.name[-8:].replace("_", "").lower()
    nick = f"gf{tag}@127.0.0.1"
    with Ngircd() as server:
        gateway = GatewayProcess(
            tmp_path,
            # Three failed logins within a minute: give up at once (no pause).
            actors={
                "workers": workers,
                "flap_attempts": 3,
                "flap_window": 60.0,
                "flap_retry_in": 0.5,
                "flap_max_retry": 0,
            },
            extra_config=f'[protocols.irc]\ntls = false\nserver = "127.0.0.1:{server.port}"\n',
        )
        gateway.cli("db", "init")
        gateway.cli("users", "add", "alice@sip.test", "--password-stdin", stdin=SIP_PASSWORD + "\n")
        gateway.cli(
            "accounts", "add", "alice@sip.test", nick, "irc", "--password-stdin", stdin="\n"
        )
        gateway.start()
        try:
            wait_states(gateway, {("alice@sip.test", "irc"): "connected"})
            with phone(gateway, "alice") as agent:
                server.kill()
                notice = agent.wait_for(
                    lambda e: e["event"] == "im" and GATEWAY in e["from"] and "stopped" in e["body"]
                )
                assert notice["body"].startswith(
                    f"Your irc account {nick} stopped: gave up after flapping"
                ), notice
                assert "Send 'relogin' to try again." in notice["body"]
                wait_states(gateway, {("alice@sip.test", "irc"): "unknown_error"})
                server.start()
                assert ask(agent, "relogin") == f"Logging in again: irc {nick}."
                wait_states(gateway, {("alice@sip.test", "irc"): "connected"})
                assert ask(agent, "status") == f"irc {nick}: connected"
                notices = [a for a in answers(agent) if "stopped" in a]
                assert len(notices) == 1, answers(agent)
        finally:
            code = gateway.stop()
        assert code == 0, gateway.log_text()
