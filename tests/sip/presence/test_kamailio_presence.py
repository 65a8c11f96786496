"""PIDF against Kamailio's presence server (presence + presence_xml), over loopback UDP.

The original purple module published buddies' presence into Kamailio's
presence server, which sent the NOTIFYs; purplegw keeps that as an option.
Here ``presence_to_pidf`` bodies are PUBLISHed to a real Kamailio, a watcher
SUBSCRIBEs, and the NOTIFY Kamailio builds (its own aggregate when several
publications exist) is read back with ``parse_pidf`` + ``pidf_to_presence``.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from purplegw.presence import ContactPresence, Presence, Status
from purplegw.sip.presence import parse_pidf, pidf_to_presence, presence_to_pidf
from tests.kit.binaries import missing_peer
from tests.kit.kamailio import Kamailio, kamailio_binary

if TYPE_CHECKING:
    from collections.abc import Iterator

DBTEXT_TEMPLATES = Path("/usr/share/kamailio/dbtext/kamailio")
TIMEOUT = 15.0

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:LISTEN
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "db_text.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"
modparam("presence", "db_url", "text://DBDIR")
modparam("presence_xml", "db_url", "text://DBDIR")
modparam("presence_xml", "force_active", 1)
modparam("presence", "server_address", "sip:pa@LISTEN")
request_route {
    if (is_method("PUBLISH")) { handle_publish(); exit; }
    if (is_method("SUBSCRIBE")) { handle_subscribe(); exit; }
    if (is_method("OPTIONS")) { sl_send_reply("200", "OK"); exit; }
    sl_send_reply("404", "Not here");
}
"""

_seq = itertools.count(1)


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    if kamailio_binary() is None:
        missing_peer("Kamailio", "kamailio")
    if (
        not any(Path("/usr/lib").glob("*/kamailio/modules/presence_xml.so"))
        or not DBTEXT_TEMPLATES.is_dir()
    ):
        missing_peer("Kamailio presence modules", "kamailio-presence-modules")
    db = tmp_path_factory.mktemp("kamailio-presence") / "db"
    shutil.copytree(DBTEXT_TEMPLATES, db)
    with Kamailio(CONFIG.replace("DBDIR", str(db))) as server:
        yield server


class Client:
    """One UDP endpoint on 127.0.0.1 speaking just enough SIP for PUBLISH/SUBSCRIBE."""

    def __init__(self, server: Kamailio) -> None:
        self.server = (server.host, server.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, user: str, headers: list[str], body: bytes = b"") -> None:
        n = next(_seq)
        head = [
            f"{method} sip:{user}@127.0.0.1 SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-k{n}",
            "Max-Forwards: 70",
            f"From: <sip:watcher{n}@127.0.0.1>;tag=f{n}",
            f"To: <sip:{user}@127.0.0.1>",
            f"Call-ID: kam-{n}@127.0.0.1",
            f"CSeq: 1 {method}",
            f"Contact: <sip:watcher{n}@127.0.0.1:{self.port}>",
            *headers,
            f"Content-Length: {len(body)}",
        ]
        self.sock.sendto("\r\n".join(head).encode() + b"\r\n\r\n" + body, self.server)

    def receive(self, start: bytes) -> bytes:
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                raise TimeoutError(f"nothing starting with {start!r} from Kamailio") from None
            if data.startswith(b"NOTIFY "):
                self.answer(data, source)
            if data.startswith(start):
                return data

    def answer(self, request: bytes, source: tuple[str, int]) -> None:
        head = request.partition(b"\r\n\r\n")[0].decode().split("\r\n")
        keep = [
            h
            for h in head[1:]
            if h.split(":", 1)[0].lower() in {"via", "from", "to", "call-id", "cseq"}
        ]
        reply = "\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0"]) + "\r\n\r\n"
        self.sock.sendto(reply.encode(), source)


@pytest.fixture
def client(kamailio: Kamailio) -> Iterator[Client]:
    c = Client(kamailio)
    yield c
    c.close()


def publish(client: Client, user: str, contact: ContactPresence) -> None:
    body = presence_to_pidf(f"sip:{user}@127.0.0.1", contact)
    headers = ["Event: presence", "Expires: 600", "Content-Type: application/pidf+xml"]
    client.request("PUBLISH", user, headers, body)
    answer = client.receive(b"SIP/2.0 ")
    assert answer.startswith(b"SIP/2.0 200 "), answer.decode(errors="replace")
    assert b"SIP-ETag:" in answer


def watch(client: Client, user: str) -> Presence:
    headers = ["Event: presence", "Accept: application/pidf+xml", "Expires: 600"]
    client.request("SUBSCRIBE", user, headers)
    notify = client.receive(b"NOTIFY ")
    head, _, body = notify.partition(b"\r\n\r\n")
    assert b"Content-Type: application/pidf+xml" in head
    doc = parse_pidf(body, "application/pidf+xml")
    assert doc.repairs == ()
    return pidf_to_presence(doc)


@pytest.mark.parametrize("status", list(Status))
def test_kamailio_relays_our_publish(status: Status, client: Client) -> None:
    user = f"buddy-{status.value}"
    note = f"{status.value}: back at 5, caf\u00e9 & <co>"
    publish(client, user, ContactPresence(f"{user}@127.0.0.1", {"r": Presence(status, note)}))
    got = watch(client, user)
    assert got.status is status
    assert got.note == note


def test_kamailio_aggregate_of_two_publications(client: Client) -> None:
    user = "buddy-two-devices"
    publish(
        client,
        user,
        ContactPresence(f"{user}/laptop", {"laptop": Presence(Status.AWAY, "at lunch")}),
    )
    publish(
        client,
        user,
        ContactPresence(f"{user}/phone", {"phone": Presence(Status.BUSY, "in a call")}),
    )
    # Kamailio merges both documents: two tuples, two persons; the busy one wins.
    got = watch(client, user)
    assert (got.status, got.note) == (Status.BUSY, "in a call")
