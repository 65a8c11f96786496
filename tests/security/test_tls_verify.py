"""Outgoing TLS is verified by default, on every path, and a failure says where and why.

Three real daemons run side by side:

* ``default``: no ``ca_file`` anywhere (what an operator gets out of the box),
  direct connections to Prosody (STARTTLS) and ngIRCd (TLS), both with
  self-signed certificates: both logins must fail as untrusted.
* ``direct_tls``: the same for XMPP with TLS from the first byte (XEP-0368).
* ``wrong_name``: ``ca_file`` trusts the servers' certificates, but those name
  another host: only the hostname check can refuse them.
* ``proxied``: the same through an HTTP CONNECT proxy (tinyproxy): TLS runs
  inside the tunnel and must still check the IM server's certificate and name
  (not the proxy's), for a wrong name and for an untrusted certificate.

Each account's ``last_error`` in ``status --json``, and the log, must name the
server and the verification failure.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import tomli_w

from purplegw.actors.front.front import SipFront, StaticRouter
from purplegw.actors.front.transport import Address
from purplegw.sip.headers import Headers
from purplegw.sip.message import Request
from purplegw.sip.uri import parse_uri
from tests.kit.certs import write_self_signed_cert
from tests.kit.gateway import GatewayProcess
from tests.kit.tinyproxy import Tinyproxy
from tests.security.conftest import require_tinyproxy, set_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.kit.ngircd import Ngircd
    from tests.kit.prosody import Prosody

UNTRUSTED = "certificate verify failed: self-signed certificate"
WRONG_NAME = "certificate verify failed: "  # + "Hostname mismatch" / "IP address mismatch"


def _daemon(
    base: Any,
    *,
    xmpp: dict[str, Any],
    irc: dict[str, Any],
    accounts: list[tuple[str, str, str]],
    proxy: int | None = None,
) -> GatewayProcess:
    gateway = GatewayProcess(
        base, extra_config=tomli_w.dumps({"protocols": {"xmpp": xmpp, "irc": irc}})
    )
    if proxy is not None:
        set_config(gateway, proxy={"http_host": "127.0.0.1", "http_port": proxy})
    gateway.cli("db", "init")
    for sip_user, ext_user, protocol in accounts:
        gateway.cli(
            "accounts",
            "add",
            sip_user,
            ext_user,
            protocol,
            "--password-stdin",
            stdin="some-password\n",
        )
    return gateway.start()


def _failed(
    gateway: GatewayProcess, users: list[str], timeout: float = 60.0
) -> dict[str, dict[str, Any]]:
    """Each account's status once its last error is a certificate verification failure."""
    deadline = time.monotonic() + timeout
    last: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        assert gateway.process is not None
        assert gateway.process.poll() is None, gateway.log_text()
        try:
            last = {a["ext_user"]: a for a in gateway.status()}
        except RuntimeError:
            last = {}
        if all(
            "certificate verify failed" in (last.get(u, {}).get("last_error") or "") for u in users
        ):
            return last
        time.sleep(0.2)
    raise TimeoutError(f"no verification errors after {timeout}s: {last}\n{gateway.log_text()}")


