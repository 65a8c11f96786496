"""One IRC account: login, private messages, presence by MONITOR or ISON.

The session speaks IRC through ``protocol`` (sans-IO) over one asyncio
stream from ``purplegw.protocols.proxy.open_connection``.  It never
reconnects by itself: a lost connection is reported as
``TRANSIENT_DISCONNECT`` and the account actor decides when to log in again.

Login sequence (IRCv3 capability negotiation, then RFC 2812 registration)::

    CAP LS 302                 -> CAP * LS :... (or 421/451: no CAP support)
    [PASS pw]                  only when SASL is not used
    NICK / USER
    CAP REQ :sasl ...          when offered, then AUTHENTICATE PLAIN
    CAP END
    001 .. 005 .. 376/422      login() returns here
    [PRIVMSG NickServ :IDENTIFY nick pw]   auth = "nickserv"
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import itertools
import logging
import ssl
from typing import Any

from purplegw.presence import ContactPresence, Presence, Status
from purplegw.protocols import proxy
from purplegw.protocols import text as text_filter
from purplegw.protocols.base import (
    AccountCredentials,
    AuthorizationAnswer,
    BadCredentialsError,
    ConnectionState,
    DeliveryError,
    InvalidContactError,
    RosterItem,
    Session,
    SessionContext,
    TransientError,
    TypingState,
    UnacceptableContentError,
)
from purplegw.protocols.irc import protocol as irc
from purplegw.protocols.irc.account import IrcAccountId, parse_account
from purplegw.sip.ratelimit import ALLOW, RateLimiter

logger = logging.getLogger(__name__)
wire_logger = logging.getLogger("purplegw.protocols.irc.wire")


class NickInUseError(TransientError):
    """The account's nick is taken (often by our own previous, dying connection)."""


# Numerics (RFC 1459/2812, IRCv3).
RPL_WELCOME = "001"
RPL_ISUPPORT = "005"
RPL_USERHOST = "302"
RPL_AWAY = "301"
RPL_ISON = "303"
RPL_UNAWAY = "305"
RPL_NOWAWAY = "306"
RPL_ENDOFWHOIS = "318"
RPL_ENDOFMOTD = "376"
ERR_NOMOTD = "422"
ERR_NOSUCHNICK = "401"
ERR_CANNOTSENDTOCHAN = "404"
ERR_UNKNOWNCOMMAND = "421"
ERR_ERRONEUSNICKNAME = "432"
ERR_NICKNAMEINUSE = "433"
ERR_NICKCOLLISION = "436"
ERR_NOTREGISTERED = "451"
ERR_PASSWDMISMATCH = "464"
ERR_YOUREBANNEDCREEP = "465"
RPL_NAMREPLY = "353"
RPL_ENDOFNAMES = "366"
ERR_NOSUCHCHANNEL = "403"
ERR_TOOMANYCHANNELS = "405"
ERR_CHANNELISFULL = "471"
ERR_INVITEONLYCHAN = "473"
ERR_BANNEDFROMCHAN = "474"
ERR_BADCHANNELKEY = "475"
ERR_NEEDREGGEDNICK = "477"
#: A refused JOIN, as the SIP status and what it means (the server's text follows).
JOIN_ERRORS = {
    ERR_NOSUCHCHANNEL: (404, "no such channel"),
    ERR_TOOMANYCHANNELS: (403, "too many channels"),
    ERR_CHANNELISFULL: (503, "the channel is full"),
    ERR_INVITEONLYCHAN: (403, "invite-only channel"),
    ERR_BANNEDFROMCHAN: (403, "banned from the channel"),
    ERR_BADCHANNELKEY: (403, "the channel needs a key"),
    ERR_NEEDREGGEDNICK: (403, "the channel needs a registered nick"),
}
#: Seconds a JOIN waits for the server's answer.
JOIN_TIMEOUT = 20.0
#: Channel member prefixes (RFC 2812 NAMES, ISUPPORT PREFIX) stripped from NAMES replies.
MEMBER_PREFIXES = "~&@%+"
RPL_MONONLINE = "730"
RPL_MONOFFLINE = "731"
ERR_MONLISTFULL = "734"
RPL_LOGGEDIN = "900"
RPL_SASLSUCCESS = "903"
ERR_SASLFAIL = "904"
ERR_SASLTOOLONG = "905"
ERR_SASLABORTED = "906"
ERR_SASLALREADY = "907"
RPL_SASLMECHS = "908"

# Seconds to wait for the answer to CAP LS before assuming no CAP support.
_CAP_WAIT = 5.0

# Capabilities we use when the server offers them.
WANTED_CAPS = ("message-tags", "away-notify", "multi-prefix")

# Away reasons sent for statuses that have no note of their own.
_AWAY_WORDS = {
    Status.AWAY: "Away",
    Status.EXTENDED_AWAY: "Extended away",
    Status.BUSY: "Busy",
    Status.OFFLINE: "Offline",
}

