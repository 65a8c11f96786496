"""IRC channels end to end: a pjsua2 phone <-> purplegw <-> ngIRCd <-> a raw IRC client.

The channel's other member is ``RawIrcClient`` (hand-split lines, no code of
purplegw's IRC adapter), kept connected on a loop thread of its own.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.deployment import SIP_PASSWORD, phone
from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.ngircd import Ngircd, RawIrcClient, ngircd_binary

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterator
    from pathlib import Path

    from tests.kit.pjsua_agent import PjsuaAgent

pytestmark = pytest.mark.timeout(180)

GW_NICK = "gwroomie"


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
        extra_config=f'[protocols.irc]\ntls = false\nserver = "127.0.0.1:{ngircd.port}"\n',
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


class Member:
    """A RawIrcClient on a loop thread of its own, driven from the test's thread."""

    def __init__(self, ngircd: Ngircd, nick: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = self.run(RawIrcClient("127.0.0.1", ngircd.port, nick).connect())

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def send(self, line: str) -> None:
        async def send() -> None:
            self.client.send(line)
            await self.client._writer.drain()

        self.run(send())

    def wait_line(self, needle: str) -> str:
        return self.run(self.client.wait_line(lambda line: needle in line))

    def stop(self) -> None:
        try:
            self.run(self.client.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def status_of(agent: PjsuaAgent, to: str, seen: int = 0) -> dict[str, Any]:
    def answers() -> list[dict[str, Any]]:
        return agent.matching(lambda e: e["event"] == "im_status" and e["to"].strip("<>") == to)

    agent.wait_for(lambda _e: len(answers()) > seen)
    return answers()[seen]


def test_a_channel_both_ways_who_and_leave(ngircd: Ngircd, gateway: GatewayProcess) -> None:
    uri = "sip:%23lounge@127.0.0.1;proto=irc"
    carol = Member(ngircd, "carol")
    try:
        carol.send("JOIN #lounge")
        carol.wait_line(" 366 carol #lounge ")
        with phone(gateway) as agent:
            agent.message(uri, "hello channel ✓")
            assert status_of(agent, uri)["code"] == 202, gateway.log_text()
            carol.wait_line(f":{GW_NICK}!")
            line = carol.wait_line("PRIVMSG #lounge :hello channel ✓")
            assert line.startswith(f":{GW_NICK}!")

            carol.send("PRIVMSG #lounge :hi from carol")
            im = agent.wait_for(
                lambda e: e["event"] == "im" and e["body"] == "carol: hi from carol"
            )
            assert uri in im["from"]

            agent.message(uri, "/who")
            assert status_of(agent, uri, 1)["code"] == 200
            who = agent.wait_for(lambda e: e["event"] == "im" and e["body"].startswith("2 in "))
            assert who["body"] == f"2 in #lounge: carol, {GW_NICK}"

            agent.message(uri, "/leave")
            assert status_of(agent, uri, 2)["code"] == 200
            carol.wait_line("PART #lounge")
    finally:
        carol.stop()


def test_a_ban_is_refused_with_the_servers_reason(ngircd: Ngircd, gateway: GatewayProcess) -> None:
    uri = "sip:%23vip@127.0.0.1;proto=irc"
    owner = Member(ngircd, "owner")
    try:
        owner.send("JOIN #vip")
        owner.wait_line(" 366 owner #vip ")
        owner.send(f"MODE #vip +b {GW_NICK}!*@*")
        owner.wait_line("MODE #vip +b")
        with phone(gateway) as agent:
            agent.message(uri, "let me in")
            refused = status_of(agent, uri)
            assert refused["code"] == 403, gateway.log_text()
            assert "banned" in refused["reason"]
    finally:
        owner.stop()
