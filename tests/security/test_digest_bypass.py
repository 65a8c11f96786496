"""Attempts to get past digest authentication, against the real daemon with raw SIP.

tests/e2e/test_identity.py covers the plain cases (no credentials, wrong
password, an exact replay, From of another user, relaying, REGISTER for
another user).  These are the crafted ones: each Authorization below is
correct except for the one thing under test, and a control request built the
same way with that one thing right is accepted, so a refusal can only come
from the check under test.

The daemon offers SHA-256 only (``auth_algorithms = ["SHA-256"]``), so that
answering with MD5 is a downgrade it must refuse.  Stale nonces need a clock
the test controls: that case drives the ``Gateway`` object in-process.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from purplegw.gateway import Gateway, GatewaySettings
from purplegw.store import Database, Tables, UserRepository
from purplegw.store.upgrades import run_upgrades
from tests.gateway.fakes import InlineWorker
from tests.kit.gateway import GatewayProcess
from tests.kit.raw_ua import RawUA
from tests.kit.sipmsg import make_request, udp_source

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from purplegw.sip.message import Response

REALM = "sip.test"
TARGET = "sip:bob@dummy.example"
OTHER_TARGET = "sip:carol@dummy.example"
PASSWORDS = {"alice": "alice-pw-9f2c", "mallory": "mallory-pw-4b7e"}
TRUSTED_HOST = "127.0.0.2"
OTHER_REALM = "other.test"
OTHER_ALICE_PASSWORD = "other-alice-pw-71d3"


def h(algorithm: str, text: str) -> str:
    name = "md5" if algorithm.upper().startswith("MD5") else "sha256"
    return hashlib.new(name, text.encode()).hexdigest()


@dataclass
class Answer:
    """The fields of one Authorization value; ``value()`` computes the response."""

    nonce: str
    username: str = "alice"
    password: str = PASSWORDS["alice"]
    realm: str = REALM
    uri: str = TARGET
    method: str = "MESSAGE"
    algorithm: str | None = "SHA-256"
    qop: str | None = "auth"
    nc: str | None = "00000001"
    cnonce: str | None = "0a4f113b"
    response: str | None = None  # None: computed

    def computed(self) -> str:
        algorithm = self.algorithm or "MD5"
        ha1 = h(algorithm, f"{self.username}:{self.realm}:{self.password}")
        if algorithm.endswith("-sess"):
            ha1 = h(algorithm, f"{ha1}:{self.nonce}:{self.cnonce}")
        ha2 = h(algorithm, f"{self.method}:{self.uri}")
        if self.qop is None:  # RFC 2069
            return h(algorithm, f"{ha1}:{self.nonce}:{ha2}")
        return h(algorithm, f"{ha1}:{self.nonce}:{self.nc}:{self.cnonce}:{self.qop}:{ha2}")

    def value(self) -> str:
        response = self.computed() if self.response is None else self.response
        parts = [
            f'username="{self.username}"',
            f'realm="{self.realm}"',
            f'nonce="{self.nonce}"',
            f'uri="{self.uri}"',
            f'response="{response}"',
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        if self.cnonce is not None:
            parts.append(f'cnonce="{self.cnonce}"')
        return "Digest " + ", ".join(parts)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("digest"),
        extra_config="[protocols.dummy]\nenabled = true\n",
        # Many requests from one user in a few seconds: not a flood here.
        sip={
            "auth_algorithms": ["SHA-256"],
            "trusted": [f"{TRUSTED_HOST}/32"],
            "rate_per_user": 1000.0,
            "burst_per_user": 1000,
            "rate_per_source": 1000.0,
            "burst_per_source": 1000,
        },
    )
    gw.cli("db", "init")
    for user, password in PASSWORDS.items():
        # SHA-256 digests are computed from the password, so it is kept.
        gw.cli(
            "users",
            "add",
            f"{user}@{REALM}",
            "--keep-plaintext",
            "--password-stdin",
            stdin=password + "\n",
        )
    # Another domain's alice in the same subscriber table (shared with a proxy).
    gw.cli(
        "users",
        "add",
        f"alice@{OTHER_REALM}",
        "--keep-plaintext",
        "--password-stdin",
        stdin=OTHER_ALICE_PASSWORD + "\n",
    )
    gw.cli(
        "accounts",
        "add",
        f"alice@{REALM}",
        "alice@dummy.example",
        "dummy",
        "--password-stdin",
        stdin="x\n",
    )
    gw.start()
    gw.wait_accounts("connected")
    yield gw
    assert gw.stop() == 0, gw.log_text()


@pytest.fixture
def ua(gateway: GatewayProcess) -> RawUA:
    return RawUA(gateway)


def challenge(ua: RawUA, ruri: str = TARGET, method: str = "MESSAGE") -> tuple[str, str]:
    """A fresh nonce from a 401/407, and the challenge text."""
    status, data = ua.request(method, ruri, f"alice@{REALM}", to=ruri)
    assert status in (401, 407), data
    match = re.search(r'nonce="([^"]+)"', data)
    assert match is not None, data
    return match.group(1), data


def send(
    ua: RawUA,
    answer: Answer,
    *,
    ruri: str = TARGET,
    from_user: str = f"alice@{REALM}",
    method: str = "MESSAGE",
) -> int:
    return ua.request(method, ruri, from_user, to=ruri, auth=answer.value())[0]


def test_control_a_correct_answer_is_accepted(ua: RawUA) -> None:
    nonce, data = challenge(ua)
    assert "algorithm=SHA-256" in data
    assert "algorithm=MD5" not in data
    assert send(ua, Answer(nonce)) == 202


def test_wrong_realm(ua: RawUA) -> None:
    # The other domain's alice answers for her own realm: she is not our alice.
    nonce, _ = challenge(ua)
    assert send(ua, Answer(nonce, realm=OTHER_REALM, password=OTHER_ALICE_PASSWORD)) == 407
    # Our alice's password over a realm we did not offer.
    assert send(ua, Answer(nonce, realm=OTHER_REALM)) == 407
    assert send(ua, Answer(nonce)) == 202


def test_digest_uri_must_be_the_request_uri(ua: RawUA) -> None:
    # A captured Authorization for a MESSAGE to bob, not yet used, sent to carol.
    nonce, _ = challenge(ua)
    assert send(ua, Answer(nonce, uri=TARGET), ruri=OTHER_TARGET) == 407
    assert send(ua, Answer(nonce, uri=OTHER_TARGET), ruri=OTHER_TARGET) == 202
    # The same URI spelt differently (RFC 3261 19.1.4: host case) is still the same.
    nonce, _ = challenge(ua)
    assert send(ua, Answer(nonce, uri="sip:bob@DUMMY.example")) == 202


def test_method_is_bound(ua: RawUA) -> None:
    nonce, _ = challenge(ua)
    assert send(ua, Answer(nonce, method="REGISTER")) == 407


@pytest.mark.parametrize("missing", ["qop", "nc", "cnonce"])
def test_qop_auth_with_nc_and_cnonce_is_required(ua: RawUA, missing: str) -> None:
    # Without qop (RFC 2069) there is no nonce-count, so nothing stops a replay.
    nonce, _ = challenge(ua)
    answer = Answer(nonce)
    if missing == "qop":
        answer.qop = None
    else:
        response = answer.computed()
        setattr(answer, missing, None)
        answer.response = response
    assert send(ua, answer) == 407
    assert send(ua, Answer(nonce)) == 202


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", None])
def test_algorithm_downgrade_is_refused(ua: RawUA, algorithm: str | None) -> None:
    # Only SHA-256 is offered; an MD5 answer (None = no algorithm: MD5) is refused.
    nonce, _ = challenge(ua)
    assert send(ua, Answer(nonce, algorithm=algorithm)) == 407
    assert send(ua, Answer(nonce, algorithm="SHA-256-sess")) == 202


@pytest.mark.parametrize("response", ["", "0" * 64])
def test_empty_or_zero_response(ua: RawUA, response: str) -> None:
    nonce, _ = challenge(ua)
    assert send(ua, Answer(nonce, response=response)) == 407


def test_nonce_must_be_ours_and_untouched(ua: RawUA) -> None:
    nonce, _ = challenge(ua)
    stamp, random, mac = nonce.split(".")
    forged = [
        f"{int(stamp) + 10_000}.{random}.{mac}",  # pushed into the future: a longer life
        f"{stamp}.{random}.{'0' * len(mac)}",  # made up
        f"{stamp}.{random}",  # no MAC at all
        "",
    ]
    for fake in forged:
        assert send(ua, Answer(fake)) == 407, fake
    assert send(ua, Answer(nonce)) == 202


def test_nonce_count_must_increase(ua: RawUA) -> None:
    nonce, _ = challenge(ua)
    assert send(ua, Answer(nonce, nc="00000002")) == 202
    assert send(ua, Answer(nonce, nc="00000001")) == 407  # an older, unused capture
    assert send(ua, Answer(nonce, nc="00000002", cnonce="other")) == 407
    assert send(ua, Answer(nonce, nc="00000003")) == 202


def test_a_nonce_issued_to_another_user_does_not_help(ua: RawUA) -> None:
    # Mallory asks for a challenge, then answers with alice's name but his password.
    status, data = ua.request("MESSAGE", TARGET, f"mallory@{REALM}")
    assert status == 407
    nonce = re.search(r'nonce="([^"]+)"', data).group(1)  # type: ignore[union-attr]
    assert send(ua, Answer(nonce, username="alice", password=PASSWORDS["mallory"])) == 407
    assert (
        send(
            ua,
            Answer(nonce, username="alice", password=PASSWORDS["mallory"]),
            from_user=f"mallory@{REALM}",
        )
        == 407
    )
    # And his own valid answer does not speak for alice.
    assert send(ua, Answer(nonce, username="mallory", password=PASSWORDS["mallory"])) == 403


@pytest.mark.parametrize("username", ["ALICE", "Alice", f"alice@{REALM}", "alice ", "alice\x00"])
def test_username_spelt_otherwise_is_not_alice(ua: RawUA, username: str) -> None:
    nonce, _ = challenge(ua)
    assert send(ua, Answer(nonce, username=username)) in (403, 407)


@pytest.mark.parametrize("from_user", [f"ALICE@{REALM}", "alice@evil.example", "alice"])
def test_from_other_than_the_authenticated_user_is_forbidden(ua: RawUA, from_user: str) -> None:
    nonce, _ = challenge(ua)
    status = send(ua, Answer(nonce), from_user=from_user)
    assert status in (400, 403), status
    assert send(ua, Answer(nonce, nc="00000002")) == 202


def test_basic_credentials_are_not_accepted(ua: RawUA) -> None:
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
    assert ua.request("MESSAGE", TARGET, f"alice@{REALM}", auth=basic)[0] == 407


def test_via_claiming_a_trusted_address_is_not_trusted(gateway: GatewayProcess) -> None:
    """Trust follows the packet's source address, not what the request says about itself."""
    spoofed = raw_request(gateway, "MESSAGE", TARGET, f"alice@{REALM}", via_host=TRUSTED_HOST)
    assert spoofed[0] == 407
    # Control: from the trusted address itself, no challenge.
    assert (
        raw_request(
            gateway, "MESSAGE", TARGET, f"alice@{REALM}", bind=TRUSTED_HOST, via_host=TRUSTED_HOST
        )[0]
        == 202
    )


