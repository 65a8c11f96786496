"""identify(): the one question every SIP handler of the gateway asks first."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

import pytest

from purplegw.gateway.identity import Identity, Refused
from purplegw.gateway.settings import GatewaySettings
from purplegw.store.users import SipUser, md5_ha1
from tests.gateway.fakes import Clock
from tests.kit.sipmsg import make_request, udp_source

if TYPE_CHECKING:
    from purplegw.actors.front.transport import Source
    from purplegw.sip.message import Request

REALM = "sip.test"
PASSWORD = "alice-pw"


class Users:
    def get(self, username: str, domain: str) -> SipUser | None:
        if (username, domain) != ("alice", REALM):
            return None
        return SipUser(1, "alice", REALM, md5_ha1("alice", REALM, PASSWORD))


def source(host: str) -> Source:
    return udp_source(host)


def identity(**settings: object) -> tuple[Identity, Clock]:
    clock = Clock()
    return Identity(GatewaySettings(domain=REALM, **settings), Users(), clock), clock  # type: ignore[arg-type]


def request(method: str, from_user: str = "alice", auth: str | None = None) -> Request:
    header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    ruri = f"sip:{REALM}" if method == "REGISTER" else "sip:bob@example.org"
    return make_request(
        method,
        ruri,
        from_=f"<sip:{from_user}@{REALM}>",
        to=f"<sip:{from_user}@{REALM}>",
        extra=[(header, auth)] if auth else [],
    )


def refusal(ident: Identity, req: Request, host: str = "127.0.0.1") -> Refused:
    with pytest.raises(Refused) as caught:
        ident.identify(req, source(host))
    return caught.value


def answer(challenge: str, method: str, uri: str) -> str:
    nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)  # type: ignore[union-attr]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    ha1 = md5(f"alice:{REALM}:{PASSWORD}")
    ha2 = md5(f"{method}:{uri}")
    response = md5(f"{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}")
    return (
        f'Digest username="alice", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"'
    )


def test_a_trusted_network_speaks_for_the_user_in_from() -> None:
    ident, _ = identity(trusted=["127.0.0.2/32"])
    assert ident.identify(request("MESSAGE", "carol"), source("127.0.0.2")) == f"carol@{REALM}"
    # The same request from elsewhere must authenticate.
    assert refusal(ident, request("MESSAGE", "carol")).response.status == 407


@pytest.mark.parametrize(
    ("method", "status", "header"),
    [
        ("REGISTER", 401, "WWW-Authenticate"),
        ("MESSAGE", 407, "Proxy-Authenticate"),
        ("PUBLISH", 407, "Proxy-Authenticate"),
        ("SUBSCRIBE", 407, "Proxy-Authenticate"),
    ],
)
def test_no_credentials_are_challenged_per_method(method: str, status: int, header: str) -> None:
    ident, _ = identity()
    response = refusal(ident, request(method)).response
    assert response.status == status
    assert "Digest" in (response.headers.get(header) or "")


def test_valid_credentials_identify_the_user_and_from_must_match() -> None:
    ident, _ = identity()
    challenge = refusal(ident, request("MESSAGE")).response.headers.get("Proxy-Authenticate")
    assert challenge is not None
    auth = answer(challenge, "MESSAGE", "sip:bob@example.org")
    assert ident.identify(request("MESSAGE", auth=auth), source("127.0.0.1")) == f"alice@{REALM}"
    # alice's own credentials (a fresh answer: a replay is refused anyway)
    # do not let her send as mallory.
    challenge = refusal(ident, request("MESSAGE")).response.headers.get("Proxy-Authenticate")
    assert challenge is not None
    auth = answer(challenge, "MESSAGE", "sip:bob@example.org")
    forged = refusal(ident, request("MESSAGE", "mallory", auth=auth)).response
    assert (forged.status, forged.reason) == (
        403,
        "Forbidden: From does not match the authenticated user",
    )


def test_from_that_is_not_a_sip_user_is_a_bad_request() -> None:
    ident, _ = identity(trusted=["127.0.0.0/8"])
    req = make_request("MESSAGE", "sip:bob@example.org", from_="<sip:sip.test>")
    assert refusal(ident, req).response.status == 400


def test_registers_messages_publishes_and_subscribes_share_the_users_bucket() -> None:
    ident, clock = identity(trusted=["127.0.0.0/8"], rate_per_user=1.0, burst_per_user=4)
    for method in ("REGISTER", "MESSAGE", "PUBLISH", "SUBSCRIBE"):
        ident.identify(request(method), source("127.0.0.1"))
    for method in ("PUBLISH", "SUBSCRIBE", "MESSAGE", "REGISTER"):
        limited = refusal(ident, request(method)).response
        assert limited.status == 503, method
        assert limited.headers.get("Retry-After") == "1"
    # Another user has a bucket of its own; alice's refills with time.
    assert ident.identify(request("SUBSCRIBE", "bob"), source("127.0.0.1")) == f"bob@{REALM}"
    clock.now += 1.0
    assert ident.identify(request("PUBLISH"), source("127.0.0.1")) == f"alice@{REALM}"
