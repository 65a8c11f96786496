"""The IRC account id (``ext_user``): ``nick@server[:port]``.

The original module took libpurple's ``nick@server``; purplegw keeps that and
adds an optional port (``nick@irc.example.net:6697``, IPv6 literals in
brackets: ``nick@[2001:db8::1]:6697``).  Without a port: 6697 with TLS,
6667 without.  The config key ``server`` ("host:port") overrides where to
connect while the id keeps naming the network.
"""

from __future__ import annotations

from dataclasses import dataclass

TLS_PORT = 6697
PLAIN_PORT = 6667


class InvalidAccountError(ValueError):
    """``ext_user`` is not ``nick@server[:port]``."""


@dataclass(frozen=True)
class IrcAccountId:
    nick: str
    host: str
    port: int
    tls: bool

    @property
    def server_label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``"host"``, ``"host:port"``, ``"[v6]"`` or ``"[v6]:port"`` -> (host, port)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise InvalidAccountError(f"unclosed IPv6 bracket in {text!r}")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise InvalidAccountError(f"no host in {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidAccountError(f"bad port in {text!r}")
    return host, int(port_text)


def parse_account(ext_user: str, *, server: str | None = None, tls: bool = True) -> IrcAccountId:
    nick, sep, where = ext_user.partition("@")
    if not sep or not nick or not where:
        raise InvalidAccountError(f"IRC account must be nick@server[:port], got {ext_user!r}")
    if any(ch in nick for ch in " ,*?!@:#&\r\n\0"):
        raise InvalidAccountError(f"{nick!r} is not a valid IRC nick")
    default_port = TLS_PORT if tls else PLAIN_PORT
    host, port = split_host_port(server or where, default_port)
    return IrcAccountId(nick=nick, host=host, port=port, tls=tls)
