"""Login through an HTTP CONNECT proxy (tinyproxy), STARTTLS inside the tunnel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from purplegw.protocols.base import ProxySettings, TransientError
from tests.kit.ports import free_port
from tests.kit.tinyproxy import Tinyproxy, tinyproxy_binary
from tests.kit.xmpp_peer import XmppPeer

from .xmpp_harness import LoopThread, make_session

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def need_tinyproxy() -> None:
    if tinyproxy_binary() is None:
        from tests.kit.binaries import missing_peer

        missing_peer("tinyproxy", "tinyproxy")


def test_login_and_message_through_http_connect_proxy(loop, prosody, need_tinyproxy):
    alice, bob = prosody.create_user("palice"), prosody.create_user("pbob")
    cfg = {"server": prosody.address, "ca_file": prosody.ca_file, "keepalive": 0}
    with Tinyproxy(connect_ports=[prosody.port]) as proxy:
        session, _events = make_session(
            loop, alice.jid, alice.password, cfg, proxy=ProxySettings("127.0.0.1", proxy.port)
        )
        loop.run(session.login())
        try:
            assert proxy.saw_connect(prosody.host, prosody.port), proxy.log()
            # the socket we talk on is the one to the proxy, TLS inside it
            assert session.client.transport.get_extra_info("peername")[1] == proxy.port
            assert session.client.transport.get_extra_info("ssl_object") is not None
            with XmppPeer(
                bob.jid, bob.password, prosody.host, prosody.port, ca_file=prosody.ca_file
            ) as peer:
                loop.run(session.send_message(bob.jid, "via the proxy", "px-1"))
                peer.wait_for(lambda e: e.kind == "message" and e.msg_id == "px-1")
        finally:
            loop.run(session.logout())


def test_proxy_refusing_the_port_is_transient_and_names_the_proxy(loop, prosody, need_tinyproxy):
    alice = prosody.create_user("qalice")
    cfg = {
        "server": prosody.address,
        "ca_file": prosody.ca_file,
        "keepalive": 0,
        "connect_timeout": 5,
    }
    # CONNECT allowed to another port only: if the session bypassed the
    # proxy it would log in; it must fail, and say which proxy refused.
    with Tinyproxy(connect_ports=[free_port("tcp")]) as proxy:
        session, _events = make_session(
            loop, alice.jid, alice.password, cfg, proxy=ProxySettings("127.0.0.1", proxy.port)
        )
        with pytest.raises(TransientError, match=f"127.0.0.1:{proxy.port}"):
            loop.run(session.login())


def test_proxy_with_basic_auth(loop, prosody, need_tinyproxy):
    alice = prosody.create_user("aalice")
    cfg = {
        "server": prosody.address,
        "ca_file": prosody.ca_file,
        "keepalive": 0,
        "connect_timeout": 5,
    }
    with Tinyproxy(connect_ports=[prosody.port], auth=("gw", "s3cret")) as proxy:
        wrong, _ = make_session(
            loop,
            alice.jid,
            alice.password,
            cfg,
            proxy=ProxySettings("127.0.0.1", proxy.port, "gw", "wrong"),
        )
        with pytest.raises(TransientError, match="proxy"):
            loop.run(wrong.login())
        session, _ = make_session(
            loop,
            alice.jid,
            alice.password,
            cfg,
            proxy=ProxySettings("127.0.0.1", proxy.port, "gw", "s3cret"),
        )
        loop.run(session.login())
        loop.run(session.logout())
        assert proxy.saw_connect(prosody.host, prosody.port)