@pytest.mark.parametrize("from_user", [f"nobody@{REALM}", "alice@elsewhere.example"])
def test_trusted_proxy_does_not_make_an_open_relay(gateway: GatewayProcess, from_user: str) -> None:
    """Even a trusted proxy's request is only carried for a user with an account."""
    status, data = raw_request(
        gateway, "MESSAGE", TARGET, from_user, bind=TRUSTED_HOST, via_host=TRUSTED_HOST
    )
    assert status in (403, 404), data


PIDF = (
    f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
    f'entity="sip:alice@{REALM}"><tuple id="t1"><status><basic>open</basic></status>'
    "</tuple></presence>"
)


def test_publish_for_another_user_is_forbidden(gateway: GatewayProcess) -> None:
    """Mallory, authenticated as himself, cannot set alice's presence on her accounts."""
    alice_uri = f"sip:alice@{REALM}"
    extra = [("Event", "presence"), ("Expires", "600")]

    def publish(username: str, from_user: str) -> tuple[int, str]:
        status, data = raw_request(
            gateway,
            "PUBLISH",
            alice_uri,
            from_user,
            to=alice_uri,
            extra=extra,
            body=PIDF,
            content_type="application/pidf+xml",
        )
        assert status == 407, data
        nonce = re.search(r'nonce="([^"]+)"', data).group(1)  # type: ignore[union-attr]
        answer = Answer(
            nonce, username=username, password=PASSWORDS[username], uri=alice_uri, method="PUBLISH"
        )
        return raw_request(
            gateway,
            "PUBLISH",
            alice_uri,
            from_user,
            to=alice_uri,
            extra=[*extra, ("Proxy-Authorization", answer.value())],
            body=PIDF,
            content_type="application/pidf+xml",
        )

    status, data = publish("mallory", f"mallory@{REALM}")
    assert status == 403, data
    status, data = publish("alice", f"alice@{REALM}")  # control
    assert status == 200, data


