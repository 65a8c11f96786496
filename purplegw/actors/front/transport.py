"""SIP transports (RFC 3261 section 18) on an asyncio loop: UDP, TCP and TLS.

The transport layer only moves bytes and frames messages; it parses with the
sans-IO parser (``purplegw.sip.parser``) and hands every message, with its
:class:`Source`, to one callback. Everything here runs on the loop thread.

Design notes (why, not what):

* UDP does not use asyncio's datagram transport: that reads one datagram per
  selector wake-up. ``add_reader`` plus draining the socket until it would
  block reads a burst with one wake-up and no per-datagram transport
  bookkeeping (bench/sip_front.py measures the whole path). Sends are direct
  non-blocking ``sendto``: a full socket buffer drops the datagram, which UDP
  retransmission (timer A/E, or the peer's) recovers.
* Streams keep a table of open connections keyed by the peer's address, so a
  response goes back on the connection its request came in on, or on any open
  connection to the Via address (RFC 3261 18.2.2), and outgoing requests reuse
  connections too.
* Abuse bounds: ``max_connections`` open incoming streams,
  ``max_outgoing_connections`` streams we opened (a separate budget: a
  flood of incoming connections never stops the gateway from reaching a
  phone), ``max_connections_per_source`` incoming ones per source (keyed by
  ``source_key``: the front keys IPv6 by /64 and exempts trusted networks),
  so that one address cannot take every slot, ``max_message_size`` bytes
  buffered per connection (the parser raises and the connection is closed,
  since framing is lost),
  ``max_header_size`` bytes before the end of a header section (an endless
  stream with no CRLFCRLF is cut there) and ``max_headers`` header lines,
  ``tcp_idle_timeout`` seconds without traffic, and a partial message may not
  stay incomplete for longer than ``tcp_message_timeout`` (slow-loris: a
  client that trickles bytes is never idle, but its message never ends),
  and at most WRITE_BUFFER_LIMIT bytes queued towards a peer that does not read.
  When the incoming slots are full, a newcomer from a source with fewer
  connections than the busiest one takes the slot of that source's longest
  silent connection (``evict_busiest``): many sources each holding up to
  the per-source limit (17 x 64 slow connections) cannot keep out a client
  from anywhere else, and an attacker's new connections only displace the
  attacker's own.
* ``raise_nofile_limit`` lifts RLIMIT_NOFILE's soft limit to the hard one
  when the front starts, and the connection budgets are cut to fit what the
  process may open (logged): a budget above the descriptor limit would fail
  with EMFILE in accept(), for everyone.
* ``udp_gate(host)``, when set, is asked before a datagram is parsed: a
  source that the rate limiter would drop anyway costs one dict lookup,
  not a parse (a flood far above the limit must not crowd out the socket
  buffer for everyone else).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import logging
import resource
import socket
import ssl
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from purplegw.logs import TRACE, WIRE_LOGGER
from purplegw.sip.errors import RemoteProtocolError
from purplegw.sip.parser import (
    MAX_HEADER_SIZE,
    MAX_HEADERS,
    NEED_DATA,
    StreamParser,
    parse_datagram,
)

logger = logging.getLogger(__name__)
wire_logger = logging.getLogger(WIRE_LOGGER)  # at TRACE: every message, whole

STREAM_TRANSPORTS = ("tcp", "tls")
WRITE_BUFFER_LIMIT = 4 * 1024 * 1024  # bytes queued towards one stream peer before we give up on it
UDP_BURST = 64  # datagrams read per wake-up before yielding to other callbacks
FIONREAD = termios.FIONREAD
FIONREAD_BURST = 4  # datagrams of a wake-up after which its end is found by recvfrom
_ioctl = fcntl.ioctl


def normalize_host(host: str) -> str:
    """``[::1]`` -> ``::1``; IP literals in canonical text form."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Address:
    """Where to send: transport name (udp/tcp/tls), host (IP literal, no brackets), port."""

    transport: str
    host: str
    port: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.transport, self.host, self.port)

    def __str__(self) -> str:
        return f"{self.transport}:{format_hostport(self.host, self.port)}"


