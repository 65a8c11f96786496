"""A hand-written SIP client for tests of what attackers and odd clients send.

It writes requests by hand on purpose (no stack of ours in between) and
answers digest challenges with the RFC 2617 formula computed here.
"""

from __future__ import annotations

import hashlib
import re
import socket
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.kit.gateway import GatewayProcess


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 2617 digest


class RawUA:
    def __init__(self, gateway: GatewayProcess) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", gateway.port)
        self.cseq = 0

    def request(
        self,
        method: str,
        ruri: str,
        from_user: str,
        *,
        to: str | None = None,
        auth: str | None = None,
        body: str = "hi",
    ) -> tuple[int, str]:
        self.cseq += 1
        header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:{from_user}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{to or ruri}>",
            f"Call-ID: {uuid.uuid4().hex}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{from_user.split('@', maxsplit=1)[0]}@127.0.0.1:{self.port}>",
            *([f"{header}: {auth}"] if auth else []),
            "Content-Type: text/plain",
            f"Content-Length: {len(body.encode())}",
            "",
            body,
        ]
        self.sock.sendto("\r\n".join(lines).encode(), self.target)
        while True:
            data = self.sock.recv(65535).decode()
            status = int(data.split(" ", 2)[1])
            if status >= 200:
                return status, data

    def authorized(
        self, method: str, ruri: str, from_user: str, username: str, password: str, **kwargs: str
    ) -> tuple[int, str]:
        status, data = self.request(method, ruri, from_user, **kwargs)
        if status not in (401, 407):
            return status, data
        challenge = re.search(r"nonce=\"([^\"]+)\"", data)
        assert challenge is not None, data
        nonce = challenge.group(1)
        ha1 = md5(f"{username}:sip.test:{password}")
        ha2 = md5(f"{method}:{ruri}")
        cnonce = "0a4f113b"
        response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        auth = (
            f'Digest username="{username}", realm="sip.test", nonce="{nonce}", '
            f'uri="{ruri}", response="{response}", algorithm=MD5, qop=auth, '
            f'nc=00000001, cnonce="{cnonce}"'
        )
        return self.request(method, ruri, from_user, auth=auth, **kwargs)