def test_subscribe_needs_credentials(gateway: GatewayProcess) -> None:
    status, data = raw_request(
        gateway,
        "SUBSCRIBE",
        TARGET,
        f"alice@{REALM}",
        extra=[("Event", "presence"), ("Expires", "600")],
        body="",
    )
    assert status == 407, data


def raw_request(
    gateway: GatewayProcess,
    method: str,
    ruri: str,
    from_user: str,
    *,
    to: str | None = None,
    bind: str = "127.0.0.1",
    via_host: str = "127.0.0.1",
    extra: list[tuple[str, str]] | None = None,
    body: str = "hi",
    content_type: str = "text/plain",
) -> tuple[int, str]:
    """One request from a UDP socket bound to ``bind``, its Via naming ``via_host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind, 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {via_host}:{port};branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <sip:{from_user}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{to or ruri}>",
            f"Call-ID: {uuid.uuid4().hex}",
            f"CSeq: 1 {method}",
            f"Contact: <sip:{from_user.split('@', 1)[0]}@{bind}:{port}>",
            *(f"{name}: {value}" for name, value in extra or []),
            *([f"Content-Type: {content_type}"] if body else []),
            f"Content-Length: {len(body.encode())}",
            "",
            body,
        ]
        sock.sendto("\r\n".join(lines).encode(), ("127.0.0.1", gateway.port))
        while True:
            data = sock.recv(65535).decode()
            status = int(data.split(" ", 2)[1])
            if status >= 200:
                return status, data


# --- stale nonces: the Gateway in-process, on a clock the test moves ---------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class NoAccounts:
    def all(self) -> list[object]:
        return []

    def get(self, *_args: object) -> None:
        return None


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Gateway, Clock]]:
    db = Database.create(f"sqlite://{tmp_path / 'gw.db'}")
    tables = Tables()
    run_upgrades(db, tables)
    users = UserRepository(db, tables.subscribers)
    users.add("alice", REALM, PASSWORDS["alice"])
    clock = Clock()
    gateway = Gateway(
        settings=GatewaySettings(domain=REALM),
        store=SimpleNamespace(users=users, room_marks=None),
        directory=NoAccounts(),
        worker=InlineWorker(),
        canonical=str.lower,
        user_at_host=lambda _p: False,
        clock=clock,
    )
    yield gateway, clock
    gateway.stop()
    db.close()


def _register(gateway: Gateway, auth: str | None = None) -> Response:
    extra = [("Contact", "<sip:alice@127.0.0.1:5070>"), ("Expires", "600")]
    if auth:
        extra.append(("Authorization", auth))
    request = make_request(
        "REGISTER",
        f"sip:{REALM}",
        from_=f"<sip:alice@{REALM}>",
        to=f"<sip:alice@{REALM}>",
        extra=extra,
    )
    replies: list[Response] = []
    source = udp_source()
    gateway.handle(request, source, replies.append)  # the worker is the test thread
    assert len(replies) == 1
    return replies[0]


def test_stale_nonce_is_refused_with_stale_true(rig: tuple[Gateway, Clock]) -> None:
    gateway, clock = rig
    first = _register(gateway)
    assert first.status == 401
    nonce = re.search(r'nonce="([^"]+)"', first.headers.get("WWW-Authenticate") or "")
    assert nonce is not None

    def answer(nc: str) -> str:
        return Answer(
            nonce.group(1), uri=f"sip:{REALM}", method="REGISTER", algorithm="MD5", nc=nc
        ).value()

    clock.now += 10
    assert _register(gateway, answer("00000001")).status == 200  # control: fresh
    clock.now += gateway.identity.digest.nonce_lifetime + 1
    late = _register(gateway, answer("00000002"))  # correct, but the nonce is too old
    assert late.status == 401
    challenges = late.headers.getall("WWW-Authenticate")
    assert challenges
    assert all("stale=true" in c for c in challenges)
    new_nonce = re.search(r'nonce="([^"]+)"', challenges[0]).group(1)  # type: ignore[union-attr]
    assert new_nonce != nonce.group(1)


# --- in-dialog requests speak for the dialog's owner too ---------------------------------


class Dialog:
    """A SUBSCRIBE dialog held by one socket, answering NOTIFYs with 200."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.call_id = uuid.uuid4().hex
        self.from_tag = uuid.uuid4().hex[:8]
        self.to_tag: str | None = None
        self.cseq = 0

    def subscribe(
        self,
        *,
        expires: int = 600,
        auth: str | None = None,
        sock: socket.socket | None = None,
        user: str = "alice",
    ) -> tuple[int, str]:
        sock = sock or self.sock
        port = sock.getsockname()[1]
        self.cseq += 1
        to = f"<{TARGET}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [
            f"SUBSCRIBE {TARGET} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{REALM}>;tag={self.from_tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} SUBSCRIBE",
            f"Contact: <sip:{user}@127.0.0.1:{port}>",
            "Event: presence",
            "Accept: application/pidf+xml",
            f"Expires: {expires}",
            *([f"Proxy-Authorization: {auth}"] if auth else []),
            "Content-Length: 0",
            "",
            "",
        ]
        sock.sendto("\r\n".join(lines).encode(), ("127.0.0.1", self.gateway.port))
        while True:
            data, addr = sock.recvfrom(65535)
            text = data.decode()
            if not text.startswith("SIP/2.0 "):  # a NOTIFY: answer it, keep waiting
                sock.sendto(_ok_for(text), addr)
                continue
            status = int(text.split(" ", 2)[1])
            if status >= 200:
                if status < 300 and self.to_tag is None:
                    match = re.search(r"^To:.*;tag=([^;\s]+)", text, re.MULTILINE | re.IGNORECASE)
                    assert match is not None, text
                    self.to_tag = match.group(1)
                return status, text

    def authorized(self, user: str = "alice", **kwargs: object) -> tuple[int, str]:
        status, data = self.subscribe(user=user, **kwargs)  # type: ignore[arg-type]
        if status != 407:
            return status, data
        nonce = re.search(r'nonce="([^"]+)"', data).group(1)  # type: ignore[union-attr]
        answer = Answer(nonce, username=user, password=PASSWORDS[user], method="SUBSCRIBE")
        return self.subscribe(auth=answer.value(), user=user, **kwargs)  # type: ignore[arg-type]


def _ok_for(request: str) -> bytes:
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")
    keep = [
        ln
        for ln in head[1:]
        if ln.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")
    ]
    return ("\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0", "", ""])).encode()


def test_in_dialog_subscribe_needs_the_owners_credentials(gateway: GatewayProcess) -> None:
    """Knowing a dialog's Call-ID and tags is not knowing alice's password."""
    dialog = Dialog(gateway)
    status, data = dialog.authorized()
    assert status in (200, 202), data
    assert dialog.to_tag
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        other.settimeout(10)
        # Someone else ends alice's subscription, without credentials.
        status, data = dialog.subscribe(expires=0, sock=other)
        assert status == 407, data
        # Mallory, with his own valid credentials, in alice's dialog.
        status, data = dialog.authorized(user="mallory", expires=0, sock=other)
        assert status == 403, data
    # Alice herself still can (control: the dialog was live and matched).
    status, data = dialog.authorized(expires=0)
    assert status in (200, 202), data