def parse_listen(spec: str) -> Address:
    """``"udp:127.0.0.1:5060"``, ``"tcp:[::1]:5060"``, ``"tls:127.0.0.1:5061"`` -> Address."""
    try:
        transport, rest = spec.split(":", 1)
        host, _, port_text = rest.rpartition(":")
        address = Address(transport.lower(), normalize_host(host), int(port_text))
    except ValueError as exc:
        raise ValueError(f"bad listen address {spec!r}: expected transport:host:port") from exc
    if address.transport not in ("udp", "tcp", "tls"):
        raise ValueError(f"bad listen address {spec!r}: transport must be udp, tcp or tls")
    if not address.host:
        raise ValueError(f"bad listen address {spec!r}: missing host")
    return address


class Source:
    """Where a message came from: remote address, the listener and (streams) the connection.

    ``reply_to``: where responses to this UDP datagram go (RFC 3261 18.2.2,
    RFC 3581), set by the front when it stamps the request's Via, so that
    the answer does not parse the stamped Via again; None: work it out.
    """

    __slots__ = ("connection", "host", "listener", "port", "reply_to", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int,
        listener: Listener,
        connection: StreamConnection | None,
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.listener = listener
        self.connection = connection
        self.reply_to: tuple[str, int] | None = None

    @property
    def address(self) -> Address:
        return Address(self.transport, self.host, self.port)

    def __repr__(self) -> str:
        return f"Source({self.transport}:{format_hostport(self.host, self.port)})"


class Listener:
    """A bound local address; ``sent_by`` is what goes into our Via headers."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.transport = address.transport
        self.host = address.host
        self.port = address.port
        self.sock: socket.socket | None = None
        self.server: asyncio.base_events.Server | None = None

    @property
    def sent_by(self) -> str:
        return format_hostport(self.host, self.port)

    @property
    def listen_string(self) -> str:
        return str(self.address)

    def __repr__(self) -> str:
        return f"Listener({self.address})"


MessageCallback = Callable[[Any, Source], None]
ErrorCallback = Callable[[RemoteProtocolError, bytes, Source], None]
SendErrorCallback = Callable[[Exception], None]


@dataclass
class TransportConfig:
    max_message_size: int = 65535
    tcp_idle_timeout: float = 120.0
    max_connections: int = 12288
    max_header_size: int = MAX_HEADER_SIZE
    max_headers: int = MAX_HEADERS
    tcp_message_timeout: float | None = None  # None: tcp_idle_timeout
    max_connections_per_source: int = 0  # 0: no per-source bound
    max_outgoing_connections: int = 1024  # connections we open, counted apart from incoming
    evict_busiest: bool = True  # full: a newcomer displaces the busiest source's oldest
    tls_certificate: str | None = None
    tls_private_key: str | None = None
    tls_ca_certificates: str | None = None
    tls_verify: bool = True
    connect_timeout: float = 10.0


class TransportLayer:
    """All listeners and connections of one SIP front. Loop-thread only."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: TransportConfig,
        on_message: MessageCallback,
        on_bad_message: ErrorCallback,
    ) -> None:
        self.loop = loop
        self.config = config
        self.on_message = on_message
        self.on_bad_message = on_bad_message
        self.listeners: list[Listener] = []
        self.connections: dict[tuple[str, str, int], StreamConnection] = {}
        self._connecting: dict[
            tuple[str, str, int], list[tuple[bytes, SendErrorCallback | None]]
        ] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.dropped_datagrams = 0
        self._queued = array.array("i", [0])  # FIONREAD's answer (_udp_readable)
        self.rejected_connections = 0
        self.gated_datagrams = 0
        self.udp_gate: Callable[[str], bool] | None = None
        # incoming connections per source key; None from source_key: not counted
        self.source_key: Callable[[str], str | None] = lambda host: host
        self._per_source: dict[str, int] = {}
        self.incoming_count = 0
        self.outgoing_count = 0
        self.evicted_connections = 0
        fit_connection_budget(config)

    # ---- listeners -------------------------------------------------------

    async def listen(self, spec: str | Address) -> Listener:
        address = parse_listen(spec) if isinstance(spec, str) else spec
        listener = Listener(address)
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        if address.transport == "udp":
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
                sock.bind((address.host, address.port))
                sock.setblocking(False)  # noqa: FBT003 - the socket module's API
            except OSError:
                sock.close()
                raise
            listener.sock = sock
            listener.port = sock.getsockname()[1]
            self.loop.add_reader(sock.fileno(), self._udp_readable, listener)
        else:
            ssl_ctx = self._server_ssl_context() if address.transport == "tls" else None
            server = await self.loop.create_server(
                lambda: StreamConnection(self, listener, outgoing=False),
                address.host,
                address.port,
                family=family,
                ssl=ssl_ctx,
                reuse_address=True,
                backlog=512,
            )
            listener.server = server
            listener.port = server.sockets[0].getsockname()[1]
            self._start_sweeper()
        listener.address = Address(address.transport, address.host, listener.port)
        self.listeners.append(listener)
        logger.info("listening on %s", listener.address)
        return listener

    def listener_for(self, transport: str, host: str | None = None) -> Listener | None:
        """The listener to send from: same transport (TLS over TCP ok) and IP family as ``host``."""
        v6 = host is not None and ":" in host
        fallback = None
        for listener in self.listeners:
            if listener.transport == transport:
                if (":" in listener.host) == v6:
                    return listener
                fallback = fallback or listener
        return fallback

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for listener in self.listeners:
            if listener.sock is not None:
                self.loop.remove_reader(listener.sock.fileno())
                listener.sock.close()
            if listener.server is not None:
                listener.server.close()
        for conn in list(self.connections.values()):
            conn.close()
        for listener in self.listeners:
            if listener.server is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener.server.wait_closed(), 2)
        self.listeners.clear()

    def _server_ssl_context(self) -> ssl.SSLContext:
        if not (self.config.tls_certificate and self.config.tls_private_key):
            raise ValueError("a tls: listen address needs tls_certificate and tls_private_key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_certificate, self.config.tls_private_key)
        return ctx

    def _client_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.config.tls_ca_certificates)
        if not self.config.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    # ---- UDP -------------------------------------------------------------

    def _udp_readable(self, listener: Listener) -> None:
        sock = listener.sock
        assert sock is not None
        on_message = self.on_message
        max_size = self.config.max_message_size
        max_header_size = self.config.max_header_size
        max_headers = self.config.max_headers
        gate = self.udp_gate
        trace = wire_logger.isEnabledFor(TRACE)  # once per wake-up, not per datagram
        fd = sock.fileno()
        queued = self._queued
        for count in range(UDP_BURST):
            # After the first datagram, FIONREAD says whether another is queued
            # (the size of the next one; 0: none, or an empty one, which the
            # next wake-up reads): a fraction of what the BlockingIOError of a
            # recvfrom on an empty socket costs, once per wake-up. Asked only
            # while the burst is short: in a long one (a busy front) the one
            # BlockingIOError at its end costs less than an ioctl per datagram.
            if (
                0 < count < FIONREAD_BURST
                and not _ioctl(fd, FIONREAD, queued, True)  # noqa: FBT003 - fcntl's API
                and not queued[0]
            ):
                return
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP port unreachable from an earlier sendto surfaces here; harmless
                logger.debug("udp recv on %s: %s", listener, exc)
                continue
            if len(data) <= 4 and not data.strip():
                continue  # RFC 5626 keep-alive
            if gate is not None and not gate(addr[0]):
                self.gated_datagrams += 1
                continue
            source = Source("udp", addr[0], addr[1], listener, None)
            try:
                if len(data) > max_size:
                    raise RemoteProtocolError("Message Too Large", 513)  # noqa: TRY301 - an oversized datagram takes the same path as a malformed one
                message = parse_datagram(data, max_header_size, max_headers)
            except RemoteProtocolError as exc:
                self.on_bad_message(exc, data, source)
                continue
            if trace:
                wire_logger.log(
                    TRACE, "recv %s from %s\n%s", len(data), source, data.decode(errors="replace")
                )
            on_message(message, source)

    # ---- sending ---------------------------------------------------------

    def send_datagram(self, data: bytes, host: str, port: int, listener: Listener) -> None:
        """UDP fast path for responses: from the socket the request came in on."""
        sock = listener.sock
        if sock is None or (":" in host) != (":" in listener.host):
            self.send(data, Address("udp", host, port))
            return
        if wire_logger.isEnabledFor(TRACE):
            wire_logger.log(
                TRACE,
                "send %s to udp:%s\n%s",
                len(data),
                format_hostport(host, port),
                data.decode(errors="replace"),
            )
        try:
            sock.sendto(data, (host, port))
        except BlockingIOError:
            self.dropped_datagrams += 1
        except OSError as exc:
            logger.info("udp send to %s failed: %s", format_hostport(host, port), exc)

    def send(
        self,
        data: bytes,
        dest: Address,
        *,
        connection: StreamConnection | None = None,
        on_error: SendErrorCallback | None = None,
    ) -> None:
        """Send ``data`` to ``dest``.

        Stream sends reuse ``connection``, else any open connection to ``dest``,
        else connect first (queueing what is sent meanwhile).
        """
        if wire_logger.isEnabledFor(TRACE):
            wire_logger.log(
                TRACE, "send %s to %s\n%s", len(data), dest, data.decode(errors="replace")
            )
        if dest.transport == "udp":
            listener = self.listener_for("udp", dest.host)
            if listener is None or listener.sock is None:
                self._fail(on_error, OSError(errno.ENETUNREACH, "no UDP listener to send from"))
                return
            try:
                listener.sock.sendto(data, (dest.host, dest.port))
            except BlockingIOError:
                self.dropped_datagrams += 1
            except OSError as exc:
                self._fail(on_error, exc)
            return
        if connection is not None and not connection.closed:
            connection.write(data)
            return
        conn = self.connections.get(dest.key)
        if conn is not None and not conn.closed:
            conn.write(data)
            return
        pending = self._connecting.get(dest.key)
        if pending is not None:
            pending.append((data, on_error))
            return
        self._connecting[dest.key] = [(data, on_error)]
        self.loop.create_task(self._connect(dest))

    @staticmethod
    def _fail(on_error: SendErrorCallback | None, exc: Exception) -> None:
        if on_error is not None:
            on_error(exc)
        else:
            logger.info("send failed: %s", exc)

    async def _connect(self, dest: Address) -> None:
        listener = self.listener_for(dest.transport, dest.host)
        try:
            if listener is None:
                raise OSError(errno.ENETUNREACH, f"no {dest.transport} listener")  # noqa: TRY301 - no listener fails the waiters as a refused connect does
            ssl_ctx = self._client_ssl_context() if dest.transport == "tls" else None
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: StreamConnection(self, listener, outgoing=True),
                    dest.host,
                    dest.port,
                    ssl=ssl_ctx,
                    server_hostname=dest.host if ssl_ctx else None,
                ),
                self.config.connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            for _, on_error in self._connecting.pop(dest.key, []):
                self._fail(on_error, exc if isinstance(exc, Exception) else OSError(str(exc)))
            return
        for data, _ in self._connecting.pop(dest.key, []):
            conn.write(data)

    # ---- stream bookkeeping ---------------------------------------------

    def register(self, conn: StreamConnection) -> bool:
        if conn.outgoing:
            if self.outgoing_count >= self.config.max_outgoing_connections:
                self.rejected_connections += 1
                logger.warning(
                    "outgoing connection limit %d reached, refusing %s",
                    self.config.max_outgoing_connections,
                    conn,
                )
                return False
            self.outgoing_count += 1
            self.connections[conn.key] = conn
            return True
        source = conn.source_key = self.source_key(conn.key[1])
        count = self._per_source.get(source, 0) if source is not None else 0
        cap = self.config.max_connections_per_source
        if source is not None and cap and count >= cap:
            self.rejected_connections += 1
            logger.info("%s has %d connections open, refusing another", source, count)
            return False
        if self.incoming_count >= self.config.max_connections and not self._evict_for(count):
            self.rejected_connections += 1
            logger.warning(
                "connection limit %d reached, refusing %s", self.config.max_connections, conn
            )
            return False
        if source is not None:
            self._per_source[source] = count + 1
        self.incoming_count += 1
        self.connections[conn.key] = conn
        return True

    def _evict_for(self, newcomer_count: int) -> bool:
        """Free one incoming slot for a source holding ``newcomer_count`` connections.

        The victim is the longest silent connection of the busiest source,
        and only if that source holds more than the newcomer's plus one: a
        source can never displace a connection of one smaller than itself.
        """
        if not self.config.evict_busiest or not self._per_source:
            return False
        busiest, most = max(self._per_source.items(), key=lambda item: item[1])
        if most <= newcomer_count + 1:
            return False
        victims = [
            c
            for c in self.connections.values()
            if not c.outgoing and not c.closed and c.source_key == busiest
        ]
        if not victims:
            return False
        victim = min(victims, key=lambda c: c.last_activity)
        self.evicted_connections += 1
        logger.info(
            "connection slots full: closing %s (%s holds %d) for a newcomer", victim, busiest, most
        )
        victim.abort()
        return True

    def unregister(self, conn: StreamConnection) -> None:
        if self.connections.get(conn.key) is conn:
            del self.connections[conn.key]
            if conn.outgoing:
                self.outgoing_count -= 1
            else:
                self.incoming_count -= 1
            source = conn.source_key
            if source is not None:
                left = self._per_source.get(source, 1) - 1
                if left > 0:
                    self._per_source[source] = left
                else:
                    self._per_source.pop(source, None)

    @property
    def message_timeout(self) -> float:
        """Longest time a partial message may stay incomplete: never above the idle timeout."""
        limit = self.config.tcp_message_timeout
        idle = self.config.tcp_idle_timeout
        return idle if limit is None else min(limit, idle)

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            interval = max(0.05, min(self.message_timeout / 4, 5.0))
            self._sweeper = self.loop.call_later(interval, self._sweep, interval)

    def _sweep(self, interval: float) -> None:
        now = time.monotonic()
        limit = self.config.tcp_idle_timeout
        partial_limit = self.message_timeout
        for conn in list(self.connections.values()):
            if now - conn.last_activity > limit:
                logger.info("closing idle connection %s", conn)
                conn.close()
            elif conn.partial_since is not None and now - conn.partial_since > partial_limit:
                logger.info("closing %s: message incomplete for %.1fs", conn, partial_limit)
                conn.close()
        self._sweeper = self.loop.call_later(interval, self._sweep, interval)


class StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection: frames messages with StreamParser."""

    def __init__(self, layer: TransportLayer, listener: Listener, *, outgoing: bool) -> None:
        self.layer = layer
        self.listener = listener
        self.outgoing = outgoing
        self.transport_name = listener.transport
        self.parser = StreamParser(
            max_message_size=layer.config.max_message_size,
            max_header_size=layer.config.max_header_size,
            max_headers=layer.config.max_headers,
        )
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.key: tuple[str, str, int] = (self.transport_name, "", 0)
        self.source: Source | None = None
        self.last_activity = time.monotonic()
        self.partial_since: float | None = None
        self.registered = False
        self.source_key: str | None = None  # what the per-source connection count is keyed by

    def __repr__(self) -> str:
        return f"StreamConnection({self.key[0]}:{format_hostport(self.key[1], self.key[2])})"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        host, port = normalize_host(peer[0]), peer[1]
        self.key = (self.transport_name, host, port)
        self.source = Source(self.transport_name, host, port, self.listener, self)
        if not self.layer.register(self):
            self.closed = True
            transport.abort()
            return
        self.registered = True
        logger.debug("connection %s %s", "to" if self.outgoing else "from", self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.registered:
            self.layer.unregister(self)
        logger.debug("connection %s closed (%s)", self, exc)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = time.monotonic()
        parser = self.parser
        source = self.source
        assert source is not None
        completed = False
        try:
            parser.feed(data)
            while True:
                message = parser.next_message()
                if message is NEED_DATA:
                    break
                completed = True
                if wire_logger.isEnabledFor(TRACE):
                    wire_logger.log(TRACE, "recv from %s\n%s", source, message)
                self.layer.on_message(message, source)
        except RemoteProtocolError as exc:
            # framing is lost after a stream error: answer if possible, then close.
            # The answer copies Via/Call-ID/CSeq from the message's own start,
            # which an endless header section sent long before this read.
            self.layer.on_bad_message(exc, parser.head() or data, source)
            self.close()
            return
        if not parser_has_partial(parser):
            self.partial_since = None
        elif completed or self.partial_since is None:
            # a busy peer's reads often end mid-message: the clock runs for
            # the message now incomplete, not since the connection's first byte
            self.partial_since = self.last_activity

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.last_activity = time.monotonic()
            self.transport.write(data)
            # a peer that never reads must not make us buffer without end
            if self.transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                logger.warning(
                    "closing %s: peer does not read (%d bytes queued)",
                    self,
                    self.transport.get_write_buffer_size(),
                )
                self.transport.abort()
                self.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            if self.registered:
                self.layer.unregister(self)
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping anything queued (an evicted slot must be free now)."""
        transport = self.transport
        self.close()
        if transport is not None:
            transport.abort()


