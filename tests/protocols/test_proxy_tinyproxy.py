"""IRC logins through a real HTTP CONNECT proxy (tinyproxy)."""

from __future__ import annotations

import asyncio

import pytest

from purplegw.protocols.base import ConnectionState, ProxySettings, TransientError
from purplegw.protocols.proxy import ProxyRefusedError, ProxyUnreachableError, open_connection
from tests.kit.ngircd import Ngircd, RawIrcClient
from tests.kit.ports import free_port
from tests.kit.tinyproxy import Tinyproxy

from .conftest import require_tinyproxy
from .irc_util import make_session

pytestmark = pytest.mark.timeout(60)


def test_irc_login_and_message_through_proxy(ngircd: Ngircd) -> None:
    require_tinyproxy()

    async def scenario(proxy: Tinyproxy) -> None:
        settings = ProxySettings("127.0.0.1", proxy.port)
        session, events = make_session("gwproxied", ngircd.port, proxy=settings)
        await session.login()
        assert events.of("state")[-1][0] is ConnectionState.CONNECTED
        # Our end of the IRC connection is a socket to the proxy, not to ngIRCd.
        assert session._writer.get_extra_info("peername")[1] == proxy.port
        peer = await RawIrcClient("127.0.0.1", ngircd.port, "rawproxypeer").connect()
        try:
            await session.send_message("rawproxypeer", "via the proxy", "m")
            line = await peer.wait_line(lambda ln: " PRIVMSG " in ln)
            assert line.startswith(":gwproxied!")
            assert line.endswith(":via the proxy")
        finally:
            await peer.close()
            await session.logout()
        assert proxy.saw_connect("127.0.0.1", ngircd.port), proxy.log()

    with Tinyproxy(connect_ports=[ngircd.port]) as proxy:
        asyncio.run(scenario(proxy))
    # With the proxy gone, the same account cannot log in: the proxy is the path.
    asyncio.run(
        _login_fails_naming(
            ngircd.port,
            ProxySettings("127.0.0.1", proxy.port),
            ProxyUnreachableError,
            f"127.0.0.1:{proxy.port}",
        )
    )


async def _login_fails_naming(port: int, settings: ProxySettings, error: type, text: str) -> str:
    session, events = make_session("gwrefused", port, proxy=settings)
    with pytest.raises(error) as info:
        await session.login()
    assert isinstance(info.value, TransientError)
    assert text in str(info.value)
    assert events.of("state")[-1][0] is ConnectionState.TRANSIENT_DISCONNECT
    return str(info.value)


def test_proxy_refusing_connect_is_transient_and_named(ngircd: Ngircd) -> None:
    require_tinyproxy()
    # CONNECT is only allowed to some other port: tinyproxy answers 403.
    with Tinyproxy(connect_ports=[free_port("tcp")]) as proxy:
        message = asyncio.run(
            _login_fails_naming(
                ngircd.port,
                ProxySettings("127.0.0.1", proxy.port),
                ProxyRefusedError,
                f"HTTP proxy 127.0.0.1:{proxy.port}",
            )
        )
        assert "403" in message


def test_proxy_basic_auth(ngircd: Ngircd) -> None:
    require_tinyproxy()
    with Tinyproxy(connect_ports=[ngircd.port], auth=("gw", "s3cret")) as proxy:
        message = asyncio.run(
            _login_fails_naming(
                ngircd.port,
                ProxySettings("127.0.0.1", proxy.port, "gw", "wrong"),
                ProxyRefusedError,
                f"127.0.0.1:{proxy.port}",
            )
        )
        assert "401" in message or "407" in message

        async def good() -> None:
            settings = ProxySettings("127.0.0.1", proxy.port, "gw", "s3cret")
            session, _ = make_session("gwauthed", ngircd.port, proxy=settings)
            await session.login()
            await session.logout()

        asyncio.run(good())
        assert proxy.saw_connect("127.0.0.1", ngircd.port)


def test_tls_inside_the_tunnel(ngircd: Ngircd) -> None:
    require_tinyproxy()
    assert ngircd.tls_port is not None

    async def scenario(proxy: Tinyproxy) -> None:
        settings = ProxySettings("127.0.0.1", proxy.port)
        session, _ = make_session(
            "gwtlsproxy", ngircd.tls_port, proxy=settings, tls=True, ca_file=str(ngircd.ca_file)
        )
        await session.login()
        ssl_object = session._writer.get_extra_info("ssl_object")
        assert ssl_object is not None
        assert ssl_object.getpeercert()["subject"]  # verified against the CA file
        await session.logout()

    with Tinyproxy(connect_ports=[ngircd.tls_port]) as proxy:
        asyncio.run(scenario(proxy))
        assert proxy.saw_connect("127.0.0.1", ngircd.tls_port)


def test_direct_connection_errors_name_the_server() -> None:
    port = free_port("tcp")

    async def scenario() -> None:
        with pytest.raises(TransientError, match=f"127.0.0.1:{port}"):
            await open_connection("127.0.0.1", port, timeout=5)

    asyncio.run(scenario())
