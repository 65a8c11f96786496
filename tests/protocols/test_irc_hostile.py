"""Hostile IRC peers against the adapter, on a real ngIRCd with independent raw clients.

Each test is one attack from issue 16: nicks with line breaks or other junk,
a failing presence poll, CTCP floods, NUL bytes, and control sequences aimed
at a phone's screen.  ``PURPLEGW_ATTACK_SCALE`` (``make attack``) multiplies
the flood sizes.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time

import pytest

from purplegw.protocols.base import (
    DeliveryError,
    InvalidContactError,
    UnacceptableContentError,
)
from purplegw.protocols.irc import protocol as irc
from tests.kit.ngircd import Ngircd, RawIrcClient

from .irc_util import make_session

pytestmark = pytest.mark.timeout(120)

SCALE = max(1, int(os.environ.get("PURPLEGW_ATTACK_SCALE", "1")))
_ids = itertools.count(1)

BAD_NICKS = [
    "bob\r\nQUIT :pwned",
    "bob\nPRIVMSG x :y",
    "bob\x00",
    "bob smith",
    "bob,carol",
    "#channel",
    "1bob",
    "-bob",
    "bob!u@h",
    "bób",
    "",
    "x" * 31,  # the test server's NICKLEN is 30
]


def nick(base: str) -> str:
    return f"{base}{next(_ids)}"


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("bad", BAD_NICKS)
def test_invalid_nick_is_refused_everywhere_it_enters(ngircd: Ngircd, bad: str) -> None:
    async def scenario() -> None:
        session, _ = make_session(nick("gwbad"), ngircd.port)
        await session.login()
        try:
            with pytest.raises(InvalidContactError) as info:
                await session.add_contact(bad)
            assert 400 <= info.value.status_hint < 500
            assert bad not in str(info.value) or not bad
            with pytest.raises(InvalidContactError):
                await session.send_message(bad, "hello", "m1")
            assert not session._watch
        finally:
            await session.logout()

    run(scenario())


def test_valid_rfc2812_nicks_are_accepted(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        session, events = make_session(nick("gwgood"), ngircd.port)
        await session.login()
        try:
            for good in ("bob", "[bob]", "b-o_b^", "{x}|`\\", "x" * 30):
                await session.add_contact(good)
            await events.wait_for("presence", lambda a: a[0] == "x" * 30)
        finally:
            await session.logout()

    run(scenario())


def test_poll_loop_survives_a_failing_poll(
    ngircd: Ngircd, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        peer_nick = nick("rawlate")
        session, events = make_session(nick("gwpoll"), ngircd.port, presence_method="ison")
        await session.login()
        real_poll = session._poll_once
        calls = {"n": 0}

        def flaky() -> None:
            calls["n"] += 1
            if calls["n"] <= 2:
                raise ValueError("line break in IRC parameter")
            real_poll()

        monkeypatch.setattr(session, "_poll_once", flaky)
        try:
            await session.add_contact(peer_nick)
            await events.wait_for("presence", lambda a: a[0] == peer_nick)
            peer = await RawIrcClient("127.0.0.1", ngircd.port, peer_nick).connect()
            try:
                # Only the poll can tell: ISON is the presence method.
                args = await events.wait_for(
                    "presence", lambda a: a[0] == peer_nick and a[1].status.value != "offline"
                )
                assert args
            finally:
                await peer.close()
            assert calls["n"] > 2
        finally:
            await session.logout()

    run(scenario())
    assert "presence poll failed" in caplog.text


async def _flood(peer: RawIrcClient, target: str, count: int) -> None:
    for i in range(count):
        peer.send(f"PRIVMSG {target} :\x01{'VERSION' if i % 2 else 'PING ' + str(i)}\x01")
        if i % 100 == 99:
            await peer._writer.drain()


def _replies(peer: RawIrcClient) -> int:
    return sum(1 for ln in peer.lines if " NOTICE " in ln and "\x01" in ln)


def test_ctcp_flood_from_one_sender_gets_bounded_replies(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        me, flooder_nick, friend_nick = nick("gwctcp"), nick("rawflood"), nick("rawfriend")
        session, events = make_session(me, ngircd.port)
        await session.login()
        flooder = await RawIrcClient("127.0.0.1", ngircd.port, flooder_nick).connect()
        friend = await RawIrcClient("127.0.0.1", ngircd.port, friend_nick).connect()
        count = 1000 * SCALE
        try:
            start = time.monotonic()
            await _flood(flooder, me, count)
            flooder.send(f"PRIVMSG {me} :done")
            await events.wait_for("message", lambda a: a == (flooder_nick, "done"), timeout=60)
            elapsed = time.monotonic() - start
            await asyncio.sleep(0.5)
            got = _replies(flooder)
            # burst 3, then 0.2/s per sender (overall 5 + 1/s is looser).
            assert 1 <= got <= 3 + 0.2 * elapsed + 1, (got, elapsed)
            assert session.ctcp_ignored >= count - got
            # The session still works for everyone else.
            friend.send(f"PRIVMSG {me} :still there?")
            await events.wait_for("message", lambda a: a == (friend_nick, "still there?"))
            await session.send_message(friend_nick, "yes", "m1")
            await friend.wait_line(lambda ln: ln.endswith(f"PRIVMSG {friend_nick} :yes"))
        finally:
            await flooder.close()
            await friend.close()
            await session.logout()

    run(scenario())


def test_ctcp_flood_from_many_senders_hits_the_overall_budget(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        me = nick("gwctcpall")
        # Generous per sender, so that only the account-wide budget bounds the answers.
        session, events = make_session(
            me, ngircd.port, ctcp_rate_per_sender=100.0, ctcp_burst_per_sender=100
        )
        await session.login()
        flooders = [
            await RawIrcClient("127.0.0.1", ngircd.port, nick("rawmany")).connect()
            for _ in range(4)
        ]
        try:
            start = time.monotonic()
            for flooder in flooders:
                await _flood(flooder, me, 250 * SCALE)
            for flooder in flooders:
                flooder.send(f"PRIVMSG {me} :done")
            for flooder in flooders:
                await events.wait_for(
                    "message", lambda a, f=flooder: a == (f.nick, "done"), timeout=60
                )
            elapsed = time.monotonic() - start
            await asyncio.sleep(0.5)
            got = sum(_replies(f) for f in flooders)
            assert 1 <= got <= 5 + 1.0 * elapsed + 1, (got, elapsed)
        finally:
            for flooder in flooders:
                await flooder.close()
            await session.logout()

    run(scenario())


def test_nul_in_a_message_is_488_and_nothing_is_sent(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        me, peer_nick = nick("gwnul"), nick("rawnul")
        session, _ = make_session(me, ngircd.port)
        await session.login()
        peer = await RawIrcClient("127.0.0.1", ngircd.port, peer_nick).connect()
        try:
            secret = "before\x00QUIT :after"
            with pytest.raises(UnacceptableContentError) as info:
                await session.send_message(peer_nick, secret, "m1")
            assert isinstance(info.value, DeliveryError)
            assert info.value.status_hint == 488
            assert "before" not in str(info.value)
            # Controls other than NUL are removed, not refused: the line goes out clean.
            await session.send_message(peer_nick, "ring\x07 \x1b[31mred\x1b[0m \x01x\x01", "m2")
            line = await peer.wait_line(lambda ln: " PRIVMSG " in ln)
            assert line.endswith(f"PRIVMSG {peer_nick} :ring red x")
            assert not any("before" in ln for ln in peer.lines)
        finally:
            await peer.close()
            await session.logout()

    run(scenario())


def test_formatting_escapes_and_bell_never_reach_the_phone(ngircd: Ngircd) -> None:
    async def scenario() -> None:
        me, peer_nick = nick("gwscreen"), nick("rawansi")
        session, events = make_session(me, ngircd.port)
        await session.login()
        peer = await RawIrcClient("127.0.0.1", ngircd.port, peer_nick).connect()
        try:
            peer.send(
                f"PRIVMSG {me} :\x02\x0304,01alert\x0f\x07\x07 \x1b[2J\x1b]0;t\x07"
                "\u202eevil\u202c \x1dok\x1d"
            )
            args = await events.wait_for("message", lambda a: a[0] == peer_nick)
            assert args == (peer_nick, "alert evil ok")
            peer.send(f"PRIVMSG {me} :\x0304\x07")  # nothing left to show: not delivered
            peer.send(f"PRIVMSG {me} :after")
            await events.wait_for("message", lambda a: a == (peer_nick, "after"))
            assert len(events.of("message")) == 2
        finally:
            await peer.close()
            await session.logout()

    run(scenario())


def test_is_valid_nick_follows_rfc2812() -> None:
    assert irc.is_valid_nick("Wiz")
    assert irc.is_valid_nick("a" * 64)
    assert not irc.is_valid_nick("a" * 65)
    assert not irc.is_valid_nick("a" * 10, max_length=9)
    for bad in BAD_NICKS[:-1]:
        assert not irc.is_valid_nick(bad), bad
