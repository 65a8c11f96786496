"""The IRC adapter against a real ngIRCd, with an independent raw client as peer."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from purplegw.presence import Presence, Status
from purplegw.protocols.base import (
    BadCredentialsError,
    ConnectionState,
    DeliveryError,
    TransientError,
    TypingState,
)
from purplegw.protocols.irc.session import NickInUseError
from tests.kit.ngircd import Ngircd, RawIrcClient
from tests.kit.ports import free_port

from .conftest import require_ngircd
from .irc_util import make_session

pytestmark = pytest.mark.timeout(60)

_ids = itertools.count(1)


def nick(base: str) -> str:
    """Unique nicks: the server is shared by every test of the session."""
    return f"{base}{next(_ids)}"


def run(coro):
    return asyncio.run(coro)


def test_private_messages_both_ways(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        me, peer_nick = nick("gwalice"), nick("rawbob")
        session, events = make_session(me, ngircd.port)
        await session.login()
        assert events.of("state")[0][0] is ConnectionState.CONNECTING
        assert events.of("state")[-1][0] is ConnectionState.CONNECTED
        peer = await RawIrcClient("127.0.0.1", ngircd.port, peer_nick).connect()
        try:
            await session.send_message(peer_nick, "hello Bob, ça va? ✓", "m1")
            line = await peer.wait_line(lambda ln: " PRIVMSG " in ln)
            assert line.startswith(f":{me}!")
            assert line.endswith(f"PRIVMSG {peer_nick} :hello Bob, ça va? ✓")

            await session.send_message(peer_nick, "/me waves", "m2")
            await peer.wait_line(
                lambda ln: ln.endswith(f"PRIVMSG {peer_nick} :\x01ACTION waves\x01")
            )

            peer.send(f"PRIVMSG {me} :hi from raw ünïcode")
            args = await events.wait_for("message")
            assert args == (peer_nick, "hi from raw ünïcode")
            peer.send(f"NOTICE {me} :a notice")
            peer.send(f"PRIVMSG {me} :\x01ACTION dances\x01")
            await events.wait_for("message", lambda a: a[1] == "/me dances")
            assert (peer_nick, "a notice") in events.of("message")
        finally:
            await peer.close()
            await session.logout()
        assert events.of("state")[-1][0] is ConnectionState.LOGGED_OUT

    run(scenario())


def test_long_message_is_split_on_utf8_boundaries(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        me, peer_nick = nick("gwsplit"), nick("rawsplit")
        session, _ = make_session(me, ngircd.port)
        await session.login()
        peer = await RawIrcClient("127.0.0.1", ngircd.port, peer_nick).connect()
        # No spaces: the split must fall between characters, never inside one.
        text = "aé€😀" * 150  # 1,500 characters, 1,650... bytes > 3 lines
        try:
            await session.send_message(peer_nick, text, "long")
            got: list[str] = []
            start = 0
            while "".join(got) != text:
                line = await peer.wait_line(lambda ln: " PRIVMSG " in ln, start=start)
                start = peer.lines.index(line, start) + 1
                assert len(line.encode()) + 2 <= 512
                got.append(line.split(" :", 1)[1])
            assert len(got) >= 3
        finally:
            await peer.close()
            await session.logout()

    run(scenario())


def test_message_to_absent_nick_is_480(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        session, _ = make_session(nick("gwlonely"), ngircd.port)
        await session.login()
        try:
            with pytest.raises(DeliveryError) as info:
                await session.send_message(nick("nobody"), "anyone?", "m")
            assert info.value.status_hint == 480
        finally:
            await session.logout()

    run(scenario())


def test_own_away_is_visible_to_peer(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        me, peer_nick = nick("gwaway"), nick("rawwatch")
        session, _ = make_session(me, ngircd.port)
        await session.login()
        peer = await RawIrcClient("127.0.0.1", ngircd.port, peer_nick).connect()
        try:
            await session.set_presence(Presence(Status.BUSY, note="On the phone"))
            mark = len(peer.lines)
            peer.send(f"PRIVMSG {me} :are you there?")
            line = await peer.wait_line(lambda ln: " 301 " in ln, start=mark)
            assert line.endswith(f"301 {peer_nick} {me} :On the phone")

            await session.set_presence(Presence(Status.AVAILABLE))
            mark = len(peer.lines)
            peer.send(f"WHOIS {me}")
            await peer.wait_line(lambda ln: " 318 " in ln, start=mark)
            assert not [ln for ln in peer.lines[mark:] if " 301 " in ln]

            # OFFLINE only marks away (logging out is the account actor's job).
            await session.set_presence(Presence(Status.OFFLINE))
            mark = len(peer.lines)
            peer.send(f"WHOIS {me}")
            line = await peer.wait_line(lambda ln: " 301 " in ln, start=mark)
            assert line.endswith(":Offline")
        finally:
            await peer.close()
            await session.logout()

    run(scenario())


@pytest.mark.parametrize("method", ["ison", "monitor"])
def test_contact_presence_tracked(ngircd: Ngircd, method: str) -> None:
    """ngIRCd 26 has no MONITOR: "monitor" must fall back to ISON polling."""

    async def scenario() -> None:
        me, carol = nick("gwwatch"), nick("rawcarol")
        session, events = make_session(me, ngircd.port, presence_method=method)
        await session.login()
        assert session._monitor is False
        assert events.of("roster") == [([],)]  # no watched nicks yet: an empty roster
        try:
            await session.add_contact(carol)
            assert events.of("roster_item") == [(carol, "both")]  # the watch list is the roster
            await events.wait_for(
                "presence", lambda a: a[0] == carol and a[1].status is Status.OFFLINE
            )
            mark = events.mark()
            peer = await RawIrcClient("127.0.0.1", ngircd.port, carol).connect()
            await events.wait_for("presence", lambda a: a[1].status is Status.AVAILABLE, since=mark)
            peer.send("AWAY :out for lunch")
            await events.wait_for(
                "presence",
                lambda a: a[1].status is Status.AWAY and a[1].note == "out for lunch",
                since=mark,
            )
            peer.send("AWAY")
            mark = events.mark()
            await events.wait_for("presence", lambda a: a[1].status is Status.AVAILABLE, since=mark)
            await peer.close()
            await events.wait_for("presence", lambda a: a[1].status is Status.OFFLINE, since=mark)

            await session.remove_contact(carol)
            assert events.of("roster_removed") == [(carol,)]
            mark = events.mark()
            peer = await RawIrcClient("127.0.0.1", ngircd.port, carol).connect()
            await asyncio.sleep(1.0)  # three poll intervals: nothing may arrive
            assert [e for e in events.events[mark:] if e[0] == "presence"] == []
            await peer.close()
        finally:
            await session.logout()

    run(scenario())


def test_the_next_session_of_the_account_watches_the_same_nicks(ngircd: Ngircd) -> None:
    """A reconnect is a new session: it reports and polls the nicks the last one watched."""

    async def scenario() -> None:
        me, carol = nick("gwagain"), nick("rawcarol")
        shared: dict = {}
        session, _events = make_session(me, ngircd.port, shared=shared)
        await session.login()
        await session.add_contact(carol)
        await session.logout()
        again, events = make_session(me, ngircd.port, shared=shared)
        await again.login()
        try:
            assert events.of("roster") == [([carol],)]
            await events.wait_for(
                "presence", lambda a: a[0] == carol and a[1].status is Status.OFFLINE
            )
            mark = events.mark()
            peer = await RawIrcClient("127.0.0.1", ngircd.port, carol).connect()
            await events.wait_for("presence", lambda a: a[1].status is Status.AVAILABLE, since=mark)
            await peer.close()
        finally:
            await again.logout()

    run(scenario())


def test_bad_server_password(ngircd_password: Ngircd) -> None:
    async def scenario() -> None:
        session, events = make_session(nick("gwpw"), ngircd_password.port, password="wrong")
        with pytest.raises(BadCredentialsError):
            await session.login()
        assert events.of("state")[-1][0] is ConnectionState.BAD_CREDENTIALS

        session, events = make_session(nick("gwpw"), ngircd_password.port, password="letmein")
        await session.login()
        assert events.of("state")[-1][0] is ConnectionState.CONNECTED
        await session.logout()

    run(scenario())


def test_unreachable_server_is_transient() -> None:
    async def scenario() -> None:
        session, events = make_session("gwnowhere", free_port("tcp"))
        with pytest.raises(TransientError) as info:
            await session.login()
        assert "127.0.0.1" in str(info.value)
        assert events.of("state")[-1][0] is ConnectionState.TRANSIENT_DISCONNECT

    run(scenario())


def test_nick_in_use(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        taken = nick("gwtaken")
        peer = await RawIrcClient("127.0.0.1", ngircd.port, taken).connect()
        try:
            session, _ = make_session(taken, ngircd.port)
            with pytest.raises(NickInUseError, match="already in use"):
                await session.login()
        finally:
            await peer.close()

    run(scenario())


def test_tls_login_verifies_certificate(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        assert ngircd.tls_port is not None
        session, _events = make_session(
            nick("gwtls"), ngircd.tls_port, tls=True, ca_file=str(ngircd.ca_file)
        )
        await session.login()
        assert session._writer.get_extra_info("ssl_object") is not None
        await session.logout()

        # Same server, no CA for its self-signed certificate: refused.
        session, _ = make_session(nick("gwtls"), ngircd.tls_port, tls=True)
        with pytest.raises(TransientError, match="(?i)certificate"):  # noqa: RUF043 - a literal message
            await session.login()

    run(scenario())


def test_typing_needs_message_tags(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        session, _ = make_session(nick("gwtype"), ngircd.port)
        await session.login()
        try:
            with pytest.raises(NotImplementedError):
                await session.send_typing("someone", TypingState.COMPOSING)
        finally:
            await session.logout()

    run(scenario())


def test_server_killed_reports_transient_disconnect() -> None:
    require_ngircd()

    async def scenario(server: Ngircd) -> None:
        session, events = make_session("gwvictim", server.port)
        await session.login()
        server.kill()
        args = await events.wait_for(
            "state", lambda a: a[0] is ConnectionState.TRANSIENT_DISCONNECT
        )
        assert "127.0.0.1" in args[1]
        with pytest.raises(TransientError):
            await session.send_message("anyone", "lost", "m")
        await session.logout()  # must not raise after the loss

    with Ngircd() as server:
        run(scenario(server))
