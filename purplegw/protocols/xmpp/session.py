"""One XMPP account's connection: slixmpp ``ClientXMPP`` behind the ``Session`` contract.

Threading: the client is created, driven and closed on ``context.loop`` only
(``loop=`` is passed to slixmpp); the account actor calls the coroutines there.

TLS: one ``ssl.SSLContext`` per process and CA file, kept in
``context.shared`` (slixmpp would otherwise build ~930 KB and ~40 ms CPU of
context per client).

Delivery guarantee (XEP-0198 stream management, when the server offers it):

* ``send_message`` returns when the stanza is written; it stays in the
  session's ledger until the server acks it (an ack is requested after every
  stanza).
* After a lost connection the session tries *one* stream resumption (no other
  reconnects: backoff is the account actor's job).  On success slixmpp resends
  the unacked stanzas it tracked, the session resends ledger messages slixmpp
  dropped unwritten, and the ledger empties as acks arrive.
* If resumption fails (server restarted, hibernation expired, network still
  down) the session reports ``TRANSIENT_DISCONNECT`` and
  ``unacked_messages()`` returns every message the server never acked, in
  send order, with their original ids, for the caller to resend through the
  next session.  A message may thus arrive twice (same id), never silently
  not at all.  While not connected, ``send_message`` raises
  ``DeliveryError`` (503): the caller keeps the message.
* Without stream management on the server there is no ledger: messages
  written just before a connection loss may be lost; XEP-0184 receipts
  (then requested on every message, reported through ``on_receipt``) are the
  only end-to-end confirmation.  With it, a receipt is requested only when
  the sender waits for one (``send_message(..., receipt=True)``: the phone
  asked for an IMDN ``positive-delivery``): every receipt is a stanza the
  gateway must read, and nobody else reads it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import itertools
import json
import logging
import os
import ssl
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element, SubElement

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.features.feature_mechanisms import stanza as sasl_stanza
from slixmpp.jid import InvalidJID
from slixmpp.plugins.base import BasePlugin
from slixmpp.util import sasl
from slixmpp.util.sasl.mechanisms import SCRAM
from slixmpp.xmlstream.handler import Callback, CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp.xmlstream.xmlstream import NotConnectedError

from purplegw.fifo import Fifo
from purplegw.presence import ContactPresence, Presence, Status
from purplegw.protocols.base import (
    ROSTER_SUBSCRIPTIONS,
    AccountCredentials,
    AuthorizationAnswer,
    BadCredentialsError,
    ConnectionState,
    DeliveryError,
    InvalidContactError,
    OutgoingMessage,
    ProxySettings,
    RosterItem,
    Session,
    SessionContext,
    TransientError,
    TypingState,
)
from purplegw.protocols.proxy import open_tunnel
from purplegw.protocols.text import for_phone
from purplegw.protocols.xmpp import errors as xmpp_errors
from purplegw.protocols.xmpp import features, log_redaction, muc
from purplegw.protocols.xmpp.lean import SendQueue, send_loop
from purplegw.protocols.xmpp.matchers import fast_matcher
from purplegw.protocols.xmpp.message_text import message_text
from purplegw.protocols.xmpp.presence_map import (
    parse_presence,
    presence_from_xmpp,
    presence_to_xmpp,
)
from purplegw.protocols.xmpp.stream_parser import StreamParser, ends_between_stanzas, fresh_parser
from purplegw.wakeup import Wakeup

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

logger = logging.getLogger(__name__)
#: slixmpp's stream logger: "SEND: ..." lines go there, where log_redaction filters them.
stream_logger = logging.getLogger(log_redaction.STREAM_LOGGER)

GTALK_IDS = ("gtalk",)
SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})
IDLE_NS = "urn:xmpp:idle:1"
DELAY_TAG = "{urn:xmpp:delay}delay"  # XEP-0203
RECEIPTS_NS = "urn:xmpp:receipts"  # XEP-0184
MESSAGE_TAG = "{jabber:client}message"
BODY_TAG = "{jabber:client}body"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
MARKERS_NS = "urn:xmpp:chat-markers:0"  # XEP-0333
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"  # RFC 6120 8.3.3
CHAT_STATES_NS = "http://jabber.org/protocol/chatstates"  # XEP-0085
ACTIVE_TAG = f"{{{CHAT_STATES_NS}}}active"
RECEIVED_TAG = f"{{{RECEIPTS_NS}}}received"
RECEIPT_REQUEST_TAG = f"{{{RECEIPTS_NS}}}request"
MARKABLE_TAG = f"{{{MARKERS_NS}}}markable"
#: The chat state child elements (XEP-0085 5.1) -> ``TypingState`` values.
_CHAT_STATE_TAGS = {f"{{{CHAT_STATES_NS}}}{state.value}": state.value for state in TypingState}
#: (receipt requested, markable) -> what ``_remember_requests`` keeps and returns.
_ASKED = {
    (True, False): (frozenset({"receipt"}), "receipt"),
    (False, True): (frozenset({"markable"}), "markable"),
    (True, True): (frozenset({"receipt", "markable"}), "markable,receipt"),
}
#: Senders' JIDs parsed (stringprep) once: a conversation sends from the same few.
JID_CACHE_SIZE = 4096
#: Incoming messages whose sender asked for a receipt or marker, remembered
#: until the phone reports them (oldest forgotten first).
RECEIPT_MEMORY = 4096
#: Ids of recent messages we sent, to recognise the stanza errors for them.
SENT_MEMORY = 4096
# Roster subscriptions that make a sender known (RFC 6121 2.1.2.5).
_KNOWN_SUBSCRIPTIONS = frozenset({"to", "from", "both"})
SM_NS = "urn:xmpp:sm:3"  # XEP-0198
SM_ACK_REQUEST_BYTES = f"<r xmlns='{SM_NS}'/>".encode()
SM_WINDOW = 32
#: A logged-in stream that has read nothing for this long, and last stopped
#: between two stanzas, drops its XML parser until its next read
#: (``Client._park_parser``).
PARSER_IDLE = 5.0
#: The server's ack requests (<r/>) are answered this much later, all of them
#: with one <a/> (docs/messaging.md, "Receive path CPU").
SM_ACK_DELAY = 0.01
#: A message handed on with an ack token is acknowledged to the server only
#: once the gateway reports it stored (or refused): at most this many seconds
#: later, then acknowledged anyway with a warning (docs/reliability.md).
ACK_HOLD_MAX = 10.0
SM_MAX_SEQ = 2**32  # XEP-0198 counts mod 2^32
#: Ack tokens, unique in the process: a token of a stream that is gone never
#: names a message of its successor.
_ACK_TOKENS = itertools.count(1)


class TlsVerificationError(TransientError):
    """The server's certificate could not be verified (wrong CA, wrong name, expired).

    Transient because the operator (or the server admin) may fix it without
    touching the account row; the message names the host for them.
    """


def shared_ssl_context(shared: dict[str, Any], ca_file: str = "") -> ssl.SSLContext:
    """The process-wide client TLS context for ``ca_file`` (created once)."""
    key = ("xmpp.ssl_context", ca_file or "")
    context = shared.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=ca_file or None)
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        shared[key] = context
    return context


def parse_server(value: str, default_port: int = 5222) -> tuple[str, int] | None:
    """``"host:port"`` (or ``"host"``, ``"[v6]:port"``) -> (host, port); ``""`` -> None."""
    value = (value or "").strip()
    if not value:
        return None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port else default_port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port


class Client(slixmpp.ClientXMPP):
    """ClientXMPP that can tunnel through an HTTP CONNECT proxy.

    slixmpp 1.17 has no proxy support of its own; ``_attempt_connection`` is
    its one place that opens sockets, so the tunnel goes there (tested
    against tinyproxy; slixmpp is pinned to 1.17.x in setup.py).
    """

    #: This class's own per-client fields live in slots, not in the instance
    #: dict slixmpp fills: ~80 entries of its own, and a dict of more than
    #: 85 grows to 256 slots (~3.3 KiB) where one of 85 fits in 128 (~1.6).
    __slots__ = (
        "_ack_asked_seq",
        "_ack_short",
        "_acked_h",
        "_between_stanzas",
        "_flush_handle",
        "_held",
        "_message_class",
        "_message_tag",
        "_park_handle",
        "_parked_namespaces",
        "_read_at",
        "_released",
        "_shed_handlers",
        "_sm_ack_due",
        "_stream_namespaces",
        "_write_buffer",
        "compact_parser_due",
        "connect_timeout",
        "http_proxy",
        "on_scram_key",
        "stored_scram_key",
    )

    #: Stream features slixmpp's ``ClientXMPP`` registers that the gateway
    #: never uses: pre-approval (RFC 6121 3.4) and XEP-0478 limits only record
    #: that the server offers them; roster versioning only matters to a client
    #: that keeps its roster between logins (a session builds a new client,
    #: so it always asks for the whole roster).  Not loading them saves their
    #: instances, handlers and config per account.
    UNUSED_FEATURES = frozenset({"feature_preapproval", "feature_limits", "feature_rosterver"})
    #: slixmpp ``BaseXMPP`` handlers whose events the gateway does not use.
    UNUSED_HANDLERS = ("IM", "IMError")
    #: slixmpp ``BaseXMPP``'s presence bookkeeping, which the session keeps
    #: itself (``XmppSession._resources``): these copy every contact's
    #: presence into slixmpp's roster (``RosterItem.resources``) and raise
    #: events nobody here listens to (got_online, changed_status, ...).
    #: Unhooked, with ``_handle_presence`` below; the subscription handlers
    #: stay, they keep ``client_roster``'s subscription states.
    UNUSED_PRESENCE_EVENTS = (
        "presence_available",
        "presence_away",
        "presence_chat",
        "presence_dnd",
        "presence_xa",
    )

    #: Stanza handlers only a stream's negotiation uses: stream features,
    #: STARTTLS, SASL and the answers to XEP-0198's <enable/> / <resume/>.
    #: slixmpp offers every incoming stanza to every handler in turn; once
    #: the session is established these never match again on that stream,
    #: so they are set aside (``shed_negotiation_handlers``) and put back
    #: when a new connection (a resumption) negotiates again.
    NEGOTIATION_HANDLERS = frozenset(
        {
            "Stream Features",
            "STARTTLS Proceed",
            "SASL Success",
            "SASL Failure",
            "SASL Challenge",
            "Stream Management Enabled",
            "Stream Management Resumed",
        }
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.http_proxy: ProxySettings | None = None
        self.connect_timeout = 15.0
        #: The stored SCRAM key of this account (``scram_key_record``), if any,
        #: and where to report a newly derived one (``on_key_derived``).
        self.stored_scram_key: str | None = None
        self.on_scram_key: Any = None
        #: Replace the login's XML parser at the next stanza boundary (see
        #: stream_parser.py); set once the session started or resumed.
        self.compact_parser_due = False
        self._message_class: Any = None  # _build_stanza
        #: The transport a late <a/> is owed on (delay_sm_acks), None when none is.
        self._sm_ack_due: Any = None
        #: Messages handed on and not yet stored by the gateway, oldest first:
        #: (token, the XEP-0198 count that includes it, since), and the tokens
        #: released out of order.  Made on first use (most clients never hold).
        self._held: deque[tuple[int, int, float]] | None = None
        self._released: set[int] | None = None
        self._acked_h = 0  # the h the server was last told (<a/>, <resume/>)
        self._ack_short = False  # that h left out messages read before it was sent
        #: What slixmpp wrote in this turn of the loop, not yet on the
        #: transport (``send_raw``), and the callback that will write it.
        self._write_buffer: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        #: XEP-0198's count of the last stanza an <r/> followed (``flush_writes``).
        self._ack_asked_seq = -1
        self._shed_handlers: list[Any] = []
        #: The idle stream's parser, put away (``_park_parser``): the stream
        #: root's namespaces, once the session started; set while parked;
        #: whether the last read ended between stanzas; when it was; the timer.
        self._stream_namespaces: list[tuple[str, str]] | None = None
        self._parked_namespaces: list[tuple[str, str]] | None = None
        self._between_stanzas = False
        self._read_at = 0.0
        self._park_handle: asyncio.TimerHandle | None = None
        super().__init__(*args, **kwargs)
        # ~4 KiB less per account, same behaviour for slixmpp (lean.py).
        self.waiting_queue = SendQueue()  # type: ignore[assignment] - the methods slixmpp calls
        self.session_bind_event = Wakeup()  # type: ignore[assignment] - same
        self._message_tag = f"{{{self.default_ns}}}message"
        # The SCRAM challenge is where the key derivation runs (milliseconds
        # of CPU in C, GIL released): answered from a thread, it no longer
        # stalls every other account on the loop, and uses a second core.
        self.remove_handler("SASL Challenge")
        self.register_handler(
            CoroutineCallback(
                "SASL Challenge",
                MatchXPath(sasl_stanza.Challenge.tag_name()),
                self.handle_sasl_challenge,
            )
        )
        self.add_event_handler("auth_success", self._forget_sasl_mechanism)
        self.add_event_handler("session_start", self._forget_stream_features)
        self.add_event_handler("session_resumed", self._stream_established)
        self.add_event_handler("session_resumed", self.shed_negotiation_handlers)
        self.add_event_handler("sm_enabled", self._forget_held)
        self.add_event_handler("session_resumed", self._forget_held)
        # slixmpp's own <message/> handlers only raise the "message" and
        # "message_error" events, which nothing here listens to (the session
        # has its one handler for every <message/>): two matches and, for
        # every message with a body, a stanza interface walk less per message.
        for name in self.UNUSED_HANDLERS:
            self.remove_handler(name)
        for event in self.UNUSED_PRESENCE_EVENTS:
            self._unhook(event, self._handle_available)
        self._unhook("presence_unavailable", self._handle_unavailable)
        # slixmpp's roster keeps the last presence the client sent (~1.3 KiB
        # per account, the stanza and its XML) for ``send_last_presence``,
        # which only its automatic subscription approval and probe answers
        # call: the session answers subscriptions itself (auto_authorize is
        # None) and servers answer probes (RFC 6121 4.3.2).  The session
        # keeps its own last presence (``_last_presence``) for the next login.
        self.del_filter("out", self.roster._save_last_status)  # noqa: SLF001 - slixmpp's (pinned 1.17.x)

    def _unhook(self, event: str, handler: Any) -> None:
        """``del_event_handler``, and the event's entry once no handler is left."""
        self.del_event_handler(event, handler)
        table = self._XMLStream__event_handlers  # slixmpp's (pinned 1.17.x)
        if not table.get(event, True):
            del table[event]

    def _start_keepalive(self, event: Any) -> None:
        """slixmpp's whitespace keepalive, only when ``whitespace_keepalive`` asks for it.

        slixmpp 1.17 schedules it at every session start whatever the flag
        says: a repeating timer per account (~0.5 KiB with its callback) and
        a write every five minutes, beside the session's own pings.
        """
        if self.whitespace_keepalive:
            super()._start_keepalive(event)

    def _handle_presence(self, presence: Any) -> None:
        """slixmpp's handler of every <presence/>, without a roster node per sender.

        slixmpp asks ``self.roster[sender]`` whether to ignore the update (a
        component's setting): that makes a ``RosterNode`` (the roster of an
        owner JID) for every contact and room occupant that sends presence,
        kept for the stream's life; with the unhooked handlers above, ~2 KiB
        per contact (tests/protocols/test_xmpp_lean.py).  The events, their
        order and the dropped malformed JIDs are slixmpp's.
        """
        try:
            presence["from"]  # parsed here, so a malformed JID is dropped as slixmpp does
            presence["to"]
        except InvalidJID:
            logger.exception("Couldn't handle presence: %s", presence)
            return
        kind = presence["type"]
        self.event("presence", presence)
        self.event(f"presence_{kind}", presence)
        if kind in SUBSCRIPTION_TYPES:
            self.event("changed_subscription", presence)

    def _build_stanza(self, xml: Element, default_ns: str | None = None) -> Any:
        """slixmpp's, without its per-stanza search for the class of a ``<message/>``.

        slixmpp formats and compares the tag of every registered root stanza
        class, then asks the stanza for ``lang`` through its interfaces (a
        received stanza has no parent, so that is never None: nothing is
        set).  The class it finds for the first message is the one for every
        later message of the stream (root stanza classes are registered
        while the client is built).
        """
        if default_ns is None and xml.tag == self._message_tag:
            message_class = self._message_class
            if message_class is not None:
                return message_class(self, xml, recv=True)
            stanza = super()._build_stanza(xml, default_ns)
            self._message_class = type(stanza)
            return stanza
        return super()._build_stanza(xml, default_ns)

    def delay_sm_acks(self) -> None:
        """Answer the server's XEP-0198 ack requests ``SM_ACK_DELAY`` late, one <a/> for all.

        slixmpp answers each <r/> at once, and Prosody asks again as soon as
        a stanza follows an answered request: at 1,200 messages/s that was
        an <r/> and an <a/> (a stanza object, a TLS record, a write) per
        message or two.  The server sends no new <r/> while one is
        unanswered, so a late answer covers every stanza read meanwhile.  A
        late <a/> only ever acknowledges less, never more: the server keeps
        (and resends on resumption) what it was not told of.
        """
        self.remove_handler("Stream Management Request Ack")
        self.register_handler(
            Callback(
                "Stream Management Request Ack",
                MatchXPath(f"{{{SM_NS}}}r"),
                self._sm_ack_requested,
                instream=True,
            )
        )

    def _sm_ack_requested(self, _request: Any = None) -> None:
        if self._sm_ack_due is None:
            self._sm_ack_due = self.transport
            self.loop.call_later(SM_ACK_DELAY, self._send_sm_ack, self.transport)

    # --- acks held until the gateway stored the message (docs/reliability.md) -----

    def hold_ack(self) -> int | None:
        """Hold the server's ack of the stanza just read until ``release_acks`` names the token.

        None when stream management is not on (nothing is acknowledged then).
        """
        sm = self.plugin["xep_0198"]
        if not sm.enabled_in:
            return None
        if self._held is None:
            self._held = deque()
            self._released = set()
        token = next(_ACK_TOKENS)
        self._held.append((token, sm.handled, time.monotonic()))
        return token

    def release_acks(self, tokens: Any) -> None:
        """The gateway stored (or refused) these messages: the server may forget them."""
        held, released = self._held, self._released
        if not held or released is None:
            return  # a stream that ended since (its successor counts afresh)
        oldest = held[0][0]
        released.update(t for t in tokens if t >= oldest)
        while held and held[0][0] in released:
            released.discard(held.popleft()[0])
        # Told less than it was asked for: tell the rest (an <a/> may come
        # unasked; the server asks again only after its next stanza).
        if self._ack_short and self._ack_count() != self._acked_h:
            self._sm_ack_requested()

    def _ack_count(self) -> int:
        """The h to acknowledge: every stanza read before the oldest held message."""
        held = self._held
        handled = self.plugin["xep_0198"].handled
        if not held:
            return handled
        stale = time.monotonic() - ACK_HOLD_MAX
        if held[0][2] < stale:
            dropped = 0
            while held and held[0][2] < stale:
                self._released.discard(held.popleft()[0])  # type: ignore[union-attr]
                dropped += 1
            logger.warning(
                "%s: %d received message(s) not reported stored within %g s; "
                "acknowledged to the server anyway",
                self.boundjid.bare,
                dropped,
                ACK_HOLD_MAX,
            )
            if not held:
                return handled
        return (held[0][1] - 1) % SM_MAX_SEQ

    def _forget_held(self, _event: Any) -> None:
        """A new count starts (<enabled/>) or <resume h=.../> acknowledged all read."""
        if self._held:
            self._held.clear()
            self._released.clear()  # type: ignore[union-attr]
        self._acked_h = self.plugin["xep_0198"].handled
        self._ack_short = False

    def _send_sm_ack(self, transport: Any) -> None:
        # Owed on the stream that asked: after a lost connection the count
        # belongs to the old stream (a resumption states it in <resume h=...>),
        # and an <a/> written on the new one before it is established would
        # be a protocol error there.
        if self._sm_ack_due is not transport:
            return
        self._sm_ack_due = None
        if self.transport is transport and not transport.is_closing():
            # What slixmpp's send_ack writes, without a stanza object; h
            # stops before the oldest message the gateway has not stored.
            h = self._acked_h = self._ack_count()
            self._ack_short = h != self.plugin["xep_0198"].handled
            self.send_raw(f"<a xmlns='{SM_NS}' h='{h}'/>")

    def register_handler(self, handler: Any, before: Any = None, after: Any = None) -> None:
        """slixmpp's, with simple XPath matchers replaced by tag comparisons (matchers.py)."""
        handler._matcher = fast_matcher(handler._matcher)  # noqa: SLF001 - slixmpp's field
        super().register_handler(handler, before, after)

    def register_plugin(self, plugin: str, pconfig: dict | None = None, module: Any = None) -> None:
        if plugin in self.UNUSED_FEATURES:
            return
        plugins = self.plugin._plugins  # noqa: SLF001 - slixmpp's registry (pinned 1.17.x)
        known = set(plugins)
        super().register_plugin(plugin, pconfig, module)
        if plugin == "xep_0198":
            # Empty after every ack; ~0.7 KiB less per account as a list (lean.py).
            self.plugin["xep_0198"].unacked_queue = Fifo()
        # The plugin and the dependencies it enabled; each plugin is looked at once.
        for name, instance in plugins.items():
            if name not in known:
                self._drop_idle_plugin_hook(instance)

    def _drop_idle_plugin_hook(self, instance: Any) -> None:
        """Unhook a plugin's ``session_bind`` handler if it does nothing.

        slixmpp's ``BasePlugin`` hooks every plugin's ``session_bind`` onto the
        event, and most plugins keep the base class's, which does nothing:
        an event-table entry per plugin per account, called at every bind.
        """
        if type(instance).session_bind is BasePlugin.session_bind:
            self._unhook("session_bind", instance.session_bind)

    def init_parser(self) -> None:
        """slixmpp's parser, recording the stream header's namespaces (stream_parser.py)."""
        self.xml_depth = 0
        self.xml_root = None
        self.parser = StreamParser()
        self.compact_parser_due = False
        self._unpark()

    def run_filters(self) -> Coroutine[Any, Any, None]:  # type: ignore[override] - same awaitable
        """slixmpp's send queue consumer, keeping nothing between items (lean.py).

        The coroutine itself, not one awaiting it: slixmpp makes it a task
        that lives as long as the connection, and a coroutine in between
        would be one more frame per account.
        """
        return send_loop(self)

    # --- writes: one transport write per turn of the loop ------------------------------

    def send_raw(self, data: str | bytes) -> None:
        """slixmpp's one way to the transport, coalescing the writes of one turn of the loop.

        Every stanza, ack, stream header and footer slixmpp writes passes
        here.  Written one by one, each is a TLS record and a ``send``
        syscall (and a wake-up of the server); buffered until the end of
        this turn of the loop (``loop.call_soon``), a login's pipelined
        requests, the acks answering a burst and the messages of a burst go
        out as one record and one syscall, in the order they were written.

        XEP-0198 is unaffected: slixmpp counts a stanza (its outgoing filter)
        before handing it here, so a stanza still buffered when the
        connection dies is in its unacked queue and resent on resumption,
        like one still in the kernel's socket buffer.  The buffer belongs to
        the transport it was written for: a lost connection drops it, a new
        one (or TLS on top of the old) starts empty.
        """
        if not self.transport:
            raise NotConnectedError
        stream_logger.debug("SEND: %s", data)
        self._write_buffer.append(data.encode("utf-8") if isinstance(data, str) else data)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self.flush_writes)

    def flush_writes(self) -> None:
        """Write what ``send_raw`` buffered, as one transport write."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending = self._write_buffer
        if not pending:
            return
        self._write_buffer = []
        if self._ack_wanted():
            pending.append(SM_ACK_REQUEST_BYTES)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def ask_for_ack(self) -> None:
        """An <r/> now if stanzas wait for an ack (the login's: written before <enabled/>)."""
        if self.transport is not None and self._ack_wanted():
            self.send_raw(SM_ACK_REQUEST_BYTES)

    def _ack_wanted(self) -> bool:
        """Stanzas counted since the last <r/>, on a stream the server confirmed SM for.

        ``flush_writes`` ends each write that carries such stanzas with one
        <r/>.  slixmpp asks only every ``window`` stanzas, and keeps each
        stanza (an object of ~1-2 KiB) until the server acknowledges it.
        Left to that, an idle account held its login's roster request and
        presence, the room-bookmark queries and one keepalive ping a minute,
        up to 31 stanzas, for as long as it sent no other.  Asked behind
        every write, the server's <a/> empties the queue within a round
        trip; a burst (the messages of one turn) costs one <r/> in the same
        write and one <a/>.

        Only once <enabled/> or <resumed/> was read: an <r/> written behind
        an <enable/> or <resume/> the server then refuses meets a stream
        without stream management (Prosody ignores it; a server may answer
        with a <failed/> of its own).
        """
        sm = self.plugin.get("xep_0198", None)
        if sm is None or not (sm.enabled_in and sm.enabled_out and sm.unacked_queue):
            return False
        if sm.seq == self._ack_asked_seq:
            return False  # every stanza counted so far was followed by an <r/>
        self._ack_asked_seq = sm.seq
        return True

    def _drop_writes(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._write_buffer = []

    def connection_made(self, transport: Any, send_event: bool = True) -> None:  # noqa: FBT001, FBT002 - slixmpp signature
        self._drop_writes()  # written for a connection that is gone
        self._ack_asked_seq = -1  # a new stream: ask behind its first stanzas
        self._restore_negotiation_handlers()  # a new stream negotiates again
        super().connection_made(transport, send_event)

    def _handler_list(self) -> list[Any] | None:
        # slixmpp 1.17 keeps the stanza handlers in a private list and offers
        # no way to take one out and put the same one back (remove_handler
        # leaves it bound to the stream, so register_handler ignores it).
        handlers = getattr(self, "_XMLStream__handlers", None)
        return handlers if isinstance(handlers, list) else None

    def shed_negotiation_handlers(self, _event: Any = None) -> None:
        """Set the negotiation-only handlers aside: the stream is established.

        The XEP-0198 answers stay while an <enable/> is unanswered.
        """
        handlers = self._handler_list()
        if handlers is None:
            return
        # Answered (enabled, resumed or failed), or never asked.
        negotiated = "stream_management" in self.features or not self.plugin["xep_0198"].enabled_out
        for handler in list(handlers):
            if handler.name in self.NEGOTIATION_HANDLERS and (
                negotiated or not handler.name.startswith("Stream Management")
            ):
                handlers.remove(handler)
                self._shed_handlers.append(handler)

    def _restore_negotiation_handlers(self) -> None:
        if self._shed_handlers:
            handlers = self._handler_list()
            if handlers is not None:
                handlers.extend(self._shed_handlers)
            self._shed_handlers = []

    def connection_lost(self, exception: BaseException | None) -> None:
        self._drop_writes()  # counted by XEP-0198 already: resent on resumption
        self._unpark()
        super().connection_lost(exception)

    def abort(self) -> None:
        self._drop_writes()
        super().abort()

    async def start_tls(self) -> bool:
        self.flush_writes()  # plaintext written before the handshake stays plaintext
        return await super().start_tls()

    def _stream_established(self, _event: Any = None) -> None:
        """The session started or resumed: what only the negotiation needed can go.

        The parser is swapped at the next stanza boundary (stream_parser.py),
        the peer certificate asyncio parsed at the handshake is dropped
        (``release_tls_peercert``) and its write backlog becomes a list
        (``list_tls_write_backlog``).
        """
        self.compact_parser_due = True
        release_tls_peercert(self.transport)
        list_tls_write_backlog(self.transport)

    def data_received(self, data: bytes | str) -> None:
        if self._parked_namespaces is not None:
            # Parked between stanzas: a parser in the same state (~8 us).
            self.parser, self.xml_root = fresh_parser(self._parked_namespaces)
            self._parked_namespaces = None
        super().data_received(data)
        if not self.compact_parser_due and self._stream_namespaces is None:
            return  # still negotiating: neither a compaction nor a parking is due
        # The tail is enough: the last "<" of a chunk starts its last markup.
        self._between_stanzas = self.xml_depth == 1 and ends_between_stanzas(data[-512:])
        if not self._between_stanzas:
            return
        if self.compact_parser_due:
            parser = self.parser
            if isinstance(parser, StreamParser):
                # Between stanzas: nothing of the old parser's input is pending.
                self.parser, self.xml_root = fresh_parser(parser.root_namespaces)
                self._stream_namespaces = parser.root_namespaces
                self.compact_parser_due = False
        if self._stream_namespaces is not None:
            self._read_at = self.loop.time()
            if self._park_handle is None:
                self._park_handle = self.loop.call_later(PARSER_IDLE, self._park_parser)

    def _park_parser(self) -> None:
        """Drop the parser of a stream idle ``PARSER_IDLE`` seconds between stanzas.

        Even fresh, an expat parser and ElementTree's builder are ~11 KiB,
        and most of a gateway's streams read one stanza a minute (a
        keepalive answer).  Parked, the stream keeps only its root's
        namespaces; the next read builds a parser in the same state, as the
        compaction above does, at the same kind of boundary.  Its TLS read
        buffer goes too, and is made again by that read.
        """
        self._park_handle = None
        if self.parser is None or self._stream_namespaces is None:
            return  # the connection is gone, or a new stream is being negotiated
        if not self._between_stanzas:
            return  # a stanza half read; the read that ends it arms the timer again
        idle = self.loop.time() - self._read_at
        if idle < PARSER_IDLE:
            self._park_handle = self.loop.call_later(PARSER_IDLE - idle, self._park_parser)
            return
        self._parked_namespaces = self._stream_namespaces
        self.parser = None
        self.xml_root = None
        release_tls_read_buffer(self.transport)

    def _unpark(self) -> None:
        """A new stream or none: nothing parked, nothing to park until it has started."""
        if self._park_handle is not None:
            self._park_handle.cancel()
            self._park_handle = None
        self._stream_namespaces = self._parked_namespaces = None
        self._between_stanzas = False

    def _forget_sasl_mechanism(self, _stanza: Any) -> None:
        """Drop the SASL mechanism once authenticated (slixmpp keeps it for the stream's life).

        It holds the credentials, nonces and SCRAM state of a finished
        exchange; the next authentication (a resumed or new stream) builds
        a new one.
        """
        self.plugin["feature_mechanisms"].mech = None

    def _forget_stream_features(self, _event: Any) -> None:
        """Drop the stream features stanza resource binding keeps (~1.5 KiB per account).

        Bound and session started: nothing reads it any more; a new stream
        binds again and stores its own.
        """
        self.plugin["feature_bind"].features = None
        self._stream_established()

    async def handle_sasl_challenge(self, challenge: Any) -> None:
        """slixmpp's ``_handle_challenge`` with ``mech.process`` run in the default executor."""
        mechanisms = self.plugin["feature_mechanisms"]
        mech = mechanisms.mech
        response = mechanisms.stanza.Response(self)
        if isinstance(mech, SCRAM):
            mech.purplegw_stored_key = self.stored_scram_key
            mech.purplegw_new_key = None
        try:
            response["value"] = await asyncio.get_running_loop().run_in_executor(
                None, mech.process, challenge["value"]
            )
            new_key = getattr(mech, "purplegw_new_key", None)
            if new_key is not None and self.on_scram_key is not None:
                self.stored_scram_key = new_key
                self.on_scram_key(new_key)
        except sasl.SASLMutualAuthFailed:
            logger.exception(
                "XMPP server %s failed SCRAM mutual authentication", self.boundjid.domain
            )
            mechanisms.attempted_mechs.add(mech.name)
            self.disconnect()
        except (sasl.SASLCancelled, sasl.SASLFailed):
            mechanisms.stanza.Abort(self).send()
        else:
            if response.get_value() == "":
                response.del_value()
            response.send()

    async def _attempt_connection(
        self,
        host: str,
        port: int,
        tls: bool,  # noqa: FBT001 - slixmpp signature
        server_hostname: str | None,
    ) -> bool:
        if self.http_proxy is None:
            return await super()._attempt_connection(host, port, tls, server_hostname)
        self.event_when_connected = "connected"
        if self._current_connection_attempt is None:
            return False
        try:
            sock = await open_tunnel(host, port, self.http_proxy, self.connect_timeout)
            await self.loop.create_connection(
                lambda: self,
                sock=sock,
                ssl=self.get_ssl_context() if tls else None,
                server_hostname=server_hostname if tls else None,
            )
        except (OSError, TransientError) as exc:
            logger.debug("connection through proxy failed: %s", exc)
            self.event("connection_failed", exc)
            return False
        return True


#: Salted passwords kept per (hash, password, salt, iterations): RFC 5802 5.1
#: lets a client cache them.  A server restart makes every account log in at
#: once; with the cache those reconnects derive no key at all.  Memory only,
#: and no more than the passwords the process already holds.
SALTED_PASSWORD_CACHE_SIZE = 65536


@functools.lru_cache(maxsize=SALTED_PASSWORD_CACHE_SIZE)
def salted_password(hash_name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(hash_name, password, salt, iterations)


SCRAM_KEY_KIND = "scram"


def scram_key_record(
    hash_name: str, password: bytes, salt: bytes, iterations: int, salted: bytes
) -> str:
    """What the gateway stores for an account's SCRAM key (encrypted, like the password).

    The salted password of RFC 5802 with the salt, iteration count and hash
    it was derived for, and an HMAC of it keyed with the password: a changed
    password, or a server that changed the salt or count, misses instead of
    sending a wrong proof.
    """
    return json.dumps(
        {
            "hash": hash_name,
            "iterations": iterations,
            "salt": base64.b64encode(salt).decode("ascii"),
            "salted": base64.b64encode(salted).decode("ascii"),
            "check": hmac.new(password, salted, "sha256").hexdigest(),
        },
        sort_keys=True,
    )


def salted_from_record(
    record: str | None, hash_name: str, password: bytes, salt: bytes, iterations: int
) -> bytes | None:
    """The stored salted password if ``record`` was made for exactly these inputs."""
    if not record:
        return None
    try:
        fields = json.loads(record)
        salted = base64.b64decode(fields["salted"], validate=True)
        matches = (
            fields["hash"] == hash_name
            and fields["iterations"] == iterations
            and base64.b64decode(fields["salt"], validate=True) == salt
        )
        check = str(fields["check"])
    except (ValueError, KeyError, TypeError):
        return None
    if not matches:
        return None
    if not hmac.compare_digest(hmac.new(password, salted, "sha256").hexdigest(), check):
        return None
    return salted


def _install_fast_scram() -> None:
    """Make slixmpp's SCRAM key derivation use hashlib's C PBKDF2, cached.

    slixmpp 1.17 derives the SCRAM salted password with a pure-Python HMAC
    loop: ~100 ms of CPU per login at Prosody's 10,000 iterations, run on
    the shared loop, so every login stalled every other account.  RFC 5802's
    Hi() *is* PBKDF2 with dkLen = the hash size; tests check the result is
    identical to slixmpp's own.  (``Client.handle_sasl_challenge`` moves the
    call off the loop thread, and hands it the account's stored key: a
    record that matches the inputs is used instead of deriving, and a
    derivation leaves a new record for the session to report.)
    """
    if getattr(SCRAM.Hi, "purplegw_fast", False):
        return

    def hi(self: Any, text: Any, salt: Any, iterations: int) -> bytes:
        hash_name, password, salt = self.hash().name, bytes(text), bytes(salt)
        stored = salted_from_record(
            getattr(self, "purplegw_stored_key", None), hash_name, password, salt, iterations
        )
        if stored is not None:
            return stored
        salted = salted_password(hash_name, password, salt, iterations)
        if hasattr(self, "purplegw_new_key"):  # a session that keeps its keys asked
            self.purplegw_new_key = scram_key_record(hash_name, password, salt, iterations, salted)
        return salted

    hi.purplegw_fast = True  # type: ignore[attr-defined]
    hi.slixmpp_original = SCRAM.Hi  # type: ignore[attr-defined]
    SCRAM.Hi = hi


TLS_READ_BUFFER = 2 * 1024


def _limit_asyncio_tls_buffers() -> None:
    """Shrink asyncio's per-connection TLS read buffer from 256 KiB to 2 KiB.

    CPython's ``SSLProtocol`` allocates (and zero-fills) a ``max_size``
    bytearray per TLS connection: 256 KiB of RSS per logged-in account, four
    times everything slixmpp itself holds.  XMPP traffic comes in small
    stanzas; a smaller buffer only means more reads for a rare large burst
    (the TLS object keeps what does not fit; a message three times the buffer
    arrives whole, tests/protocols/test_xmpp_session.py).  Measured with tracemalloc: 305
    -> 66 KiB per logged-in account at 16 KiB; every further KiB is 10 MB at
    10,000 accounts, and 2 KiB still holds a login's largest TLS flight
    (ECDSA certificate) and a typical stanza in one read.  Process-wide, so
    TLS connections of other adapters in the same worker profit as well.
    """
    from asyncio import sslproto  # noqa: PLC0415 - private module, touched once

    if getattr(sslproto.SSLProtocol, "max_size", 0) > TLS_READ_BUFFER:
        sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


#: What an idle TLS connection's read buffer is swapped for (``release_tls_read_buffer``).
_NO_BUFFER = bytearray()
_NO_BUFFER_VIEW = memoryview(_NO_BUFFER)


def release_tls_read_buffer(transport: Any) -> bool:
    """Free the read buffer of an idle asyncio TLS connection; False if there is none.

    ``SSLProtocol.get_buffer``, which asyncio calls right before each read
    from the socket, makes a new buffer of ``max_size`` whenever the one it
    holds is smaller (CPython 3.11-3.13).  Swapping in an empty one between
    reads gives back ``TLS_READ_BUFFER`` bytes and their two view objects
    (~2.3 KiB per idle account) for ~0.1 us at the next read.
    tests/protocols/test_xmpp_parked_parser.py fails if asyncio stops
    making a new buffer.
    """
    protocol = getattr(transport, "_ssl_protocol", None)
    if not isinstance(getattr(protocol, "_ssl_buffer", None), bytearray):
        return False
    protocol._ssl_buffer = _NO_BUFFER  # noqa: SLF001 - asyncio's, see above
    protocol._ssl_buffer_view = _NO_BUFFER_VIEW  # noqa: SLF001 - same
    return True


def release_tls_peercert(transport: Any) -> bool:
    """Drop the parsed peer certificate asyncio keeps for ``get_extra_info("peercert")``.

    asyncio's ``SSLProtocol`` stores ``getpeercert()``'s dict (subject,
    issuer, names, dates as nested tuples: ~1.8 KiB for the test server's
    certificate) for the connection's life.  Nothing reads it once the
    handshake was verified: slixmpp takes the DER form from the SSL object,
    which can still parse the certificate on demand.  False if there is no
    such entry.
    """
    extra = getattr(getattr(transport, "_ssl_protocol", None), "_extra", None)
    if not isinstance(extra, dict) or "peercert" not in extra:
        return False
    del extra["peercert"]
    return True


def list_tls_write_backlog(transport: Any) -> bool:
    """Keep asyncio's TLS write backlog in a list; False if there is no deque to replace.

    ``SSLProtocol`` queues the application's writes in a ``collections.deque``
    (~0.7 KiB empty: its first block of 64 slots), empty between writes, for
    the connection's life.  Its methods use only ``append``, ``clear``, truth,
    ``[0]`` (read, assign, ``del``): a list does each the same (CPython
    3.11-3.13), and holds 56 bytes when empty.  The contents, if any, move
    over in order.
    """
    protocol = getattr(transport, "_ssl_protocol", None)
    backlog = getattr(protocol, "_write_backlog", None)
    if not isinstance(backlog, collections.deque):
        return False
    protocol._write_backlog = list(backlog)  # noqa: SLF001 - asyncio's, see above
    return True


def client_class() -> type[Client]:
    """The client class, with the fast SCRAM derivation and small TLS buffers installed."""
    features.install()
    _install_fast_scram()
    _limit_asyncio_tls_buffers()
    log_redaction.install()
    return Client


class XmppSession(Session):
    """An XMPP account logged in through slixmpp (see the module docstring)."""

    def __init__(self, credentials: AccountCredentials, context: SessionContext) -> None:
        super().__init__(credentials, context)
        self.config = context.config
        self.client: Any = None
        self.state = ConnectionState.LOGGED_OUT
        self._closing = False
        self._logged_in = False
        self._unacked: OrderedDict[str, OutgoingMessage] = OrderedDict()
        self._resources: dict[str, dict[str, Presence]] = {}
        self._outcome: asyncio.Future[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._resume_task: asyncio.Task[None] | None = None
        self._last_presence: Presence | None = None
        # (contact, message id) -> what the sender asked for: "receipt", "markable".
        self._asked: OrderedDict[tuple[str, str], frozenset[str]] = OrderedDict()
        # (contact, message id) -> full JID it came from: an error to a bare
        # JID is dropped by the server (RFC 6121 8.5.2.1.1), a bounce must
        # name the resource that sent the message.
        self._origins: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._sent_ids: OrderedDict[str, None] = OrderedDict()
        self._roster_reported = False  # pushes before the login's whole roster are in it
        # The rooms (XEP-0045) this session is in: they end with it.
        self._muc = muc.Muc(self._require_connected, self._call)

    # --- helpers ----------------------------------------------------------------

    @property
    def events(self):
        return self.context.events

    def _report(self, state: ConnectionState, reason: str = "") -> None:
        self.state = state
        try:
            self.events.on_connection_state(state, reason)
        except Exception:
            logger.exception("on_connection_state callback failed")

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Invoke one ``SessionEvents`` callback; a bad callback never breaks the stream."""
        try:
            getattr(self.events, name)(*args, **kwargs)
        except Exception:
            logger.exception("%s callback failed", name)

    def server_address(self) -> tuple[str, int] | None:
        """Where to connect: ``server``, the gtalk default for gtalk rows, else DNS."""
        explicit = parse_server(str(self.config.get("server", "")))
        if explicit:
            return explicit
        if (self.credentials.original_protocol or "").lower() in GTALK_IDS:
            return parse_server(str(self.config.get("gtalk_server", "talk.google.com:5222")))
        return None

    def _label(self) -> str:
        address = self.server_address()
        domain = self.credentials.ext_user.partition("@")[2].partition("/")[0]
        if address:
            return f"{domain} ({address[0]}:{address[1]})"
        return domain

    def _settle(self, exc: BaseException | None) -> None:
        if self._outcome is not None and not self._outcome.done():
            if exc is None:
                self._outcome.set_result(None)
            else:
                self._outcome.set_exception(exc)

    def _build_client(self) -> Any:
        cfg = self.config
        jid = self.credentials.ext_user
        if "/" not in jid and cfg.get("resource"):
            jid = f"{jid}/{cfg['resource']}"
        require_tls = bool(cfg.get("require_tls", True))
        plaintext = bool(cfg.get("allow_plaintext", False)) and not require_tls
        ca_file = str(cfg.get("ca_file", "") or "")
        plugin_config = {
            "feature_mechanisms": {
                "unencrypted_plain": plaintext,
                "unencrypted_scram": not require_tls,
            },
        }
        client = client_class()(
            jid,
            self.credentials.password,
            plugin_config=plugin_config,
            loop=self.context.loop,
            ssl_context=shared_ssl_context(self.context.shared, ca_file),
        )
        client.http_proxy = self.context.proxy
        client.stored_scram_key = self.credentials.derived_keys.get(SCRAM_KEY_KIND)
        client.on_scram_key = functools.partial(self._call, "on_key_derived", SCRAM_KEY_KIND)
        client.connect_timeout = float(cfg.get("connect_timeout", 15))
        client.enable_direct_tls = bool(cfg.get("direct_tls", False))
        client.enable_starttls = not plaintext and not client.enable_direct_tls
        client.enable_plaintext = not require_tls or plaintext
        # slixmpp's own keepalive only writes whitespace; ours pings (below).
        client.whitespace_keepalive = False
        # Only stream management as a slixmpp plugin; disco, ping, receipts
        # and chat states are per-process (features.py).
        # slixmpp asks for an ack every `window` stanzas; _send_chat asks once
        # behind each burst, so a wider window only saves <r/>/<a/> pairs.
        client.register_plugin("xep_0198", {"window": SM_WINDOW})
        client.delay_sm_acks()
        features.register(client)
        # Subscription requests are the SIP user's decision, never automatic.
        client.roster.auto_authorize = None
        client.roster.auto_subscribe = False

        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("failed_all_auth", self._on_auth_failed)
        client.add_event_handler("connection_failed", self._on_connection_failed)
        client.add_event_handler("ssl_invalid_chain", self._on_ssl_invalid)
        client.add_event_handler("stream_error", self._on_stream_error)
        client.add_event_handler("disconnected", self._on_disconnected)
        client.add_event_handler("session_resumed", self._on_session_resumed)
        client.add_event_handler("session_end", self._on_session_end)
        client.add_event_handler("stanza_acked", self._on_stanza_acked)
        # slixmpp's "message" event only fires for messages with a <body/>;
        # XHTML-only messages and bare chat states need every <message/>.
        client.register_handler(
            Callback(
                "purplegw message", MatchXPath(f"{{{client.default_ns}}}message"), self._on_message
            )
        )
        # Not presence_available: slixmpp names that event after <show/>
        # (presence_dnd, presence_away, ...).
        client.add_event_handler("presence", self._on_presence)
        client.add_event_handler("presence_subscribe", self._on_subscribe)
        client.add_event_handler("presence_subscribed", self._on_subscribed)
        client.add_event_handler("presence_unsubscribed", self._on_unsubscribed)
        # After slixmpp's own handler, which keeps client_roster.
        client.add_event_handler("roster_update", self._on_roster_push)
        return client

    # --- login / logout -----------------------------------------------------------

    async def login(self) -> None:
        if self._logged_in:
            return
        self._closing = False
        self._report(ConnectionState.CONNECTING)
        try:
            self.client = self._build_client()
        except InvalidJID as exc:
            # Retrying cannot help: the account row itself is wrong.
            error = BadCredentialsError(f"{self.credentials.ext_user!r} is not a valid JID: {exc}")
            self._report(ConnectionState.BAD_CREDENTIALS, str(error))
            raise error from exc
        self._outcome = self.context.loop.create_future()
        address = self.server_address()
        if address:
            self.client.connect(*address)
        else:
            self.client.connect()
        timeout = float(self.config.get("connect_timeout", 15)) + float(
            self.config.get("login_timeout", 30)
        )
        try:
            await asyncio.wait_for(asyncio.shield(self._outcome), timeout)
        except TimeoutError:
            exc: BaseException = TransientError(
                f"XMPP login of {self.credentials.ext_user} via {self._label()} "
                f"timed out after {timeout:.0f}s"
            )
        except BadCredentialsError as e:
            exc = e
        except TransientError as e:
            exc = e
        except asyncio.CancelledError:
            await self._teardown()
            raise
        else:
            self._logged_in = True
            self._report(ConnectionState.CONNECTED)
            self._start_keepalive()
            return
        await self._teardown()
        if isinstance(exc, BadCredentialsError):
            self._report(ConnectionState.BAD_CREDENTIALS, str(exc))
        else:
            self._report(ConnectionState.TRANSIENT_DISCONNECT, str(exc))
        raise exc

    async def logout(self) -> None:
        self._closing = True
        await self._teardown(graceful=True)
        if self.state is not ConnectionState.LOGGED_OUT:
            self._report(ConnectionState.LOGGED_OUT)

    async def _teardown(self, *, graceful: bool = False) -> None:
        """Close the stream and cancel every task slixmpp or we left on the loop."""
        self._closing = True
        self._logged_in = False
        for task in (self._keepalive_task, self._resume_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._keepalive_task = self._resume_task = None
        self._muc.clear()
        client, self.client = self.client, None
        if client is None:
            return
        client.cancel_connection_attempt()
        if graceful and client.transport is not None:
            if self._last_presence is None or self._last_presence.is_open:
                with contextlib.suppress(Exception):
                    client.send_presence(ptype="unavailable")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(wait=2.0), 5.0)
        if client.transport is not None:
            client.abort()
        # disconnect() leaves the outgoing filter task running.
        filters = getattr(client, "_run_out_filters", None)
        if filters is not None and not filters.done():
            filters.cancel()

    def _start_keepalive(self) -> None:
        interval = float(self.config.get("keepalive", 60) or 0)
        if interval > 0:
            self._keepalive_task = self.context.loop.create_task(self._keepalive(interval))

    async def _keepalive(self, interval: float) -> None:
        """Ping the server; an unanswered ping closes the transport (-> disconnected)."""
        while True:
            await asyncio.sleep(interval)
            client = self.client
            if client is None:
                return
            if client.transport is None:
                continue
            try:
                await features.ping_iq(client, client.boundjid.domain).send(timeout=interval)
            except IqError:
                continue  # an error reply is still a reply: the stream is alive
            except Exception as exc:  # noqa: BLE001 - timeout or connection gone: dead
                if self.client is client and client.transport is not None:
                    logger.info(
                        "%s: keepalive ping failed (%s), dropping connection",
                        self.credentials.ext_user,
                        exc,
                    )
                    client.abort()

    # --- slixmpp events: connection ----------------------------------------------------

    async def _on_session_start(self, _event: Any) -> None:
        client = self.client
        if self._logged_in:
            # A fresh session after a failed resumption: the ledger is not
            # valid on it; treat it as the lost connection it is.
            self._fail_resumption("stream resumption failed; server started a new session")
            return
        # Roster request and initial presence written together, without
        # waiting for the roster in between: RFC 6121 2.2 asks for the roster
        # request *before* initial presence, and the server answers in that
        # order, so the whole roster is reported (_on_login_roster, as its
        # result is read) before any contact's presence it triggers.  With
        # XEP-0198's <enable/> just written, the three leave in one write.
        roster = client.get_roster(
            callback=self._on_login_roster, timeout=float(self.config.get("login_timeout", 30))
        )
        sent = self._last_presence or Presence(Status.AVAILABLE)
        self._send_own_presence(sent)
        try:
            await roster
        except Exception as exc:  # noqa: BLE001 - any failure here fails the login
            self._settle(TransientError(f"roster request failed on {self._label()}: {exc}"))
            return
        # <enabled/> came before the roster: the server answers in order.
        client.ask_for_ack()
        if self._last_presence is not None and self._last_presence is not sent:
            # Changed while the roster was on its way (set_presence waits
            # for the login): the latest one wins.
            self._send_own_presence(self._last_presence)
        client.shed_negotiation_handlers()
        self._settle(None)

    def _on_login_roster(self, iq: Any) -> None:
        """The login's roster result, after slixmpp's own handler filled ``client_roster``."""
        if iq["type"] != "result" or self.client is None or self._roster_reported:
            return
        self._call("on_roster", self._roster_items())
        self._roster_reported = True

    def _roster_items(self) -> list[RosterItem]:
        roster = self.client.client_roster
        own = self.client.boundjid.bare
        return [
            _roster_item(
                jid, roster[jid]["name"], roster[jid]["subscription"], roster[jid]["pending_out"]
            )
            for jid in roster
            if jid != own
        ]

    def _on_roster_push(self, iq: Any) -> None:
        """A roster push (RFC 6121 2.1.6): another client or the server changed the roster."""
        if iq["type"] != "set" or not self._roster_reported:
            return  # the login's own result is reported whole by _on_session_start
        if iq["from"].bare and iq["from"].bare != self.client.boundjid.bare:
            return  # slixmpp refused it (a spoofed push)
        for jid, item in iq["roster"]["items"].items():
            bare = jid.bare if hasattr(jid, "bare") else str(jid)
            if item["subscription"] == "remove":
                self._call("on_roster_removed", bare)
            else:
                pending = item["ask"] == "subscribe"
                self._call(
                    "on_roster_item",
                    _roster_item(bare, item["name"], item["subscription"], pending),
                )

    def _on_auth_failed(self, _event: Any) -> None:
        client = self.client
        secure = (
            client is not None
            and client.transport is not None
            and (client.transport.get_extra_info("ssl_object") is not None)
        )
        if not secure and self.config.get("require_tls", True):
            self._settle(
                TransientError(
                    f"{self._label()} offered no usable TLS; "
                    "refusing to send the password in the clear"
                )
            )
        else:
            self._settle(
                BadCredentialsError(
                    f"{self._label()} rejected the credentials of {self.credentials.ext_user}"
                )
            )

    def _on_connection_failed(self, error: Any) -> None:
        # A direct TLS (XEP-0368) handshake fails here, not as ssl_invalid_chain.
        # SSLError is an OSError whose errno is OpenSSL's: strerror would call a
        # rejected certificate "Operation not permitted".
        if isinstance(error, ssl.SSLCertVerificationError):
            self._on_ssl_invalid(error)
            return
        if isinstance(error, ssl.SSLError):
            error = f"TLS failed: {error}"
        elif isinstance(error, OSError) and error.errno:
            error = os.strerror(error.errno)  # "Connection refused", not "[Errno 111] ..."
        self._settle(TransientError(f"cannot connect to {self._label()}: {error}"))
        if self._resume_task is not None:
            self._fail_resumption(f"reconnect to {self._label()} failed: {error}")

    def _on_ssl_invalid(self, error: Any) -> None:
        ca_file = self.config.get("ca_file")
        if "mismatch" in str(error):  # a trusted certificate for another name: ca_file won't help
            hint = "the certificate names another host"
        elif ca_file:
            hint = f"not signed by a CA in ca_file {ca_file}"
        else:
            hint = "set ca_file to trust a private CA"
        message = f"TLS certificate of {self._label()} could not be verified: {error} ({hint})"
        self._settle(TlsVerificationError(message))
        if self._resume_task is not None:
            self._fail_resumption(message)

    def _on_stream_error(self, error: Any) -> None:
        condition = error["condition"] if error is not None else ""
        text = error["text"] if error is not None else ""
        logger.info("%s: stream error %s %s", self.credentials.ext_user, condition, text)
        if condition == "not-authorized":
            self._settle(BadCredentialsError(f"{self._label()}: {condition} {text}".strip()))
        else:
            self._settle(
                TransientError(f"{self._label()} closed the stream: {condition} {text}".strip())
            )

    def _on_disconnected(self, reason: Any) -> None:
        if self._outcome is not None and not self._outcome.done():
            if isinstance(reason, ssl.SSLError):
                # asyncio reports a failed STARTTLS handshake as the lost
                # connection, before slixmpp's ssl_invalid_chain event.
                self._on_ssl_invalid(reason)
            else:
                self._settle(
                    TransientError(f"{self._label()} closed the connection during login: {reason}")
                )
            return
        if self._closing or not self._logged_in:
            return
        client = self.client
        sm = client.plugin["xep_0198"] if client is not None else None
        if sm is not None and sm.sm_id and self._resume_task is None:
            self._report(ConnectionState.CONNECTING, f"connection lost ({reason}); resuming stream")
            self._resume_task = self.context.loop.create_task(self._resume())
            return
        if self._resume_task is not None:
            self._fail_resumption(f"connection lost again while resuming: {reason}")
            return
        self._lost(f"connection to {self._label()} lost: {reason}")

    async def _resume(self) -> None:
        """One XEP-0198 resumption attempt; slixmpp resends the unacked stanzas."""
        client = self.client
        address = self.server_address()
        if address:
            client.connect(*address)
        else:
            client.connect()
        timeout = float(self.config.get("connect_timeout", 15)) + float(
            self.config.get("login_timeout", 30)
        )
        await asyncio.sleep(timeout)
        self._fail_resumption(f"stream resumption with {self._label()} timed out")

    def _on_session_resumed(self, _event: Any) -> None:
        task, self._resume_task = self._resume_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        # slixmpp resent what its own queue held.  A message queued just as
        # the connection died never reached that queue (slixmpp drops it
        # with a log line): only our ledger knows it, so send it again here.
        sm = self.client.plugin["xep_0198"]
        tracked = {stanza["id"] for _seq, stanza in sm.unacked_queue if stanza.name == "message"}
        lost = [m for m in self._unacked.values() if m.message_id not in tracked]
        for message in lost:
            self._send_chat(self.client, message)
        logger.info(
            "%s: stream resumed, %d message(s) unacknowledged, %d of them sent again by us",
            self.credentials.ext_user,
            len(self._unacked),
            len(lost),
        )
        self._report(ConnectionState.CONNECTED, "stream resumed")

    def _on_session_end(self, _event: Any) -> None:
        if self._resume_task is not None:
            self._fail_resumption(f"{self._label()} refused stream resumption")

    def _fail_resumption(self, reason: str) -> None:
        if self._closing:
            return
        self._lost(reason)

    def _lost(self, reason: str) -> None:
        """The connection is gone for good: report it, keep the ledger for the caller."""
        self._logged_in = False
        self._closing = True
        if self._unacked:
            reason = f"{reason}; {len(self._unacked)} message(s) not acknowledged"
        logger.info("%s: %s", self.credentials.ext_user, reason)
        self.context.loop.create_task(self._teardown())
        self._report(ConnectionState.TRANSIENT_DISCONNECT, reason)

    def _on_stanza_acked(self, stanza: Any) -> None:
        if stanza.name == "message" and self._unacked.pop(stanza["id"], None) is not None:
            self._call("on_message_acked", stanza["id"])

    # --- slixmpp events: traffic ----------------------------------------------------------

    def _on_message(self, msg: Any) -> None:
        # Read from the stanza's XML, not through slixmpp's stanza interfaces
        # (``msg["from"]``, ``msg["type"]``, ``msg["receipt"]``...): each of
        # those looks up plugins and builds objects, and this runs for every
        # message the account receives ("Receive path CPU", docs/messaging.md).
        xml = msg.xml
        sender = _jid_parts(xml.get("from", ""))
        # No receipt on arrival: a receipt says the *phone* got the message,
        # so send_receipt sends it when the SIP side reports delivery.
        received = xml.find(RECEIVED_TAG)
        if received is not None:
            receipt = received.get("id", "")
            if receipt:
                self._call("on_receipt", sender[0], receipt)
        if self._room_message(msg, xml.get("type", "normal"), sender):
            return
        contact = sender[0]
        text = message_text(xml)
        if self.context.strangers == "deny" and not self._known(contact):
            if text is not None:
                self._refuse_stranger(msg)
            return  # nor their typing notifications
        if text is not None:
            message_id = xml.get("id") or ""
            receipts = self._remember_requests(contact, xml, message_id, sender[2])
            # Bidi overrides and C1 controls are valid XML: not for a phone's screen.
            args: list[Any] = [contact, for_phone(text), message_id or None]
            sent_at = _delay_stamp(xml)
            if sent_at is not None or receipts:
                args.append(sent_at)
            if receipts:
                # Kept with the queued message: the receipt is owed after a restart too.
                args.append(receipts)
            self._hand_on(args)
            return
        state = _chat_state(xml)
        if state:
            self._call("on_typing", contact, TypingState(state))

    def _hand_on(self, args: list[Any]) -> None:
        """``on_message``, with an ack token when the gateway will report it stored."""
        # Asked per message: the gateway may start listening after the session.
        token = self.client.hold_ack() if getattr(self.events, "takes_ack_tokens", False) else None
        if token is None:
            self._call("on_message", *args)
        else:
            # The server hears of it once the gateway stored it (messages_stored).
            self._call("on_message", *args, ack_token=token)

    def _room_message(self, msg: Any, mtype: str, sender: tuple[str, str, str]) -> bool:
        """Not a contact's message (True): a room's, an occupant's, an error or a headline."""
        if mtype in ("error", "headline"):
            if mtype == "error":
                self._on_message_error(msg)
            return True
        if mtype == "groupchat":
            text = message_text(msg.xml)
            self._muc.groupchat(msg, for_phone(text) if text else None, _delay_stamp(msg.xml))
            return True
        if mtype in ("chat", "normal") and sender[1]:
            if not self._muc.owns(sender[0]):
                return False
            text = message_text(msg.xml)
            if text:  # an occupant, privately (its typing notifications are not)
                self._muc.private(msg, for_phone(text))
            return True
        return False

    def _on_message_error(self, msg: Any) -> None:
        """A stanza error for a message we sent fails that message for good."""
        message_id = msg["id"]
        condition = error_condition(msg.xml)
        logger.info(
            "%s: error for message %s from %s: %s",
            self.credentials.ext_user,
            message_id,
            msg["from"],
            condition,
        )
        text = msg["error"]["text"]
        reason = f"XMPP {condition}" + (f": {text}" if text else "")
        if message_id and self._muc.error(msg, xmpp_errors.status_for_condition(condition), reason):
            return  # a post to a room refused
        if not message_id or (message_id not in self._unacked and message_id not in self._sent_ids):
            return  # not a message of ours (a typing notification, a receipt...)
        self._unacked.pop(message_id, None)  # resending it would get the same error
        self._sent_ids.pop(message_id, None)
        self._call(
            "on_message_failed", message_id, xmpp_errors.status_for_condition(condition), reason
        )

    def _known(self, contact: str) -> bool:
        """Whether ``contact`` is on the roster with a subscription either way."""
        client = self.client
        if client is None:
            return False
        roster = client.client_roster
        return contact in roster and roster[contact]["subscription"] in _KNOWN_SUBSCRIPTIONS

    def _refuse_stranger(self, msg: Any) -> None:
        logger.info(
            "%s: message from stranger %s refused", self.credentials.ext_user, msg["from"].bare
        )
        self._send_error(
            msg["from"],
            msg["id"] or None,
            "policy-violation",
            "modify",
            "this user does not accept messages from contacts not on the roster",
        )

    def _send_error(
        self,
        to: Any,
        message_id: str | None,
        condition: str,
        etype: str,
        text: str,
    ) -> None:
        """A message of type error (RFC 6120 8.3) answering ``message_id``."""
        client = self.client
        reply = client.make_message(mto=to, mtype="error")
        if message_id:
            reply["id"] = message_id
        error = reply["error"]
        error["type"] = etype
        # Built by hand: slixmpp 1.17 knows the RFC 3920 conditions only and
        # silently writes feature-not-implemented for policy-violation.
        for child in list(error.xml):
            if child.tag.startswith(f"{{{STANZAS_NS}}}"):
                error.xml.remove(child)
        error.xml.insert(0, Element(f"{{{STANZAS_NS}}}{condition}"))
        if text:
            reply["error"]["text"] = text
        reply.send()

    def _remember_requests(self, contact: str, xml: Element, message_id: str, origin: str) -> str:
        """Remember what the sender of a message asked to be told; returns it ("receipt,markable").

        ``origin`` is the full JID it came from (bounces and receipts go there).
        """
        if not message_id:
            return ""
        key = (contact, message_id)
        origins = self._origins
        origins[key] = origin
        if len(origins) > RECEIPT_MEMORY:
            origins.popitem(last=False)
        receipt = xml.find(RECEIPT_REQUEST_TAG) is not None
        markable = xml.find(MARKABLE_TAG) is not None
        if not (receipt or markable):
            return ""
        asked = _ASKED[receipt, markable]
        self._asked[key] = asked[0]
        while len(self._asked) > RECEIPT_MEMORY:
            self._asked.popitem(last=False)
        return asked[1]

    def _on_presence(self, pres: Any) -> None:
        client = self.client
        if client is None:
            return
        jid = pres["from"]
        if jid.bare == client.boundjid.bare:
            return  # our own other resources
        if self._muc.owns(jid.bare):
            self._muc.presence(pres, error_condition(pres.xml))
            return
        parsed = parse_presence(pres.xml)
        if parsed.type not in (None, "unavailable"):
            return  # subscription management and errors: handled elsewhere
        current = self._resources.setdefault(jid.bare, {})
        presence = presence_from_xmpp(parsed.type, parsed.show, parsed.status, idle=parsed.idle)
        if presence.status is Status.OFFLINE:
            if not jid.resource:
                current.clear()  # from the bare JID: every resource is gone (RFC 6121 4.5.3)
            current.pop(jid.resource, None)
            snapshot = dict(current) or {jid.resource: presence}
            if not current:
                del self._resources[jid.bare]
        else:
            current[jid.resource] = presence
            snapshot = dict(current)
        self._call("on_contact_presence", ContactPresence(jid.bare, snapshot))

    def _on_subscribe(self, pres: Any) -> None:
        self._call("on_authorization_request", pres["from"].bare, pres["status"] or "")

    def _on_subscribed(self, pres: Any) -> None:
        self._call("on_authorization_answer", pres["from"].bare, AuthorizationAnswer.ALLOW)

    def _on_unsubscribed(self, pres: Any) -> None:
        self._call("on_authorization_answer", pres["from"].bare, AuthorizationAnswer.DENY)

    # --- requests from the SIP side -------------------------------------------------------

    def _require_connected(self) -> Any:
        client = self.client
        if client is None or not self._logged_in or client.transport is None or self._resume_task:
            raise DeliveryError(f"{self.credentials.ext_user} is not connected to XMPP", 503)
        return client

    def _jid(self, contact: str) -> Any:
        try:
            jid = slixmpp.JID(contact)
        except InvalidJID as exc:
            raise DeliveryError(f"{contact!r} is not a valid XMPP address: {exc}", 404) from exc
        if not jid.user or not jid.domain:
            raise DeliveryError(f"{contact!r} is not a user@domain XMPP address", 404)
        return jid

    def unacked_messages(self) -> list[OutgoingMessage]:
        """Messages sent but never acknowledged by the server, oldest first.

        Meaningful once the session reported ``TRANSIENT_DISCONNECT``: resend
        them (same ``message_id``) through the next session.
        """
        return list(self._unacked.values())

    async def send_message(
        self,
        contact: str,
        text: str,
        message_id: str,
        receipt: bool = False,  # noqa: FBT001, FBT002 - positional: requests carry args as a tuple
    ) -> bool:
        jid = self._jid(contact)
        # Checked here too: a message queued before the edge check existed
        # (or with a larger limit) would otherwise close the stream.
        refused = xmpp_errors.unsendable(text, self._max_text_bytes())
        if refused is not None:
            raise DeliveryError(refused[1], refused[0])
        client = self._require_connected()
        return self._send_chat(client, OutgoingMessage(str(jid), text, message_id, receipt))

    def _send_chat(self, client: Any, message: OutgoingMessage) -> bool:
        """Write one chat message; True if the server will acknowledge it (XEP-0198).

        The stanza is built as an element tree and wrapped once: slixmpp's
        ``make_message`` plus three ``msg[...] =`` plugin writes cost about
        four times as much, and its generated id (``uuid4``, a ``getrandom``
        call that gives up the GIL) was overwritten at once.
        """
        tracked = client.plugin["xep_0198"].enabled_out
        xml = Element(
            MESSAGE_TAG, {"type": "chat", "to": message.contact, "id": message.message_id}
        )
        if client.default_lang:
            xml.set(XML_LANG, client.default_lang)
        SubElement(xml, BODY_TAG).text = message.text
        if message.receipt or not tracked:
            # Without stream management a receipt is the only confirmation.
            SubElement(xml, RECEIPT_REQUEST_TAG)
        SubElement(xml, ACTIVE_TAG)  # XEP-0085: we are in the conversation
        msg = slixmpp.Message(client, xml=xml)
        if tracked:
            self._unacked[message.message_id] = message
        self._sent_ids[message.message_id] = None
        while len(self._sent_ids) > SENT_MEMORY:
            self._sent_ids.popitem(last=False)
        # The write that carries it ends with an <r/> (Client._ack_wanted):
        # one request behind all the messages of this turn of the loop.
        msg.send()
        return bool(tracked)

    def _max_text_bytes(self) -> int:
        return int(self.config.get("max_text_bytes", xmpp_errors.DEFAULT_MAX_TEXT_BYTES))

    async def bounce(self, contact: str, message_id: str | None, status: int, reason: str) -> None:
        """A type="error" message with the original id; condition from ``status`` (errors.py)."""
        jid = self._jid(contact)
        self._require_connected()
        condition, etype = xmpp_errors.condition_for_status(status)
        origin = self._origins.pop((jid.bare, message_id), None) if message_id else None
        self._send_error(origin or jid, message_id, condition, etype, reason)

    def messages_stored(self, tokens: Sequence[int]) -> None:
        """The gateway stored (or refused) the messages of these ack tokens (Session's)."""
        client = self.client
        if client is not None:
            client.release_acks(tokens)

    async def send_receipt(
        self, contact: str, message_id: str, kind: str, receipts: str = ""
    ) -> None:
        """XEP-0184 ``received`` / XEP-0333 ``received``/``displayed``, if the sender asked.

        What was asked comes from this session's memory of the message or, for
        one received before a restart, from ``receipts`` (kept in the outbox).
        """
        jid = self._jid(contact)
        client = self._require_connected()
        asked = self._asked.get((jid.bare, message_id)) or frozenset(
            r for r in receipts.split(",") if r
        )
        children = []
        if kind == "delivered" and "receipt" in asked:
            children.append(Element(f"{{{RECEIPTS_NS}}}received", id=message_id))
        if "markable" in asked and kind in ("delivered", "displayed"):
            marker = "received" if kind == "delivered" else "displayed"
            children.append(Element(f"{{{MARKERS_NS}}}{marker}", id=message_id))
        if kind == "displayed" or "markable" not in asked:
            # Nothing more will be asked about this message.
            self._asked.pop((jid.bare, message_id), None)
        if not children:
            return  # the contact asked for nothing of this kind
        origin = self._origins.get((jid.bare, message_id)) or jid
        msg = client.make_message(mto=origin, mtype="chat")
        for child in children:
            msg.xml.append(child)
        msg.send()

    async def send_typing(self, contact: str, state: TypingState) -> None:
        jid = self._jid(contact)
        client = self._require_connected()
        msg = client.make_message(mto=jid, mtype="chat")
        msg["chat_state"] = state.value
        msg.send()

    def _send_own_presence(self, presence: Presence) -> None:
        client = self.client
        xp = presence_to_xmpp(presence, int(self.config.get("priority", 0)))
        stanza = client.make_presence(
            pshow=xp.show,
            pstatus=xp.status,
            ptype=xp.type,
            ppriority=xp.priority if xp.type is None else None,
        )
        if xp.idle and xp.type is None:
            # XEP-0319 requires "since"; PIDF idle carries no time, so: now.
            since = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            stanza.xml.append(Element(f"{{{IDLE_NS}}}idle", since=since))
        stanza.send()

    async def set_presence(self, presence: Presence) -> None:
        self._last_presence = presence
        client = self.client
        if client is None or not self._logged_in:
            return  # sent as initial presence by the next login
        self._send_own_presence(presence)

    async def add_contact(self, contact: str) -> None:
        jid = self._jid(contact)
        client = self._require_connected()
        try:
            await client.update_roster(
                jid.bare, timeout=float(self.config.get("login_timeout", 30))
            )
        except Exception as exc:
            raise DeliveryError(f"roster add of {jid.bare} failed: {exc}", 500) from exc
        client.send_presence(pto=jid.bare, ptype="subscribe")

    async def remove_contact(self, contact: str) -> None:
        jid = self._jid(contact)
        client = self._require_connected()
        client.send_presence(pto=jid.bare, ptype="unsubscribe")
        self._resources.pop(jid.bare, None)
        item = client.client_roster[jid.bare]
        if not item["from"] and not item["pending_in"]:
            # Nothing else ties the contact to the account (it does not see the
            # user either): no roster entry stays behind (RFC 6121 2.5).
            await client.client_roster.update(
                jid.bare, subscription="remove", timeout=float(self.config.get("login_timeout", 30))
            )

    async def answer_authorization(self, contact: str, answer: AuthorizationAnswer) -> None:
        jid = self._jid(contact)
        client = self._require_connected()
        ptype = "subscribed" if answer is AuthorizationAnswer.ALLOW else "unsubscribed"
        client.send_presence(pto=jid.bare, ptype=ptype)

    # --- rooms (XEP-0045, purplegw/protocols/xmpp/muc.py) ---------------------------

    async def is_room(self, contact: str) -> bool:
        self._require_connected()
        cache = self.context.shared.setdefault("xmpp_conference_services", {})
        return await self._muc.is_room(contact, cache)

    async def join_room(
        self, room: str, nick: str, history: int = 0, since: float | None = None
    ) -> list[str]:
        self._jid(room)
        self._require_connected()
        return await self._muc.join(room, nick, history, since)

    async def leave_room(self, room: str) -> None:
        self._require_connected()
        await self._muc.leave(room)

    async def send_room_message(self, room: str, text: str, message_id: str) -> None:
        refused = xmpp_errors.unsendable(text, self._max_text_bytes())
        if refused is not None:
            raise DeliveryError(refused[1], refused[0])
        self._require_connected()
        self._muc.post(room, text, message_id)

    async def room_occupants(self, room: str) -> list[str]:
        return self._muc.occupants(room)

    async def change_nick(self, room: str, nick: str) -> None:
        if not nick or "/" in nick or any(c.isspace() and c != " " for c in nick):
            raise InvalidContactError("not a valid nick", 400)
        self._require_connected()
        await self._muc.rename(room, nick)

    async def room_bookmarks(self) -> list[tuple[str, str]]:
        client = self._require_connected()
        return await self._muc.bookmarks(client.boundjid.bare)


def _roster_item(jid: str, name: str, subscription: str, pending_out: bool) -> RosterItem:  # noqa: FBT001 - the roster's own fields, in order
    """A ``RosterItem`` from one XMPP roster entry; unknown states read as ``none``."""
    if subscription not in ROSTER_SUBSCRIPTIONS:
        subscription = "none"
    return RosterItem(str(jid), name or "", subscription, bool(pending_out))


@functools.lru_cache(maxsize=JID_CACHE_SIZE)
def _jid_parts(value: str) -> tuple[str, str, str]:
    """(bare, resource, full) of a stanza's ``from``, normalised as ``msg["from"]`` would be.

    Raises ``InvalidJID`` as ``msg["from"]`` does (never cached).
    """
    jid = slixmpp.JID(value)
    return jid.bare, jid.resource, jid.full


def _chat_state(xml: Element) -> str:
    """The XEP-0085 chat state a message carries (its first one), or ""."""
    for child in xml:
        state = _CHAT_STATE_TAGS.get(child.tag)
        if state is not None:
            return state
    return ""


def _delay_stamp(xml: Element) -> float | None:
    """XEP-0203 ``<delay stamp=.../>`` as POSIX seconds; None when absent or unreadable."""
    delay = xml.find(DELAY_TAG)
    if delay is None:
        return None
    stamp = delay.get("stamp") or ""
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # XEP-0082 says UTC
    return when.timestamp()


def error_condition(xml: Element) -> str:
    """The defined condition of a stanza error (RFC 6120 8.3.3), any of them.

    Read from the XML: slixmpp 1.17 reports "" for the RFC 6120 conditions
    RFC 3920 did not have (policy-violation).
    """
    error = xml.find("{jabber:client}error")
    if error is None:
        return ""
    for child in error:
        if child.tag.startswith(f"{{{STANZAS_NS}}}") and not child.tag.endswith("}text"):
            return child.tag.partition("}")[2]
    return ""
