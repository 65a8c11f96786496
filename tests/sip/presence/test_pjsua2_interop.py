"""Interoperability with pjsip (pjsua2), an independent SIP stack, over loopback UDP.

Both directions of the PIDF contract:

* pjsua2 subscribes to a buddy; this test answers the SUBSCRIBE and sends
  NOTIFYs whose bodies are ``presence_to_pidf`` output; pjsua2 reports what
  it understood (basic status, RPID activity, note).
* pjsua2 publishes its own presence (PUBLISH with pjsip's PIDF+RPID body);
  ``parse_pidf`` + ``pidf_to_presence`` must read it as what was set.

The SIP side here is a minimal hand-written UAS (the gateway's SIP core is
tested elsewhere); only 127.0.0.1 is used.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from purplegw.presence import ContactPresence, Presence, Status
from purplegw.sip.presence.mapping import pidf_to_presence, presence_to_pidf
from purplegw.sip.presence.pidf import parse_pidf
from tests.kit.pjsua_agent import PjsuaAgent

if TYPE_CHECKING:
    from collections.abc import Iterator

try:
    import pjsua2  # noqa: F401 - the child process uses it; checked here to skip or fail early
except ImportError:
    if os.environ.get("CI"):
        pytest.fail("pjsua2 is missing: pip install -e '.[test]' (pjsua2-python)", pytrace=False)
    pytest.skip("pjsua2-python (a test extra) is not installed", allow_module_level=True)

TIMEOUT = 20.0


@dataclass
class SipMessage:
    first_line: str
    headers: list[tuple[str, str]]
    body: bytes
    source: tuple[str, int]

    @property
    def method(self) -> str | None:
        parts = self.first_line.split(" ", 1)
        return None if parts[0].startswith("SIP/") else parts[0]

    def header(self, name: str) -> str:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        raise KeyError(name)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def parse_message(data: bytes, source: tuple[str, int]) -> SipMessage:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in {" ", "\t"} and headers:
            key, value = headers[-1]
            headers[-1] = (key, value + " " + line.strip())
            continue
        key, _, value = line.partition(":")
        headers.append((key.strip(), value.strip()))
    return SipMessage(lines[0], headers, body, source)


class LoopbackUas:
    """A UDP socket on 127.0.0.1 that plays the presence server for pjsua2."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def receive(self, want: str, timeout: float = TIMEOUT) -> SipMessage:
        """Next request with method ``want`` (or response to ``want``), answering the rest."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {want} from pjsua2 within {timeout} s")
            self.sock.settimeout(remaining)
            data, source = self.sock.recvfrom(65535)
            msg = parse_message(data, source)
            if msg.method == want or (
                msg.method is None and msg.header("CSeq").endswith(" " + want)
            ):
                return msg
            if msg.method is not None and msg.method != "ACK":
                self.reply(msg, 200, "OK")  # refreshes and the like

    def reply(self, req: SipMessage, code: int, reason: str, extra: str = "") -> None:
        to = req.header("To")
        if ";tag=" not in to:
            to += ";tag=gw1"
        lines = [f"SIP/2.0 {code} {reason}"]
        lines += [f"Via: {v}" for v in req.all("Via")]
        lines += [
            f"From: {req.header('From')}",
            f"To: {to}",
            f"Call-ID: {req.header('Call-ID')}",
            f"CSeq: {req.header('CSeq')}",
            f"Contact: <sip:bob@127.0.0.1:{self.port}>",
        ]
        text = "\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n"
        self.sock.sendto(text.encode(), req.source)

    def notify(self, subscribe: SipMessage, body: bytes) -> None:
        self.cseq += 1
        target = subscribe.header("Contact").strip("<>").split(">", 1)[0]
        to = subscribe.header("To")
        if ";tag=" not in to:
            to += ";tag=gw1"
        head = "\r\n".join(
            [
                f"NOTIFY {target} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-pidf-{self.cseq}",
                "Max-Forwards: 70",
                f"From: {to}",
                f"To: {subscribe.header('From')}",
                f"Call-ID: {subscribe.header('Call-ID')}",
                f"CSeq: {self.cseq} NOTIFY",
                f"Contact: <sip:bob@127.0.0.1:{self.port}>",
                "Event: presence",
                "Subscription-State: active;expires=600",
                "Content-Type: application/pidf+xml",
                f"Content-Length: {len(body)}",
            ]
        )
        self.sock.sendto(head.encode() + b"\r\n\r\n" + body, subscribe.source)


@pytest.fixture(scope="module")
def uas() -> Iterator[LoopbackUas]:
    server = LoopbackUas()
    yield server
    server.close()


@pytest.fixture(scope="module")
def peer(uas: LoopbackUas) -> Iterator[PjsuaAgent]:
    agent = PjsuaAgent.start()
    agent.account(f"sip:alice@127.0.0.1:{uas.port}", register=False, publish=True)
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def subscription(peer: PjsuaAgent, uas: LoopbackUas) -> SipMessage:
    peer.subscribe(f"sip:bob@127.0.0.1:{uas.port}")
    sub = uas.receive("SUBSCRIBE")
    assert sub.header("Event") == "presence"
    uas.reply(sub, 200, "OK", "Expires: 600\r\n")
    return sub


# What pjsua2 reports for each status we write: (basic, RPID activity).  pjsip
# knows only away and busy, so CHAT reads as plain online and EXTENDED_AWAY as away.
PJSIP_VIEW = {
    Status.OFFLINE: ("offline", "unknown"),
    Status.AVAILABLE: ("online", "unknown"),
    Status.CHAT: ("online", "unknown"),
    Status.AWAY: ("online", "away"),
    Status.EXTENDED_AWAY: ("online", "away"),
    Status.BUSY: ("online", "busy"),
}


@pytest.mark.parametrize("status", list(Status))
def test_pjsip_reads_our_notify(
    status: Status, peer: PjsuaAgent, uas: LoopbackUas, subscription: SipMessage
) -> None:
    note = f"{status.value}: back > 5 pm, caf\u00e9"
    contact = ContactPresence("bob@127.0.0.1", {"desk": Presence(status, note)})
    uas.notify(subscription, presence_to_pidf(f"sip:bob@127.0.0.1:{uas.port}", contact))
    answer = uas.receive("NOTIFY")
    assert answer.first_line == "SIP/2.0 200 OK"
    seen = peer.wait_for(lambda e: e["event"] == "buddy" and e["note"] == note)
    assert (seen["status"], seen["activity"]) == PJSIP_VIEW[status]
    assert seen["status_text"] == note


def test_pjsip_shows_the_most_available_resource(
    peer: PjsuaAgent, uas: LoopbackUas, subscription: SipMessage
) -> None:
    contact = ContactPresence(
        "bob@127.0.0.1",
        {
            "old-laptop": Presence(Status.OFFLINE, "laptop gone"),
            "phone": Presence(Status.BUSY, "in a call (phone)"),
            "tablet": Presence(Status.EXTENDED_AWAY, "tablet asleep"),
        },
    )
    uas.notify(subscription, presence_to_pidf(f"sip:bob@127.0.0.1:{uas.port}", contact))
    uas.receive("NOTIFY")
    seen = peer.wait_for(lambda e: e["event"] == "buddy" and e["note"] == "in a call (phone)")
    assert (seen["status"], seen["activity"]) == ("online", "busy")


@pytest.mark.parametrize(
    ("basic", "activity", "expected"),
    [
        ("open", "away", Status.AWAY),
        ("open", "busy", Status.BUSY),
        ("open", "unknown", Status.AVAILABLE),
        ("closed", "unknown", Status.OFFLINE),
    ],
)
def test_we_read_pjsip_publish(
    basic: str, activity: str, expected: Status, peer: PjsuaAgent, uas: LoopbackUas
) -> None:
    note = f"pjsua2 {activity} {basic} \u00e9t\u00e9"
    peer.publish(online=basic == "open", activity=activity, note=note)
    while True:
        publish = uas.receive("PUBLISH")
        uas.reply(publish, 200, "OK", "SIP-ETag: pidf-test\r\nExpires: 600\r\n")
        if note.encode() in publish.body:
            break
    assert publish.header("Event") == "presence"
    doc = parse_pidf(publish.body, publish.header("Content-Type"))
    assert doc.repairs == ()
    assert pidf_to_presence(doc) == Presence(
        expected, note, (activity,) if activity != "unknown" else ()
    )