_TYPING_TAG = {
    TypingState.COMPOSING: "active",
    TypingState.PAUSED: "paused",
    TypingState.ACTIVE: "done",
    TypingState.INACTIVE: "done",
    TypingState.GONE: "done",
}
_TYPING_FROM_TAG = {
    "active": TypingState.COMPOSING,
    "paused": TypingState.PAUSED,
    "done": TypingState.ACTIVE,
}


_CHANNEL_COMMANDS = frozenset({"JOIN", "PART", "KICK", RPL_NAMREPLY, RPL_ENDOFNAMES, *JOIN_ERRORS})


class _Channel:
    """A channel the session joined (or is joining)."""

    def __init__(self, name: str, done: asyncio.Future[None]) -> None:
        self.name = name  # as the SIP side wrote it: room events carry it back
        self.done = done  # set at the end of NAMES (joined), or the JOIN's error
        self.joined = False
        self.nicks: set[str] = set()


class IrcSession(Session):
    """A logged-in IRC nick.  Contacts are nicks."""

    def __init__(self, credentials: AccountCredentials, context: SessionContext) -> None:
        super().__init__(credentials, context)
        cfg = context.config
        self.account: IrcAccountId = parse_account(
            credentials.ext_user, server=cfg.get("server") or None, tls=bool(cfg.get("tls", True))
        )
        self.nick = self.account.nick
        self.caps: set[str] = set()
        self.isupport: dict[str, str] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lines = irc.LineBuffer()
        self._tasks: list[asyncio.Task[Any]] = []
        self._closing = False
        self._logged_in = False
        self._disconnect_reported = False
        # Contacts we watch: folded nick -> the spelling the SIP side used.
        # Kept per account in the process's shared state: the next session of
        # the account (a reconnect, a login after a logout) watches them again
        # and reports them as its roster; nobody else re-adds them.
        self._watch: dict[str, str] = context.shared.setdefault(
            ("irc.watch", credentials.account_id), {}
        )
        # Last presence reported per folded nick (None: not reported yet).
        self._known: dict[str, Presence] = {}
        self._away_notes: dict[str, str] = {}
        self._monitor = False
        # Replies awaited by send_message/poll: token -> future of the lines seen.
        self._pings: dict[str, asyncio.Future[None]] = {}
        self._no_such_nick: set[str] = set()
        # ISON batches in the order sent: each 303 reply answers the oldest.
        self._ison_batches: collections.deque[list[str]] = collections.deque()
        self._tokens = itertools.count(1)
        self._send_lock = asyncio.Lock()
        self._last_rx = 0.0
        # CTCP replies: per sender host and for the whole account, so that a
        # flood of CTCP requests (from one user or many) cannot make us send
        # enough to be kicked for flooding.  Rates are per second.
        self._ctcp_per_sender = RateLimiter(
            float(self._cfg("ctcp_rate_per_sender", 0.2)),
            float(self._cfg("ctcp_burst_per_sender", 3)),
            max_keys=1024,
        )
        self._ctcp_overall = RateLimiter(
            float(self._cfg("ctcp_rate", 1.0)), float(self._cfg("ctcp_burst", 5)), max_keys=1
        )
        self.ctcp_replies = 0
        self.ctcp_ignored = 0
        # Channels joined (folded name -> _Channel), and JOINs under way.
        self._channels: dict[str, _Channel] = {}

    # --- config shortcuts ----------------------------------------------------------

    def _cfg(self, key: str, default: Any) -> Any:
        value = self.context.config.get(key, default)
        return default if value is None else value

    @property
    def casemapping(self) -> str:
        return self.isupport.get("CASEMAPPING", "rfc1459")

    def fold(self, nick: str) -> str:
        return irc.casefold(nick, self.casemapping)

    def _check_nick(self, contact: str) -> None:
        """Refuse a contact that is no nick before it reaches a line (or the watch list)."""
        nicklen = self.isupport.get("NICKLEN", "")
        limit = int(nicklen) if nicklen.isdigit() and int(nicklen) > 0 else irc.DEFAULT_MAX_NICK
        if not irc.is_valid_nick(contact, limit):
            raise InvalidContactError("not a valid IRC nick")

    def _events(self):
        return self.context.events

    def _roster_event(self, name: str, *args: Any) -> None:
        """Report the watch list as the roster (IRC has none on the server)."""
        callback = getattr(self.context.events, name, None)
        if callback is None:
            return  # events written before rosters
        try:
            callback(*args)
        except Exception:
            logger.exception("%s callback failed", name)

    # --- I/O ---------------------------------------------------------------------------

    def _send(
        self, command: str, *params: str, tags: dict[str, str] | None = None, secret: bool = False
    ) -> None:
        """Write one line; ``secret`` lines (and PASS, AUTHENTICATE) are logged without params."""
        if self._writer is None or self._writer.is_closing():
            raise TransientError(f"not connected to {self.account.server_label}")
        data = irc.serialize(irc.message(command, *params, tags=tags))
        if wire_logger.isEnabledFor(logging.DEBUG):
            hidden = secret or command in ("PASS", "AUTHENTICATE")
            shown = command.encode() if hidden else data
            wire_logger.debug(">> %s", shown.rstrip())
        self._writer.write(data)

    async def _read_messages(self) -> list[irc.Message]:
        assert self._reader is not None
        data = await self._reader.read(65536)
        if not data:
            raise ConnectionResetError("server closed the connection")
        self._last_rx = asyncio.get_running_loop().time()
        msgs = self._lines.feed(data)
        for msg in msgs:
            wire_logger.debug("<< %s %s %s", msg.prefix or "", msg.command, msg.params)
        return msgs

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.account.tls:
            return None
        ca_file = self._cfg("ca_file", "") or None
        key = ("irc-ssl-context", ca_file)
        shared = self.context.shared
        if key not in shared:
            # One context per process and CA file: building one per account
            # costs ~1 MB and tens of ms (measured with slixmpp, same for us).
            ctx = ssl.create_default_context(cafile=ca_file)
            shared[key] = ctx
        return shared[key]

    # --- login ---------------------------------------------------------------------------

    async def login(self) -> None:
        events = self._events()
        events.on_connection_state(ConnectionState.CONNECTING)
        timeout = float(self._cfg("connect_timeout", 30))
        try:
            self._reader, self._writer = await proxy.open_connection(
                self.account.host,
                self.account.port,
                proxy=self.context.proxy,
                ssl=self._ssl_context(),
                server_hostname=self.account.host,
                timeout=timeout,
            )
        except TransientError as exc:
            events.on_connection_state(ConnectionState.TRANSIENT_DISCONNECT, str(exc))
            raise
        try:
            async with asyncio.timeout(timeout):
                await self._register()
        except BadCredentialsError as exc:
            await self._close()
            events.on_connection_state(ConnectionState.BAD_CREDENTIALS, str(exc))
            raise
        except TransientError as exc:
            await self._close()
            events.on_connection_state(ConnectionState.TRANSIENT_DISCONNECT, str(exc))
            raise
        except TimeoutError as exc:
            await self._close()
            reason = f"IRC login to {self.account.server_label} timed out after {timeout}s"
            events.on_connection_state(ConnectionState.TRANSIENT_DISCONNECT, reason)
            raise TransientError(reason) from exc
        except OSError as exc:
            await self._close()
            reason = f"IRC connection to {self.account.server_label} lost during login: {exc}"
            events.on_connection_state(ConnectionState.TRANSIENT_DISCONNECT, reason)
            raise TransientError(reason) from exc
        self._logged_in = True
        method = self._cfg("presence_method", "auto")
        self._monitor = "MONITOR" in self.isupport and method in ("auto", "monitor")
        if method == "monitor" and not self._monitor:
            logger.warning(
                "%s: presence_method=monitor but the server has no MONITOR; using ISON",
                self.account.server_label,
            )
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"irc-read-{self.nick}"),
            asyncio.create_task(self._keepalive_loop(), name=f"irc-keepalive-{self.nick}"),
            asyncio.create_task(self._poll_loop(), name=f"irc-poll-{self.nick}"),
        ]
        if self._watch and self._monitor:
            self._monitor_add(list(self._watch.values()))
        self._roster_event("on_roster", [_watched(nick) for nick in self._watch.values()])
        events.on_connection_state(ConnectionState.CONNECTED)

    async def _register(self) -> None:
        password = self.credentials.password
        auth = self._cfg("auth", "auto")
        realname = self._cfg("realname", "") or self.nick
        self._send("CAP", "LS", "302")
        try:
            # Servers without CAP answer 421/451; one that stays silent until
            # NICK/USER is treated as having no CAP after a short wait.
            async with asyncio.timeout(_CAP_WAIT):
                offered = await self._cap_ls()
        except TimeoutError:
            offered = None
        use_sasl = bool(password) and "sasl" in (offered or {}) and auth in ("auto", "sasl")
        if auth == "sasl" and not use_sasl:
            raise BadCredentialsError(
                f'{self.account.server_label} does not offer SASL (auth = "sasl")'
            )
        if password and not use_sasl and auth in ("auto", "pass"):
            self._send("PASS", password)
        self._send("NICK", self.nick)
        self._send("USER", self._cfg("username", "") or self.nick, "0", "*", realname)
        req_sent = False
        if offered is not None:
            wanted = [c for c in WANTED_CAPS if c in offered]
            if use_sasl:
                wanted.append("sasl")
            if wanted:
                self._send("CAP", "REQ", " ".join(wanted))
                req_sent = True
            else:
                self._send("CAP", "END")
        await self._until_welcome(use_sasl=use_sasl, cap_open=req_sent)
        if password and auth == "nickserv":
            # NickServ has no standard reply; whatever it answers arrives as a
            # NOTICE that is logged.  Networks with services mostly offer SASL.
            self._send(
                "PRIVMSG",
                self._cfg("nickserv", "NickServ"),
                f"IDENTIFY {self.nick} {password}",
                secret=True,
            )

    async def _cap_ls(self) -> dict[str, str] | None:
        """Offered capabilities, or None when the server knows no CAP."""
        offered: dict[str, str] = {}
        while True:
            for msg in await self._read_messages():
                if msg.command == "CAP" and msg.param(1).upper() == "LS":
                    for token in msg.params[-1].split():
                        name, _, value = token.partition("=")
                        offered[name] = value
                    # "CAP * LS * :..." means more lines follow (302 multiline).
                    if msg.param(2) != "*":
                        return offered
                elif msg.command in (ERR_UNKNOWNCOMMAND, ERR_NOTREGISTERED):
                    return None
                else:
                    self._handle_early(msg)

    async def _until_welcome(self, *, use_sasl: bool, cap_open: bool) -> None:  # noqa: C901, PLR0912 - one branch per protocol case reads best in one place
        """Finish CAP/SASL, then wait for the end of the MOTD (ISUPPORT is known)."""
        welcomed = False
        sasl_started = False
        while True:
            for msg in await self._read_messages():
                cmd = msg.command
                if cmd == "CAP":
                    sub = msg.param(1).upper()
                    if sub == "ACK":
                        self.caps.update(c.lstrip("-~=") for c in msg.params[-1].split())
                    if sub in ("ACK", "NAK") and cap_open:
                        if use_sasl and not sasl_started:
                            if "sasl" not in self.caps:
                                raise BadCredentialsError(
                                    f"{self.account.server_label} refused the SASL capability"
                                )
                            self._send("AUTHENTICATE", "PLAIN")
                            sasl_started = True
                        elif not use_sasl:
                            self._send("CAP", "END")
                            cap_open = False
                elif cmd == "AUTHENTICATE" and msg.param(0) == "+":
                    self._send_sasl_plain()
                elif cmd == RPL_SASLSUCCESS and cap_open:
                    self._send("CAP", "END")
                    cap_open = False
                elif cmd in (ERR_SASLFAIL, ERR_SASLTOOLONG, ERR_SASLABORTED):
                    raise BadCredentialsError(
                        f"{self.account.server_label} rejected SASL PLAIN for "
                        f"{self.nick}: {msg.params[-1]}"
                    )
                elif cmd == RPL_WELCOME:
                    welcomed = True
                    if msg.params:
                        self.nick = msg.params[0]
                elif cmd == RPL_ISUPPORT:
                    self.isupport.update(irc.parse_isupport(msg.params))
                elif cmd in (RPL_ENDOFMOTD, ERR_NOMOTD) and welcomed:
                    return
                else:
                    self._handle_early(msg)

    def _send_sasl_plain(self) -> None:
        authcid = self._cfg("sasl_username", "") or self.nick
        payload = base64.b64encode(f"\0{authcid}\0{self.credentials.password}".encode()).decode(
            "ascii"
        )
        # RFC 4616 over IRCv3 SASL: 400-byte chunks, "+" ends an exact multiple.
        for i in range(0, len(payload), 400):
            self._send("AUTHENTICATE", payload[i : i + 400])
        if len(payload) % 400 == 0:
            self._send("AUTHENTICATE", "+")

    def _handle_early(self, msg: irc.Message) -> None:
        """Lines that can arrive at any time during registration."""
        cmd = msg.command
        label = self.account.server_label
        if cmd == "PING":
            self._send("PONG", *msg.params[-1:])
        elif cmd == ERR_PASSWDMISMATCH:
            raise BadCredentialsError(f"{label} rejected the password for {self.nick}")
        elif cmd == ERR_YOUREBANNEDCREEP:
            raise BadCredentialsError(f"{label} banned {self.nick}: {msg.params[-1]}")
        elif cmd in (ERR_NICKNAMEINUSE, ERR_NICKCOLLISION):
            raise NickInUseError(f"nick {self.nick!r} is already in use on {label}")
        elif cmd == ERR_ERRONEUSNICKNAME:
            raise BadCredentialsError(f"{label} does not accept the nick {self.nick!r}")
        elif cmd == "ERROR":
            text = msg.param(-1)
            if "password" in text.lower():
                raise BadCredentialsError(f"{label} closed the login: {text}")
            raise TransientError(f"{label} closed the login: {text}")
        elif cmd == "NOTICE":
            logger.debug("%s notice during login: %s", label, msg.param(-1))

    # --- running connection ----------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "connection closed"
        try:
            while True:
                for msg in await self._read_messages():
                    try:
                        self._dispatch(msg)
                    except TransientError:
                        raise
                    except Exception:
                        logger.exception("%s: error handling %s", self.account.server_label, msg)
        except asyncio.CancelledError:
            raise
        except (OSError, irc.IrcParseError, TransientError) as exc:
            reason = str(exc) or type(exc).__name__
        await self._lost(f"{self.account.server_label}: {reason}")

    async def _lost(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(TransientError(reason))
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await self._close()
        self._logged_in = False
        if not self._disconnect_reported:
            self._disconnect_reported = True
            self._events().on_connection_state(ConnectionState.TRANSIENT_DISCONNECT, reason)

    async def _keepalive_loop(self) -> None:
        interval = float(self._cfg("keepalive_interval", 60))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            idle = loop.time() - self._last_rx
            if idle >= 2 * interval:
                await self._lost(
                    f"{self.account.server_label}: no data for {idle:.0f}s (ping timeout)"
                )
                return
            if idle >= interval:
                with contextlib.suppress(TransientError):
                    self._send("PING", f"keepalive-{next(self._tokens)}")

    def _dispatch(self, msg: irc.Message) -> None:  # noqa: C901, PLR0912 - one branch per protocol case reads best in one place
        cmd = msg.command
        if cmd == "PING":
            self._send("PONG", *msg.params[-1:])
        elif cmd == "PONG":
            token = msg.param(-1)
            fut = self._pings.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif cmd in ("PRIVMSG", "NOTICE"):
            self._on_privmsg(msg)
        elif cmd == "TAGMSG":
            self._on_tagmsg(msg)
        elif cmd in (ERR_NOSUCHNICK, ERR_CANNOTSENDTOCHAN):
            self._no_such_nick.add(self.fold(msg.param(1)))
        elif cmd == RPL_MONONLINE:
            for target in msg.param(-1).split(","):
                self._set_online(target.split("!", 1)[0], online=True)
        elif cmd == RPL_MONOFFLINE:
            for target in msg.param(-1).split(","):
                self._set_online(target.split("!", 1)[0], online=False)
        elif cmd == ERR_MONLISTFULL:
            logger.warning("%s: MONITOR list full, falling back to ISON", self.account.server_label)
            self._monitor = False
        elif cmd == RPL_ISON:
            self._on_ison(msg.param(-1).split())
        elif cmd == RPL_USERHOST:
            self._on_userhost(msg.param(-1).split())
        elif cmd == RPL_AWAY:
            if self.fold(msg.param(1)) in self._watch:
                self._away_notes[self.fold(msg.param(1))] = msg.param(-1)
            self._set_away(msg.param(1), away=True)
        elif cmd == "AWAY":
            # away-notify: only for contacts sharing a channel, but cheap to honour.
            if msg.nick:
                if msg.params and self.fold(msg.nick) in self._watch:
                    self._away_notes[self.fold(msg.nick)] = msg.param(-1)
                self._set_away(msg.nick, away=bool(msg.params))
        elif cmd in _CHANNEL_COMMANDS:
            self._on_channel(msg)
        elif cmd == "QUIT" and msg.nick:
            for channel in self._channels.values():
                if msg.nick in channel.nicks:
                    channel.nicks.discard(msg.nick)
                    if channel.joined:
                        self._events().on_room_occupants(
                            channel.name, sorted(channel.nicks, key=self.fold)
                        )
            self._set_online(msg.nick, online=False)
        elif cmd == "NICK" and msg.nick:
            for channel in self._channels.values():
                if msg.nick in channel.nicks:
                    channel.nicks.discard(msg.nick)
                    channel.nicks.add(msg.param(0))
            if self.fold(msg.nick) == self.fold(self.nick):
                self.nick = msg.param(0)
        elif cmd == "ERROR" and not self._closing:
            raise TransientError(f"server closed the link: {msg.param(-1)}")

    # --- messages --------------------------------------------------------------------------

    def _on_privmsg(self, msg: irc.Message) -> None:
        sender = msg.nick
        target = msg.param(0)
        if not sender or ("." in sender and "!" not in (msg.prefix or "")):
            # Server notices (prefix is the server name) are not from a contact.
            logger.info("%s: server notice: %s", self.account.server_label, msg.param(-1))
            return
        channel = self._channels.get(self.fold(target))
        if channel is None and self.fold(target) != self.fold(self.nick):
            return  # a channel the SIP user is not in
        text = msg.param(-1)
        ctcp = irc.ctcp_parse(text)
        if ctcp is not None:
            command, arg = ctcp
            if command == "ACTION":
                text = f"/me {arg}"
            else:
                if msg.command == "PRIVMSG" and command in ("VERSION", "PING"):
                    self._answer_ctcp(msg, sender, command, arg)
                return
        text = text_filter.irc_for_phone(text)
        if not text.strip():
            return  # nothing left to show (only colour codes or controls)
        if channel is not None:
            if channel.joined and msg.command == "PRIVMSG":
                self._events().on_room_message(
                    channel.name, sender, text, msg.tags.get("msgid"), None, is_history=False
                )
            return
        contact = self._watch.get(self.fold(sender), sender)
        self._events().on_message(contact, text, msg.tags.get("msgid"))

    def _answer_ctcp(self, msg: irc.Message, sender: str, command: str, arg: str) -> None:
        # Keyed by host: a flooder changes nicks more easily than hosts.
        host = (msg.prefix or sender).rpartition("@")[2] or sender
        now = asyncio.get_running_loop().time()
        if (
            self._ctcp_per_sender.hit(host, now) is not ALLOW
            or self._ctcp_overall.hit("*", now) is not ALLOW
        ):
            self.ctcp_ignored += 1
            if self.ctcp_ignored in (1, 100) or self.ctcp_ignored % 1000 == 0:
                logger.info(
                    "%s: %d CTCP request(s) left unanswered (throttled), last from %s",
                    self.account.server_label,
                    self.ctcp_ignored,
                    sender,
                )
            return
        self.ctcp_replies += 1
        if command == "VERSION":
            self._send("NOTICE", sender, irc.ctcp("VERSION", "purplegw"))
        else:
            # The PING argument is echoed: bounded, and without controls (no \x01).
            token = text_filter.strip_controls(arg)[:32]
            self._send("NOTICE", sender, irc.ctcp("PING", token))

    def _on_tagmsg(self, msg: irc.Message) -> None:
        typing = msg.tags.get("+typing")
        if typing and msg.nick and self.fold(msg.param(0)) == self.fold(self.nick):
            state = _TYPING_FROM_TAG.get(typing)
            if state is not None:
                contact = self._watch.get(self.fold(msg.nick), msg.nick)
                self._events().on_typing(contact, state)

    def _max_text_bytes(self, target: str) -> int:
        # The server relays ":nick!user@host PRIVMSG target :text\r\n" within
        # 512 bytes; user and host are not known to us, so reserve the most a
        # server commonly allows (10 + 63).
        overhead = len(f":{self.nick}!~{'u' * 10}@{'h' * 63} PRIVMSG {target} :\r\n".encode())
        return max(64, irc.MAX_LINE - overhead)

    async def send_message(
        self,
        contact: str,
        text: str,
        message_id: str,  # noqa: ARG002 - the base signature
        receipt: bool = False,  # noqa: FBT001, FBT002, ARG002 - positional: requests carry args as a tuple
    ) -> None:
        self._check_nick(contact)
        if "\0" in text:
            # RFC 2812 2.3.1: no NUL anywhere in a line.  A NUL means binary
            # content, which is refused rather than silently cut.
            raise UnacceptableContentError("NUL is not allowed in IRC messages")
        if not self._logged_in:
            raise TransientError(f"not connected to {self.account.server_label}")
        await self._privmsg(
            contact, text, missing=(480, f"{contact} is not online on {self.account.server_label}")
        )

    async def _privmsg(self, target: str, text: str, *, missing: tuple[int, str]) -> None:
        """PRIVMSG ``target`` (a nick or channel) in as many lines as it takes, then a round trip.

        ``missing``: the status and reason when the server refuses the target
        (ERR_NOSUCHNICK, ERR_CANNOTSENDTOCHAN).
        """
        contact = target
        text = text_filter.from_phone(text)
        action = text.startswith("/me ")
        body = text[4:] if action else text
        limit = self._max_text_bytes(contact) - (len(irc.ctcp("ACTION")) + 1 if action else 0)
        chunks = irc.split_utf8(body, limit) or ([""] if action else [])
        if not chunks:
            return
        async with self._send_lock:
            folded = self.fold(contact)
            self._no_such_nick.discard(folded)
            for chunk in chunks:
                self._send("PRIVMSG", contact, irc.ctcp("ACTION", chunk) if action else chunk)
            # IRC acknowledges nothing; a PING after the PRIVMSGs is answered
            # after any ERR_NOSUCHNICK for them (servers answer in order).
            await self._round_trip()
            if folded in self._no_such_nick:
                self._no_such_nick.discard(folded)
                raise DeliveryError(missing[1], status_hint=missing[0])

    # --- channels (group chat) -------------------------------------------------------------

    def _check_channel(self, room: str) -> None:
        chantypes = self.isupport.get("CHANTYPES", "#&") or "#&"
        if (
            len(room) < 2
            or room[0] not in chantypes
            or any(c in room for c in " ,\x07\r\n\0")
            or len(room.encode()) > 200
        ):
            raise InvalidContactError("not a valid IRC channel")

    async def is_room(self, contact: str) -> bool:
        chantypes = self.isupport.get("CHANTYPES", "#&") or "#&"
        return bool(contact) and contact[0] in chantypes

    async def join_room(
        self, room: str, nick: str, history: int = 0, since: float | None = None
    ) -> list[str]:
        """JOIN; the nick is the connection's (one per server), no history (IRC keeps none)."""
        del nick, history, since
        self._check_channel(room)
        if not self._logged_in:
            raise TransientError(f"not connected to {self.account.server_label}")
        folded = self.fold(room)
        channel = self._channels.get(folded)
        if channel is not None and channel.joined:
            self._events().on_room_joined(channel.name, self.nick, sorted(channel.nicks))
            return sorted(channel.nicks)
        if channel is None or channel.done.done():
            channel = self._channels[folded] = _Channel(
                room, asyncio.get_running_loop().create_future()
            )
            self._send("JOIN", room)
        try:
            async with asyncio.timeout(JOIN_TIMEOUT):
                await asyncio.shield(channel.done)
        except TimeoutError:
            self._channels.pop(folded, None)
            raise DeliveryError(f"{room}: the server did not answer the JOIN", 504) from None
        except DeliveryError:
            self._channels.pop(folded, None)
            raise
        self._events().on_room_joined(channel.name, self.nick, sorted(channel.nicks))
        return sorted(channel.nicks)

    async def leave_room(self, room: str) -> None:
        self._check_channel(room)
        if self._channels.pop(self.fold(room), None) is not None and self._logged_in:
            self._send("PART", room)

    async def send_room_message(self, room: str, text: str, message_id: str) -> None:  # noqa: ARG002 - the base signature
        self._check_channel(room)
        channel = self._channels.get(self.fold(room))
        if channel is None or not channel.joined:
            raise DeliveryError("not in this channel", 404)
        await self._privmsg(room, text, missing=(403, "cannot send to the channel"))

    async def room_occupants(self, room: str) -> list[str]:
        channel = self._channels.get(self.fold(room))
        if channel is None or not channel.joined:
            raise DeliveryError("not in this channel", 404)
        return sorted(channel.nicks, key=self.fold)

    async def change_nick(self, room: str, nick: str) -> None:
        """NICK: on IRC the nick is the connection's, so it changes in every channel."""
        del room
        self._check_nick(nick)
        if not self._logged_in:
            raise TransientError(f"not connected to {self.account.server_label}")
        async with self._send_lock:
            self._send("NICK", nick)
            await self._round_trip()
        if self.fold(self.nick) != self.fold(nick):
            raise DeliveryError(f"nick {nick} is in use or not allowed", 409)

    def _on_channel(self, msg: irc.Message) -> None:  # noqa: C901, PLR0912 - one branch per reply
        cmd = msg.command
        if cmd == RPL_NAMREPLY:  # ":server 353 me = #chan :@op +voice nick"
            channel = self._channels.get(self.fold(msg.param(2)))
            if channel is not None:
                for name in msg.param(-1).split():
                    channel.nicks.add(name.lstrip(MEMBER_PREFIXES))
            return
        if cmd == RPL_ENDOFNAMES:
            channel = self._channels.get(self.fold(msg.param(1)))
            if channel is not None and not channel.done.done():
                channel.joined = True
                channel.done.set_result(None)
            return
        if cmd in JOIN_ERRORS:
            channel = self._channels.get(self.fold(msg.param(1)))
            if channel is not None and not channel.done.done():
                status, meaning = JOIN_ERRORS[cmd]
                channel.done.set_exception(DeliveryError(f"{meaning} ({msg.param(-1)})", status))
                channel.done.exception()  # retrieved: the waiter may be gone
            return
        channel = self._channels.get(self.fold(msg.param(0)))
        if channel is None or not msg.nick:
            return
        own = self.fold(msg.nick) == self.fold(self.nick)
        if cmd == "JOIN":
            channel.nicks.add(msg.nick)
        elif cmd == "PART":
            channel.nicks.discard(msg.nick)
            if own:
                self._channels.pop(self.fold(channel.name), None)
                return
        elif cmd == "KICK":
            kicked = msg.param(1)
            channel.nicks.discard(kicked)
            if self.fold(kicked) == self.fold(self.nick):
                self._channels.pop(self.fold(channel.name), None)
                self._events().on_room_left(channel.name, f"kicked by {msg.nick}: {msg.param(-1)}")
                return
        if channel.joined and not own:
            self._events().on_room_occupants(channel.name, sorted(channel.nicks, key=self.fold))

    async def _round_trip(self, error: type[Exception] = DeliveryError) -> None:
        """Wait until the server has processed everything sent so far."""
        token = f"purplegw-{next(self._tokens)}"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[token] = fut
        self._send("PING", token)
        timeout = float(self._cfg("connect_timeout", 30))
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError as exc:
            self._pings.pop(token, None)
            message = f"{self.account.server_label} did not answer within {timeout}s"
            if error is DeliveryError:
                raise DeliveryError(message, status_hint=504) from exc
            raise error(message) from exc

    async def send_typing(self, contact: str, state: TypingState) -> None:
        if "message-tags" not in self.caps:
            raise NotImplementedError("server has no IRCv3 message-tags (no typing notifications)")
        self._send("TAGMSG", contact, tags={"+typing": _TYPING_TAG[state]})

    # --- own presence -------------------------------------------------------------------------

    async def set_presence(self, presence: Presence) -> None:
        if presence.status in (Status.AVAILABLE, Status.CHAT):
            self._send("AWAY")
        else:
            # OFFLINE only marks the nick away: logging out is the account
            # actor's decision (logout()), as PIDF basic=closed handling says.
            note = presence.note or _AWAY_WORDS.get(presence.status, "Away")
            self._send("AWAY", note)
        # Return once the server has applied it, so that what a contact sees
        # next is the new state.
        await self._round_trip(TransientError)

    # --- contacts and their presence ------------------------------------------------------------

    async def add_contact(self, contact: str) -> None:
        self._check_nick(contact)
        folded = self.fold(contact)
        if folded in self._watch:
            return
        self._watch[folded] = contact
        self._roster_event("on_roster_item", _watched(contact))
        if self._logged_in and self._monitor:
            self._monitor_add([contact])
        elif self._logged_in:
            self._send_ison([contact])

    async def remove_contact(self, contact: str) -> None:
        folded = self.fold(contact)
        if self._watch.pop(folded, None) is None:
            return
        self._known.pop(folded, None)
        self._roster_event("on_roster_removed", contact)
        if self._logged_in and self._monitor:
            self._send("MONITOR", "-", contact)

    async def answer_authorization(self, contact: str, answer: AuthorizationAnswer) -> None:
        raise NotImplementedError("IRC has no presence authorization: anyone may watch a nick")

    def _monitor_add(self, nicks: list[str]) -> None:
        # "MONITOR + a,b,c": keep each line well under 512 bytes.
        batch: list[str] = []
        for nick in nicks:
            if batch and len(",".join([*batch, nick])) > 400:
                self._send("MONITOR", "+", ",".join(batch))
                batch = []
            batch.append(nick)
        if batch:
            self._send("MONITOR", "+", ",".join(batch))

    async def _poll_loop(self) -> None:
        interval = float(self._cfg("ison_interval", 30))
        while True:
            try:
                self._poll_once()
            except TransientError:
                pass  # the read loop reports the lost connection
            except Exception:
                # Whatever one poll tripped on, presence must keep flowing for
                # the other contacts: log it and poll again next time.
                logger.exception("%s: presence poll failed", self.account.server_label)
            await asyncio.sleep(interval)

    def _poll_once(self) -> None:
        nicks = list(self._watch.values())
        if not nicks:
            return
        if not self._monitor:
            self._send_ison(nicks)
        # USERHOST reports the away flag ("nick=-user@host").
        online = [
            self._watch[f]
            for f, p in self._known.items()
            if p.status is not Status.OFFLINE and f in self._watch
        ]
        for i in range(0, len(online), 5):
            self._send("USERHOST", *online[i : i + 5])

    def _send_ison(self, nicks: list[str]) -> None:
        for i in range(0, len(nicks), 20):
            batch = nicks[i : i + 20]
            self._send("ISON", *batch)
            self._ison_batches.append(batch)

    def _on_ison(self, online: list[str]) -> None:
        # ISON names only the online ones among those asked, so the reply is
        # read against the batch it answers (servers answer in order).
        if not self._ison_batches:
            return
        batch = self._ison_batches.popleft()
        online_folded = {self.fold(n) for n in online}
        for nick in batch:
            self._set_online(nick, online=self.fold(nick) in online_folded)

    def _on_userhost(self, replies: list[str]) -> None:
        for reply in replies:
            nick, _, rest = reply.partition("=")
            nick = nick.rstrip("*")
            self._set_away(nick, away=rest.startswith("-"), from_poll=True)

    def _set_online(self, nick: str, *, online: bool) -> None:
        folded = self.fold(nick)
        if folded not in self._watch:
            return
        previous = self._known.get(folded)
        if online:
            if previous is not None and previous.status is not Status.OFFLINE:
                return
            self._report(folded, Presence(Status.AVAILABLE))
            # The away flag and its note are not part of MONITOR/ISON.
            with contextlib.suppress(TransientError):
                self._send("USERHOST", nick)
        else:
            self._away_notes.pop(folded, None)
            if previous is not None and previous.status is Status.OFFLINE:
                return
            self._report(folded, Presence(Status.OFFLINE))

    def _set_away(self, nick: str, *, away: bool, from_poll: bool = False) -> None:
        folded = self.fold(nick)
        if folded not in self._watch:
            return
        previous = self._known.get(folded)
        if away:
            note = self._away_notes.get(folded)
            if note is None and from_poll:
                # USERHOST has the flag but not the reason: WHOIS has it (301).
                with contextlib.suppress(TransientError):
                    self._send("WHOIS", nick)
            new = Presence(Status.AWAY, note=note)
        else:
            self._away_notes.pop(folded, None)
            new = Presence(Status.AVAILABLE)
        if previous != new:
            self._report(folded, new)

    def _report(self, folded: str, presence: Presence) -> None:
        self._known[folded] = presence
        contact = self._watch[folded]
        self._events().on_contact_presence(ContactPresence(contact, {"": presence}))

    # --- logout ----------------------------------------------------------------------------------

    async def logout(self) -> None:
        self._closing = True
        self._disconnect_reported = True
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(Exception):
                self._send("QUIT", self._cfg("quit_message", "purplegw"))
                await asyncio.wait_for(self._writer.drain(), 2)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        await self._close()
        self._logged_in = False
        self._events().on_connection_state(ConnectionState.LOGGED_OUT)

    async def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2)


def _watched(nick: str) -> RosterItem:
    """A watched nick as a roster item: no names, no authorization on IRC."""
    return RosterItem(nick, "", "both")
