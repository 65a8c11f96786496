"""Issue 16, "State per user": one user's PUBLISHes and SUBSCRIBEs against the real daemon.

sipp (not our code) is the SIP user agent, speaking for alice from a
trusted address (the per-user limits hold behind a proxy too); alice has
an XMPP account on Prosody and an IRC account on ngIRCd.  Prosody's own
roster file of alice's account shows what the gateway left there.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

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
MAX_PUBLICATIONS = 3
MAX_SUBSCRIPTIONS = 5

HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{name}">
"""
REQUEST = """  <send retrans="500">
    <![CDATA[

      {method} {target} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:alice@sip.test>;tag=[pid]T[call_number]
      To: <{target}>{to_tag}
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: <sip:alice@[local_ip]:[local_port];transport=[transport]>
      Event: presence
      Expires: {expires}
{extra}      Content-Length: [len]

{body}
    ]]>
  </send>
"""
ANSWER_NOTIFY = """  <recv request="NOTIFY">
    <action>
      <ereg regexp="{state}" search_in="hdr" header="Subscription-State:" check_it="true"
            assign_to="{var}"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"""
PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@sip.test">
<tuple id="t[call_number]"><status><basic>open</basic></status></tuple></presence>"""


def expect(status: int, *, text: str = "", retry_after: bool = False) -> str:
    checks = []
    if text:
        checks.append(
            f'<ereg regexp="{re.escape(text)}" search_in="msg" check_it="true" assign_to="8"/>'
        )
    if retry_after:
        checks.append(
            '<ereg regexp="[0-9]+" search_in="hdr" header="Retry-After:" '
            'check_it="true" assign_to="9"/>'
        )
    if not checks:
        return f'  <recv response="{status}"/>\n'
    return (
        f'  <recv response="{status}">\n    <action>\n      '
        + "\n      ".join(checks)
        + "\n    </action>\n  </recv>\n"
    )


def scenario(tmp_path: Path, name: str, *parts: str) -> Path:
    used = sorted(set(re.findall(r'assign_to="(\d+)"', "".join(parts))))
    reference = f'  <Reference variables="{",".join(used)}"/>\n' if used else ""
    path = tmp_path / f"{name}.xml"
    path.write_text(HEAD.format(name=name) + "".join(parts) + reference + "</scenario>\n")
    return path


def request(
    method: str,
    target: str,
    *,
    expires: int = 600,
    cseq: int = 1,
    in_dialog: bool = False,
    body: str = "",
) -> str:
    extra = "      Content-Type: application/pidf+xml\n" if body else ""
    return REQUEST.format(
        method=method,
        target=target,
        expires=expires,
        cseq=cseq,
        to_tag="[peer_tag_param]" if in_dialog else "",
        extra=extra,
        body=body,
    )


def sipp(gateway: GatewayProcess, path: Path, calls: int, **kwargs: Any) -> None:
    result = run_sipp(path, "127.0.0.1", gateway.port, calls=calls, timeout=60, **kwargs)
    assert result.returncode == 0, result.describe() + "\n" + gateway.log_text()[-3000:]
    assert result.successful == calls, result.describe()


def roster(prosody: Prosody, user: XmppUser) -> str:
    """Prosody's stored roster of ``user`` ("" when it has none)."""
    assert prosody.run_dir is not None
    host = prosody.domain
    path = prosody.run_dir / "data" / _encode(host) / "roster" / f"{_encode(user.localpart)}.dat"
    return path.read_text() if path.exists() else ""


@pytest.fixture(scope="module")
def ngircd() -> Iterator[Ngircd]:
    if ngircd_binary() is None:
        missing_peer("ngIRCd", "ngircd")
    with Ngircd() as server:
        yield server


def start_gateway(
    prosody: Prosody, ngircd: Ngircd, tmp_path: Path, *, rate_per_user: float = 0.0
) -> tuple[GatewayProcess, XmppUser]:
    if sipp_binary() is None:
        missing_peer("sipp", "sip-tester")
    tag = tmp_path.name[-8:].replace("_", "").lower()
    account = prosody.create_user(f"limalice{tag}")
    gateway = GatewayProcess(
        tmp_path,
        sip={"trusted": ["127.0.0.1/32"], "rate_per_user": rate_per_user, "burst_per_user": 5},
        extra_config=(
            prosody.gateway_section()
            + f'\n[protocols.irc]\ntls = false\nserver = "127.0.0.1:{ngircd.port}"\n'
            + f"\n[presence]\nmax_publications_per_user = {MAX_PUBLICATIONS}\n"
            + f"max_subscriptions_per_user = {MAX_SUBSCRIPTIONS}\n"
        ),
    )
    gateway.cli("db", "init")
    gateway.cli(
        "accounts",
        "add",
        USER,
        account.jid,
        "xmpp",
        "--password-stdin",
        stdin=account.password + "\n",
    )
    gateway.cli(
        "accounts", "add", USER, f"lim{tag}@127.0.0.1", "irc", "--password-stdin", stdin="\n"
    )
    gateway.start()
    gateway.wait_accounts("connected")
    return gateway, account


@pytest.fixture
def gateway(
    prosody: Prosody, ngircd: Ngircd, tmp_path: Path
) -> Iterator[tuple[GatewayProcess, XmppUser]]:
    gw, account = start_gateway(prosody, ngircd, tmp_path)
    yield gw, account
    assert gw.stop() == 0, gw.log_text()


