"""IRC session paths ngIRCd 26 cannot exercise (SASL, MONITOR, message-tags,
keepalive timeouts), against a scripted loopback server.

The script is written from the IRCv3 specifications (sasl-3.1, monitor,
message-tags/typing), not from the adapter's code.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Self

import pytest

from purplegw.presence import Status
from purplegw.protocols.base import BadCredentialsError, ConnectionState, TypingState

from .irc_util import make_session

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.timeout(30)


class ScriptedIrcd:
    """One-connection-at-a-time IRC server speaking just enough IRCv3."""

    def __init__(
        self,
        *,
        caps: str | None = "sasl message-tags multi-prefix",
        isupport: str = "MONITOR=100 CASEMAPPING=rfc1459",
        sasl_password: str | None = None,
        server_password: str | None = None,
        silent_after_login: bool = False,
    ) -> None:
        self.caps = caps
        self.isupport = isupport
        self.sasl_password = sasl_password
        self.server_password = server_password
        self.silent_after_login = silent_after_login
        self.online: set[str] = set()
        self.received: list[str] = []
        self.port = 0
        self._changed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self.nick = "*"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        if self._writer:
            self._writer.close()
        self._server.close()

    def send(self, line: str) -> None:
        assert self._writer is not None
        self._writer.write(line.encode() + b"\r\n")

    async def wait_received(self, predicate: Callable[[str], bool], timeout: float = 10) -> str:  # noqa: ASYNC109 - the scripted server takes its own deadline
        async with asyncio.timeout(timeout):
            while True:
                for line in self.received:
                    if predicate(line):
                        return line
                self._changed.clear()
                await self._changed.wait()

    def _welcome(self) -> None:
        if self.server_password is not None and self._pass != self.server_password:
            self.send(f":fake 464 {self.nick} :Password incorrect")
            self.send("ERROR :Closing link: bad password")
            return
        self.send(f":fake 001 {self.nick} :Welcome {self.nick}")
        self.send(f":fake 005 {self.nick} {self.isupport} :are supported by this server")
        self.send(f":fake 422 {self.nick} :MOTD File is missing")
        self.logged_in = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:  # noqa: C901, PLR0912 - one branch per protocol case reads best in one place
        self._writer = writer
        self.logged_in = False
        self._pass: str | None = None
        cap_negotiating = False
        while raw := await reader.readline():
            line = raw.decode().rstrip("\r\n")
            self.received.append(line)
            self._changed.set()
            words = line.split(" ")
            cmd, args = words[0], words[1:]
            trailing = line.split(" :", 1)[1] if " :" in line else (args[-1] if args else "")
            if self.logged_in and self.silent_after_login:
                continue
            if cmd == "CAP" and args[0] == "LS":
                if self.caps is None:
                    self.send(f":fake 421 {self.nick} CAP :Unknown command")
                    continue
                cap_negotiating = True
                self.send(f":fake CAP * LS :{self.caps}")
            elif cmd == "CAP" and args[0] == "REQ":
                self.send(f":fake CAP {self.nick} ACK :{trailing}")
            elif cmd == "CAP" and args[0] == "END":
                cap_negotiating = False
                self._welcome()
            elif cmd == "PASS":
                self._pass = args[0]
            elif cmd == "NICK":
                self.nick = args[0]
            elif cmd == "USER" and not cap_negotiating:
                self._welcome()
            elif cmd == "AUTHENTICATE" and args[0] == "PLAIN":
                self.send("AUTHENTICATE +")
            elif cmd == "AUTHENTICATE":
                _authzid, authcid, password = base64.b64decode(args[0]).decode().split("\0")
                if authcid == self.nick and password == self.sasl_password:
                    self.send(f":fake 900 {self.nick} {self.nick}!u@h {self.nick} :logged in")
                    self.send(f":fake 903 {self.nick} :SASL authentication successful")
                else:
                    self.send(f":fake 904 {self.nick} :SASL authentication failed")
            elif cmd == "MONITOR" and args[0] == "+":
                for target in args[1].split(","):
                    if target.lower() in self.online:
                        self.send(f":fake 730 {self.nick} :{target}!u@h")
                    else:
                        self.send(f":fake 731 {self.nick} :{target}")
            elif cmd == "PING":
                self.send(f":fake PONG fake :{trailing}")
            elif cmd == "PRIVMSG" and args[0].lower() not in self.online:
                self.send(f":fake 401 {self.nick} {args[0]} :No such nick")


def run(factory: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(factory())


def test_sasl_plain_login() -> None:
    async def scenario() -> None:
        async with ScriptedIrcd(sasl_password="hunter2") as ircd:
            session, events = make_session("saslnick", ircd.port, password="hunter2")
            await session.login()
            assert events.of("state")[-1][0] is ConnectionState.CONNECTED
            assert "AUTHENTICATE PLAIN" in ircd.received
            assert not [ln for ln in ircd.received if ln.startswith("PASS")]
            assert {"sasl", "message-tags"} <= session.caps
            await session.logout()

    run(scenario)


def test_sasl_rejected_is_bad_credentials() -> None:
    async def scenario() -> None:
        async with ScriptedIrcd(sasl_password="right") as ircd:
            session, events = make_session("saslnick", ircd.port, password="wrong")
            with pytest.raises(BadCredentialsError, match="SASL"):
                await session.login()
            assert events.of("state")[-1][0] is ConnectionState.BAD_CREDENTIALS

    run(scenario)


def test_server_without_cap_gets_pass() -> None:
    async def scenario() -> None:
        async with ScriptedIrcd(caps=None, server_password="pw") as ircd:
            session, _ = make_session("oldnick", ircd.port, password="pw")
            await session.login()
            assert ircd.received.index("PASS pw") < ircd.received.index("NICK oldnick")
            await session.logout()
        async with ScriptedIrcd(caps=None, server_password="pw") as ircd:
            session, _ = make_session("oldnick", ircd.port, password="nope")
            with pytest.raises(BadCredentialsError):
                await session.login()

    run(scenario)


def test_nickserv_identify() -> None:
    async def scenario() -> None:
        async with ScriptedIrcd(caps="") as ircd:
            session, _ = make_session("nsnick", ircd.port, password="pw", auth="nickserv")
            await session.login()
            await ircd.wait_received(lambda ln: ln == "PRIVMSG NickServ :IDENTIFY nsnick pw")
            assert not [ln for ln in ircd.received if ln.startswith(("PASS", "AUTHENTICATE"))]
            await session.logout()

    run(scenario)


def test_monitor_presence() -> None:
    async def scenario() -> None:
        async with ScriptedIrcd() as ircd:
            ircd.online.add("dave")
            session, events = make_session("monnick", ircd.port, ison_interval=60)
            await session.add_contact("Dave")  # before login: sent once logged in
            await session.login()
            assert session._monitor is True
            await ircd.wait_received(lambda ln: ln == "MONITOR + Dave")
            await events.wait_for("presence", lambda a: a == ("Dave", a[1]) and a[1].is_open)
            mark = events.mark()
            ircd.send(":fake 731 monnick :dave")
            await events.wait_for(
                "presence", lambda a: a[0] == "Dave" and a[1].status is Status.OFFLINE, since=mark
            )
            ircd.send(":fake 730 monnick :DAVE!u@h")
            await events.wait_for(
                "presence", lambda a: a[0] == "Dave" and a[1].status is Status.AVAILABLE, since=mark
            )
            await session.add_contact("erin")
            await ircd.wait_received(lambda ln: ln == "MONITOR + erin")
            await session.remove_contact("erin")
            await ircd.wait_received(lambda ln: ln == "MONITOR - erin")
            assert not [ln for ln in ircd.received if ln.startswith("ISON")]
            await session.logout()

    run(scenario)


def test_typing_with_message_tags() -> None:
    async def scenario() -> None:
        async with ScriptedIrcd() as ircd:
            ircd.online.add("dave")
            session, events = make_session("typenick", ircd.port)
            await session.login()
            await session.send_typing("dave", TypingState.COMPOSING)
            await ircd.wait_received(lambda ln: ln == "@+typing=active TAGMSG dave")
            ircd.send("@+typing=paused :dave!u@h TAGMSG typenick")
            assert await events.wait_for("typing") == ("dave", TypingState.PAUSED)
            await session.logout()

    run(scenario)


def test_answers_server_ping_and_detects_silent_server() -> None:
    async def scenario() -> None:
        async with ScriptedIrcd() as ircd:
            session, events = make_session("pingnick", ircd.port, keepalive_interval=0.3)
            await session.login()
            ircd.send("PING :tok-123")
            await ircd.wait_received(lambda ln: ln == "PONG tok-123")
            ircd.silent_after_login = True
            args = await events.wait_for(
                "state", lambda a: a[0] is ConnectionState.TRANSIENT_DISCONNECT
            )
            assert "ping timeout" in args[1]
            assert [ln for ln in ircd.received if ln.startswith("PING keepalive")]
            await session.logout()

    run(scenario)