@pytest.fixture(scope="module")
def daemons(
    prosody: Prosody,
    prosody_wrong_name: Prosody,
    ngircd_tls: Ngircd,
    ngircd_wrong_name: Ngircd,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    require_tinyproxy()
    irc_port, wrong_irc_port = ngircd_tls.tls_port, ngircd_wrong_name.tls_port
    assert irc_port is not None
    assert wrong_irc_port is not None
    jid = prosody.create_user("tlsuser").jid
    wrong_jid = prosody_wrong_name.create_user("tlsuser").jid
    irc = f"tlsuser@127.0.0.1:{irc_port}"
    wrong_irc = f"tlsuser@127.0.0.1:{wrong_irc_port}"
    ports = [prosody.port, prosody_wrong_name.port, irc_port, wrong_irc_port]
    with Tinyproxy(connect_ports=ports) as proxy:
        runs = {
            "default": (
                _daemon(
                    tmp_path_factory.mktemp("tls-default"),
                    xmpp={"server": prosody.address},
                    irc={},
                    accounts=[("a@sip.test", jid, "xmpp"), ("a@sip.test", irc, "irc")],
                ),
                [jid, irc],
            ),
            "direct_tls": (
                _daemon(
                    tmp_path_factory.mktemp("tls-direct"),
                    xmpp={"server": f"{prosody.host}:{prosody.tls_port}", "direct_tls": True},
                    irc={},
                    accounts=[("a@sip.test", jid, "xmpp")],
                ),
                [jid],
            ),
            "wrong_name": (
                _daemon(
                    tmp_path_factory.mktemp("tls-wrong-name"),
                    xmpp={
                        "server": prosody_wrong_name.address,
                        "ca_file": prosody_wrong_name.ca_file,
                    },
                    irc={"ca_file": str(ngircd_wrong_name.ca_file)},
                    accounts=[("a@sip.test", wrong_jid, "xmpp"), ("a@sip.test", wrong_irc, "irc")],
                ),
                [wrong_jid, wrong_irc],
            ),
            "proxied": (
                _daemon(
                    tmp_path_factory.mktemp("tls-proxied"),
                    xmpp={
                        "server": prosody_wrong_name.address,
                        "ca_file": prosody_wrong_name.ca_file,
                    },
                    irc={"ca_file": str(ngircd_wrong_name.ca_file)},
                    accounts=[
                        ("a@sip.test", wrong_jid, "xmpp"),
                        ("a@sip.test", wrong_irc, "irc"),
                        ("b@sip.test", irc, "irc"),
                    ],  # ngircd_tls: not trusted by ca_file
                    proxy=proxy.port,
                ),
                [wrong_jid, wrong_irc, irc],
            ),
        }
        results: dict[str, Any] = {
            "jid": jid,
            "wrong_jid": wrong_jid,
            "irc": irc,
            "wrong_irc": wrong_irc,
        }
        try:
            for name, (gateway, users) in runs.items():
                results[name] = _failed(gateway, users)
        finally:
            for name, (gateway, _) in runs.items():
                code = gateway.stop()
                results[f"{name}_log"] = gateway.log.read_text(errors="replace")
                assert code == 0, results[f"{name}_log"][-4000:]
        results["proxy_log"] = proxy.log()
        results["ports"] = ports
        yield results


def _error(result: dict[str, Any], user: str) -> str:
    status = result[user]
    assert status["state"] != "connected", status
    return status["last_error"]


def test_xmpp_untrusted_certificate_is_refused_by_default(
    daemons: dict[str, Any], prosody: Prosody
) -> None:
    error = _error(daemons["default"], daemons["jid"])
    assert UNTRUSTED in error
    assert prosody.address in error  # which server
    assert prosody.domain in error  # and which XMPP domain it was for
    assert error in daemons["default_log"]


def test_irc_untrusted_certificate_is_refused_by_default(
    daemons: dict[str, Any], ngircd_tls: Ngircd
) -> None:
    error = _error(daemons["default"], daemons["irc"])
    assert UNTRUSTED in error
    assert f"127.0.0.1:{ngircd_tls.tls_port}" in error
    assert error in daemons["default_log"]


def test_xmpp_direct_tls_untrusted_certificate_is_refused(
    daemons: dict[str, Any], prosody: Prosody
) -> None:
    error = _error(daemons["direct_tls"], daemons["jid"])
    assert UNTRUSTED in error
    assert f"{prosody.host}:{prosody.tls_port}" in error


def test_xmpp_certificate_for_another_name_is_refused(
    daemons: dict[str, Any], prosody_wrong_name: Prosody
) -> None:
    error = _error(daemons["wrong_name"], daemons["wrong_jid"])
    assert WRONG_NAME in error
    assert "mismatch" in error
    assert "valid for 'localhost'" in error  # the name checked is the JID's domain
    assert prosody_wrong_name.address in error
    assert "names another host" in error  # not "set ca_file": it is set, and trusted


def test_irc_certificate_for_another_name_is_refused(
    daemons: dict[str, Any], ngircd_wrong_name: Ngircd
) -> None:
    error = _error(daemons["wrong_name"], daemons["wrong_irc"])
    assert WRONG_NAME in error
    assert "mismatch" in error
    assert f"127.0.0.1:{ngircd_wrong_name.tls_port}" in error


def test_tls_through_the_proxy_checks_the_im_server(daemons: dict[str, Any]) -> None:
    proxied = daemons["proxied"]
    xmpp, irc_name = _error(proxied, daemons["wrong_jid"]), _error(proxied, daemons["wrong_irc"])
    irc_untrusted = _error(proxied, daemons["irc"])
    assert WRONG_NAME in xmpp
    assert "valid for 'localhost'" in xmpp  # the IM server's name, not the proxy's
    assert WRONG_NAME in irc_name
    assert "mismatch" in irc_name
    assert UNTRUSTED in irc_untrusted
    # The connections really went through the tunnel.
    for port in daemons["ports"][1:]:
        assert f"CONNECT 127.0.0.1:{port}" in daemons["proxy_log"], daemons["proxy_log"]


# --- SIP over TLS from the gateway (MESSAGE to a tls contact or outbound proxy) --------


def _message_to(port: int) -> Request:
    headers = Headers()
    headers.add("From", "<sip:gw@127.0.0.1>;tag=gw1")
    headers.add("To", f"<sip:alice@127.0.0.1:{port}>")
    headers.add("Call-ID", f"tls-{time.monotonic_ns()}@127.0.0.1")
    headers.add("CSeq", "1 MESSAGE")
    headers.add("Content-Type", "text/plain")
    return Request(
        "MESSAGE",
        parse_uri(f"sip:alice@127.0.0.1:{port};transport=tls"),
        headers,
        b"for a verified peer only",
    )


def test_sip_tls_client_refuses_an_untrusted_peer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed_cert(cert, key, "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    received: list[bytes] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(30)
        port = server.getsockname()[1]

        def serve() -> None:
            raw, _ = server.accept()
            try:
                with server_ctx.wrap_socket(raw, server_side=True) as conn:
                    conn.settimeout(5)
                    received.append(conn.recv(65535))
            except (OSError, ssl.SSLError):
                pass  # the client hung up during the handshake: what we want

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        # The gateway's own listener has a certificate; no CA file for peers: the default.
        config = {
            "listen": ["tls:127.0.0.1:0"],
            "tls_certificate": str(cert),
            "tls_private_key": str(key),
        }
        caplog.set_level(logging.INFO, logger="purplegw.actors")
        with SipFront(config, StaticRouter()) as front:
            response = front.send_request(
                _message_to(port), Address("tls", "127.0.0.1", port)
            ).result(30)
        thread.join(10)
    assert response.status == 503
    assert received == []  # not a byte of the MESSAGE went to the unverified peer
    assert f"tls:127.0.0.1:{port}" in caplog.text
    assert UNTRUSTED in caplog.text