def test_subscriptions_and_publications_beyond_the_caps_get_403(
    prosody: Prosody,
    gateway: tuple[GatewayProcess, XmppUser],
    tmp_path: Path,
) -> None:
    gw, account = gateway
    contact = f"sip:c[call_number]x{tmp_path.name[-6:]}@{prosody.domain}"
    pending = scenario(
        tmp_path,
        "sub_pending",
        request("SUBSCRIBE", contact),
        expect(200),
        ANSWER_NOTIFY.format(state="pending", var="1"),
    )
    sipp(gw, pending, MAX_SUBSCRIPTIONS)
    refused = scenario(
        tmp_path,
        "sub_refused",
        request("SUBSCRIBE", contact),
        expect(403, text=f"at most {MAX_SUBSCRIPTIONS} subscriptions per user"),
    )
    sipp(gw, refused, 3 * MAX_SUBSCRIPTIONS)
    # Only the accepted subscriptions became roster requests on the account.
    entries = re.findall(r'\["(c\d+x[^"]+)"\]', roster(prosody, account))
    assert len(entries) == MAX_SUBSCRIPTIONS, roster(prosody, account)

    own = "sip:alice@sip.test"
    published = scenario(tmp_path, "pub_ok", request("PUBLISH", own, body=PIDF), expect(200))
    sipp(gw, published, MAX_PUBLICATIONS)
    over = scenario(
        tmp_path,
        "pub_refused",
        request("PUBLISH", own, body=PIDF),
        expect(403, text=f"at most {MAX_PUBLICATIONS} publications per user"),
    )
    sipp(gw, over, 3 * MAX_PUBLICATIONS)
    assert gw.process is not None
    assert gw.process.poll() is None


def test_publish_and_subscribe_count_against_the_users_rate(
    prosody: Prosody,
    ngircd: Ngircd,
    tmp_path: Path,
) -> None:
    # One token per 100 s: the burst of 5 is all the test gets.
    gw, _ = start_gateway(prosody, ngircd, tmp_path, rate_per_user=0.01)
    try:
        own = "sip:alice@sip.test"
        burst = scenario(tmp_path, "pub_ok", request("PUBLISH", own, body=PIDF), expect(200))
        sipp(gw, burst, 3)
        contact = f"sip:r[call_number]@{prosody.domain}"
        subscribed = scenario(
            tmp_path,
            "sub_ok",
            request("SUBSCRIBE", contact),
            expect(200),
            ANSWER_NOTIFY.format(state="pending", var="1"),
        )
        sipp(gw, subscribed, 2)
        for method, target, body in (("PUBLISH", own, PIDF), ("SUBSCRIBE", contact, "")):
            limited = scenario(
                tmp_path,
                f"{method}_503",
                request(method, target, body=body),
                expect(503, text="rate limit", retry_after=True),
            )
            sipp(gw, limited, 3)
    finally:
        assert gw.stop() == 0, gw.log_text()


def test_an_invalid_irc_nick_gets_404_at_once_and_a_valid_one_is_still_subscribed(
    gateway: tuple[GatewayProcess, XmppUser],
    tmp_path: Path,
) -> None:
    gw, _ = gateway
    bad = scenario(
        tmp_path,
        "bad_nick",
        request("SUBSCRIBE", "sip:bob%0D%0AQUIT@127.0.0.1;proto=irc"),
        expect(404, text="not a valid IRC nick"),
    )
    sipp(gw, bad, 1)
    good = scenario(
        tmp_path,
        "good_nick",
        request("SUBSCRIBE", "sip:bob@127.0.0.1;proto=irc"),
        expect(200),
        ANSWER_NOTIFY.format(state="active|pending", var="1"),
    )
    sipp(gw, good, 1)
    assert "subscribes to bob (irc)" in gw.log_text()


def test_an_invalid_jid_gets_404_at_once(
    prosody: Prosody,
    gateway: tuple[GatewayProcess, XmppUser],
    tmp_path: Path,
) -> None:
    gw, _ = gateway
    bad = scenario(
        tmp_path,
        "bad_jid",
        request("SUBSCRIBE", f"sip:bad%20jid@{prosody.domain};proto=xmpp"),
        expect(404, text="not a valid XMPP address"),
    )
    sipp(gw, bad, 1)
    assert "subscribes to bad jid" not in gw.log_text()


def test_an_unanswered_request_is_withdrawn_when_the_subscription_ends(
    prosody: Prosody,
    gateway: tuple[GatewayProcess, XmppUser],
    tmp_path: Path,
) -> None:
    gw, account = gateway
    tag = tmp_path.name[-8:].replace("_", "").lower()
    bob = prosody.create_user(f"limbob{tag}")
    with XmppPeer(
        bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file
    ) as peer:
        peer.wait_online()
        target = f"sip:{bob.jid}"
        flow = scenario(
            tmp_path,
            "sub_unsub",
            request("SUBSCRIBE", target),
            expect(200),
            ANSWER_NOTIFY.format(state="pending", var="1"),
            # Pause until bob has seen the request (the account sends it on its own loop).
            '  <pause milliseconds="3000"/>\n',
            request("SUBSCRIBE", target, expires=0, cseq=2, in_dialog=True),
            expect(200),
            ANSWER_NOTIFY.format(state="terminated", var="2"),
        )
        sipp(gw, flow, 1)
        peer.wait_for(lambda e: e.kind == "subscribe" and e.bare == account.jid)
        peer.wait_for(lambda e: e.kind == "unsubscribe" and e.bare == account.jid)
    stored = roster(prosody, account)
    # No entry stays on the account: the request was withdrawn and the item removed.
    assert bob.jid not in stored, stored
