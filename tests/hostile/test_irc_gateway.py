"""IRC attacks through the whole gateway: ngIRCd, the `purplegw run` daemon, a pjsua2 phone.

An IRC user sends colour codes, BEL, ANSI escapes and a bidi override; the
phone (pjsip's stack, not ours) must receive clean text.  A MESSAGE with a
NUL towards an IRC nick gets 488 without the text in the reason phrase, and
one to a nick with a line break gets a 4xx, while messages keep flowing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from tests.e2e.deployment import SIP_PASSWORD, phone
from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.ngircd import Ngircd, RawIrcClient, ngircd_binary
from tests.kit.raw_ua import RawUA

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(180)

GW_NICK = "gwalice"


@pytest.fixture(scope="module")
def ngircd() -> Iterator[Ngircd]:
    if ngircd_binary() is None:
        missing_peer("ngIRCd", "ngircd")
    with Ngircd() as server:
        yield server


@pytest.fixture
def gateway(ngircd: Ngircd, tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path,
        extra_config=(
            f'[protocols.irc]\ntls = false\nserver = "127.0.0.1:{ngircd.port}"\nison_interval = 1\n'
        ),
    )
    gw.cli("db", "init")
    gw.cli("users", "add", "alice@sip.test", "--password-stdin", stdin=SIP_PASSWORD + "\n")
    gw.cli(
        "accounts",
        "add",
        "alice@sip.test",
        f"{GW_NICK}@127.0.0.1",
        "irc",
        "--password-stdin",
        stdin="\n",
    )
    gw.start()
    gw.wait_accounts("connected")
    yield gw
    assert gw.stop() == 0, gw.log_text()


def test_irc_controls_reach_the_phone_clean(ngircd: Ngircd, gateway: GatewayProcess) -> None:
    async def irc_user() -> None:
        peer = await RawIrcClient("127.0.0.1", ngircd.port, "mallory").connect()
        try:
            peer.send(
                f"PRIVMSG {GW_NICK} :\x02\x0304,01ALERT\x0f\x07\x07\x07 "
                "\x1b[2J\x1b[31mred\x1b[0m \u202eevil\u202c \x1ddone\x1d"
            )
            peer.send(f"PRIVMSG {GW_NICK} :plain after")
            await peer._writer.drain()
            await asyncio.sleep(1)
        finally:
            await peer.close()

    with phone(gateway) as agent:
        asyncio.run(irc_user())
        first = agent.wait_for(lambda e: e["event"] == "im", timeout=30)
        assert first["body"] == "ALERT red evil done", first
        assert "sip:mallory@127.0.0.1;proto=irc" in first["from"]
        second = agent.wait_for(lambda e: e["event"] == "im" and e["body"] == "plain after")
        assert second


def test_nul_and_bad_nicks_are_refused_with_4xx(ngircd: Ngircd, gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, data = ua.authorized(
        "MESSAGE",
        "sip:bob@127.0.0.1;proto=irc",
        "alice@sip.test",
        "alice",
        SIP_PASSWORD,
        body="secret\x00QUIT :x",
    )
    assert status == 488, data
    reason = data.split("\r\n", 1)[0]
    assert "secret" not in reason, reason
    assert "QUIT" not in reason, reason
    assert "NUL" in reason
    status, data = ua.authorized(
        "MESSAGE",
        "sip:bob%0D%0AQUIT@127.0.0.1;proto=irc",
        "alice@sip.test",
        "alice",
        SIP_PASSWORD,
        body="hi",
    )
    assert 400 <= status < 500, data
    assert "QUIT" not in data.split("\r\n", 1)[0]
    # The account is still connected and delivers to a valid nick.

    async def check() -> None:
        peer = await RawIrcClient("127.0.0.1", ngircd.port, "bob").connect()
        try:
            loop = asyncio.get_running_loop()
            status, data = await loop.run_in_executor(
                None,
                lambda: ua.authorized(
                    "MESSAGE",
                    "sip:bob@127.0.0.1;proto=irc",
                    "alice@sip.test",
                    "alice",
                    SIP_PASSWORD,
                    body="still works",
                ),
            )
            assert status == 202, data
            await peer.wait_line(lambda ln: ln.endswith("PRIVMSG bob :still works"))
        finally:
            await peer.close()

    asyncio.run(check())
