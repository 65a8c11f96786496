"""Building IRC sessions for the tests (not a test module)."""

from __future__ import annotations

import asyncio
from typing import Any

from purplegw.protocols.base import AccountCredentials, ProxySettings, SessionContext
from purplegw.protocols.irc import Adapter
from purplegw.protocols.irc.session import IrcSession
from tests.kit.ngircd import RecordingEvents


def make_session(
    nick: str,
    port: int,
    *,
    password: str = "",
    proxy: ProxySettings | None = None,
    host: str = "127.0.0.1",
    shared: dict[Any, Any] | None = None,
    **config: Any,
) -> tuple[IrcSession, RecordingEvents]:
    events = RecordingEvents()
    cfg = {
        "tls": False,
        "server": f"{host}:{port}",
        "ison_interval": 0.3,
        "connect_timeout": 10,
        **config,
    }
    creds = AccountCredentials(1, "sip:alice@gw.test", f"{nick}@{host}", "irc", password)
    ctx = SessionContext(loop=asyncio.get_running_loop(), events=events, config=cfg, proxy=proxy)
    if shared is not None:
        ctx.shared = shared
    session = Adapter().create_session(creds, ctx)
    assert isinstance(session, IrcSession)
    return session, events