def parser_has_partial(parser: StreamParser) -> bool:
    """Whether the stream parser holds bytes of an incomplete message."""
    return bool(parser.buffered) or parser._pending is not None  # noqa: SLF001


# Descriptors kept apart from the connection budgets: listeners, the store,
# the control socket, log files, the IM connections of the accounts.
RESERVED_FDS = 256


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        # Linux refuses RLIM_INFINITY above fs.nr_open: ask for a finite value then.
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("could not raise RLIMIT_NOFILE from %d to %d: %s", soft, target, exc)
        else:
            logger.info("RLIMIT_NOFILE raised from %d to %d", soft, target)
            soft = target
    return soft


def fit_connection_budget(config: TransportConfig) -> None:
    """Cut ``max_connections``/``max_outgoing_connections`` to the descriptors available."""
    limit = raise_nofile_limit()
    wanted = config.max_connections + config.max_outgoing_connections
    available = max(2, limit - RESERVED_FDS)
    if wanted <= available:
        logger.info(
            "connection budget: %d incoming + %d outgoing within RLIMIT_NOFILE %d",
            config.max_connections,
            config.max_outgoing_connections,
            limit,
        )
        return
    share = config.max_connections / wanted
    config.max_connections = max(1, int(available * share))
    config.max_outgoing_connections = max(1, available - config.max_connections)
    logger.warning(
        "RLIMIT_NOFILE %d is below the connection budget (%d): using %d incoming + %d outgoing",
        limit,
        wanted,
        config.max_connections,
        config.max_outgoing_connections,
    )
