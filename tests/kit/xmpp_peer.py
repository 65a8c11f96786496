"""An independent XMPP client for tests: the "other person" on the XMPP side.

It uses slixmpp directly, not purplegw's adapter, on its own asyncio loop in
its own thread, so tests written in plain blocking style can drive it::

    with XmppPeer(user.jid, user.password, prosody.host, prosody.port,
                  ca_file=prosody.ca_file) as bob:
        bob.send_message("alice@localhost", "hi", msg_id="m1", request_receipt=True)
        bob.send_presence(show="dnd", status="in a meeting")
        bob.send_chat_state("alice@localhost", "composing")
        bob.subscribe("alice@localhost")
        bob.answer_subscription("alice@localhost", allow=True)
        got = bob.wait_for(lambda e: e.kind == "message" and e.body == "hello")

Everything it receives is recorded as ``PeerEvent`` (``kind`` one of
"message", "chat_state", "receipt", "presence", "subscribe", "subscribed",
"unsubscribed", "unsubscribe") in ``events``; ``wait_for`` polls that list.
Incoming receipt requests (XEP-0184) are answered automatically, subscription
requests never are (tests answer them).  After a lost connection it
reconnects on its own (stream management resumes where the server kept the
state): it is a test tool, not the code under test.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self
from xml.etree import ElementTree as ET
from xml.sax.saxutils import quoteattr

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

logger = logging.getLogger(__name__)
_roster_ids = itertools.count(1)


@dataclass(frozen=True)
class PeerEvent:
    kind: str
    sender: str  # full JID
    body: str | None = None
    msg_id: str | None = None
    show: str | None = None
    status: str | None = None
    ptype: str | None = None
    chat_state: str | None = None
    receipt_for: str | None = None
    receipt_requested: bool = False
    at: float = field(default_factory=time.monotonic)

    @property
    def bare(self) -> str:
        return self.sender.partition("/")[0]


class XmppPeer:
    def __init__(  # a connection needs these
        self,
        jid: str,
        password: str,
        host: str,
        port: int,
        *,
        ca_file: str | None = None,
        resource: str = "peer",
        reconnect: bool = True,
        muc: bool = False,
    ) -> None:
        self.jid = jid if "/" in jid else f"{jid}/{resource}"
        self.password = password
        self.host = host
        self.port = port
        self.ca_file = ca_file
        self.reconnect = reconnect
        self.muc = muc  # slixmpp's own XEP-0045 plugin: join_room, configure_room...
        self.events: list[PeerEvent] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"xmpp-peer {jid}", daemon=True
        )
        self._client: Any = None
        self._stopping = False
        self._online: asyncio.Event | None = None
        self.sessions_started = 0

    # --- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> XmppPeer:
        self._thread.start()
        self._run(self._start(), timeout)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self._stop(), 10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coro: Any, timeout: float) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def _call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        async def wrapper() -> Any:
            return fn()

        return self._run(wrapper(), timeout)

    async def _start(self) -> None:
        context = ssl.create_default_context(cafile=self.ca_file)
        client = slixmpp.ClientXMPP(self.jid, self.password, loop=self._loop, ssl_context=context)
        client.enable_direct_tls = False
        client.use_aiodns = False
        for plugin in ("xep_0030", "xep_0085", "xep_0184", "xep_0199", "xep_0071", "xep_0198"):
            client.register_plugin(plugin)
        if self.muc:
            client.register_plugin("xep_0045")
        client.plugin["xep_0184"].auto_ack = True
        client.plugin["xep_0184"].auto_request = False
        client.roster.auto_authorize = None
        client.roster.auto_subscribe = False
        self._online = asyncio.Event()
        client.add_event_handler("session_start", self._on_session_start)
        client.add_event_handler("session_resumed", lambda _e: self._online.set())
        client.add_event_handler("disconnected", self._on_disconnected)
        # The "message" event needs a <body/>; record bare chat states too.
        client.register_handler(
            Callback("peer message", MatchXPath("{jabber:client}message"), self._on_message)
        )
        client.add_event_handler("receipt_received", self._on_receipt)
        for kind in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            client.add_event_handler(f"presence_{kind}", self._recorder(kind))
        record_presence = self._recorder("presence")
        # presence_available is not fired for <show/> stanzas (slixmpp names
        # the event after the show value), so filter the generic event.
        client.add_event_handler(
            "presence",
            lambda p: record_presence(p) if p.xml.get("type") in (None, "unavailable") else None,
        )
        self._client = client
        client.connect(self.host, self.port)
        await asyncio.wait_for(self._online.wait(), 30)

    async def _on_session_start(self, _event: Any) -> None:
        await self._client.get_roster()
        self._client.send_presence()
        self.sessions_started += 1
        self._online.set()

    def _on_disconnected(self, _reason: Any) -> None:
        self._online.clear()
        if not self._stopping and self.reconnect:
            self._loop.call_later(0.2, self._client.connect, self.host, self.port)

    async def _stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is None:
            return
        client.cancel_connection_attempt()
        if client.transport is not None:
            try:
                await asyncio.wait_for(client.disconnect(wait=1.0), 5)
            except Exception:  # noqa: BLE001 - best effort at teardown
                client.abort()
        task = getattr(client, "_run_out_filters", None)
        if task is not None and not task.done():
            task.cancel()
        pending = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
        for t in pending:
            t.cancel()

    def wait_online(self, timeout: float = 30.0) -> None:
        async def wait() -> None:
            assert self._online is not None
            await self._online.wait()

        self._run(wait(), timeout)

    # --- recording -----------------------------------------------------------------

    def _record(self, event: PeerEvent) -> None:
        with self._lock:
            self.events.append(event)

    def _recorder(self, kind: str) -> Callable[[Any], None]:
        def record(pres: Any) -> None:
            self._record(
                PeerEvent(
                    kind=kind,
                    sender=str(pres["from"]),
                    show=pres["show"] or None,
                    status=pres["status"] or None,
                    ptype=pres.xml.get("type"),
                )
            )

        return record

    def _on_message(self, msg: Any) -> None:
        if msg["type"] == "error":
            # An error stanza (RFC 6120 8.3): condition in ``status``, text in ``body``.
            self._record(
                PeerEvent(
                    kind="error",
                    sender=str(msg["from"]),
                    msg_id=msg["id"] or None,
                    status=_condition(msg),
                    body=msg["error"]["text"] or None,
                    ptype=msg["error"]["type"] or None,
                )
            )
            return
        body = msg["body"] or None
        for marker in ("received", "displayed", "acknowledged"):  # XEP-0333
            found = msg.xml.find(f"{{urn:xmpp:chat-markers:0}}{marker}")
            if found is not None:
                self._record(
                    PeerEvent(
                        kind="marker",
                        sender=str(msg["from"]),
                        chat_state=marker,
                        receipt_for=found.get("id"),
                    )
                )
        state = msg["chat_state"] or None
        kind = "message" if body is not None else ("chat_state" if state else "other")
        self._record(
            PeerEvent(
                kind=kind,
                sender=str(msg["from"]),
                body=body,
                msg_id=msg["id"] or None,
                chat_state=state,
                receipt_requested=bool(msg["request_receipt"]),
            )
        )

    def _on_receipt(self, msg: Any) -> None:
        self._record(PeerEvent(kind="receipt", sender=str(msg["from"]), receipt_for=msg["receipt"]))

    def snapshot(self) -> list[PeerEvent]:
        with self._lock:
            return list(self.events)

    def since(self, index: int) -> list[PeerEvent]:
        """The events recorded after the first ``index`` (no copy of the others)."""
        with self._lock:
            return self.events[index:]

    def wait_for(self, predicate: Callable[[PeerEvent], bool], timeout: float = 20.0) -> PeerEvent:
        """The first recorded event matching ``predicate`` (polls until ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.snapshot():
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                kinds = [
                    (e.kind, e.bare, e.body or e.show or e.chat_state)
                    for e in self.snapshot()[-15:]
                ]
                raise AssertionError(
                    f"{self.jid}: no matching event within {timeout}s; last: {kinds}"
                )
            time.sleep(0.02)

    # --- actions -----------------------------------------------------------------

    def send_message(  # one keyword per optional payload
        self,
        to: str,
        body: str | None,
        *,
        msg_id: str | None = None,
        xhtml: str | None = None,
        request_receipt: bool = False,
        chat_state: str | None = None,
    ) -> str:
        """Send a chat message; ``xhtml`` is the inner XHTML-IM body markup. Returns its id."""

        def send() -> str:
            msg = self._client.make_message(mto=to, mbody=body, mtype="chat")
            if msg_id:
                msg["id"] = msg_id
            elif not msg["id"]:
                msg["id"] = self._client.new_id()
            if xhtml is not None:
                html = ET.fromstring(  # noqa: S314 - markup written by the test itself
                    "<html xmlns='http://jabber.org/protocol/xhtml-im'>"
                    f"<body xmlns='http://www.w3.org/1999/xhtml'>{xhtml}</body></html>"
                )
                msg.xml.append(html)
            if request_receipt:
                msg["request_receipt"] = True
            if chat_state:
                msg["chat_state"] = chat_state
            msg.send()
            return msg["id"]

        return self._call(send)

    # --- rooms (slixmpp's XEP-0045 plugin; XmppPeer(muc=True)) ---------------------------

    def join_room(self, room: str, nick: str, history: int = 0) -> None:
        """Join (and create, as its owner, if new) ``room``; returns once in it."""
        plugin = self._client.plugin["xep_0045"]
        self._run(plugin.join_muc_wait(slixmpp.JID(room), nick, maxstanzas=history, timeout=20), 30)

    def configure_room(self, room: str, **values: Any) -> None:
        """Submit the room's configuration form with ``values`` (``muc#roomconfig_*`` fields)."""
        plugin = self._client.plugin["xep_0045"]

        async def configure() -> None:
            form = await plugin.get_room_config(room, timeout=20)
            submit = self._client.plugin["xep_0004"].make_form(ftype="submit")
            submit.add_field(
                var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig"
            )
            for var, value in values.items():
                submit.add_field(var=f"muc#roomconfig_{var}", value=value)
            del form  # the service takes a partial form: only the fields given change
            await plugin.set_room_config(room, submit, timeout=20)

        self._run(configure(), 30)

    def set_affiliation(self, room: str, jid: str, affiliation: str) -> None:
        """``member``, ``outcast`` (banned), ``none``..."""
        plugin = self._client.plugin["xep_0045"]
        self._run(plugin.set_affiliation(room, affiliation, jid=jid, timeout=20), 30)

    def send_groupchat(self, room: str, body: str) -> str:
        def send() -> str:
            msg = self._client.make_message(mto=room, mbody=body, mtype="groupchat")
            msg["id"] = self._client.new_id()
            msg.send()
            return msg["id"]

        return self._call(send)

    def bookmark_room(self, room: str, nick: str, *, autojoin: bool = True) -> None:
        """Store a XEP-0048 bookmark (private XML storage, XEP-0049) for this account."""

        async def store() -> None:
            iq = self._client.make_iq_set()
            query = ET.SubElement(iq.xml, "{jabber:iq:private}query")
            storage = ET.SubElement(query, "{storage:bookmarks}storage")
            conference = ET.SubElement(
                storage,
                "{storage:bookmarks}conference",
                jid=room,
                autojoin="true" if autojoin else "false",
                name=room,
            )
            ET.SubElement(conference, "{storage:bookmarks}nick").text = nick
            await iq.send(timeout=20)

        self._run(store(), 30)

    def room_nicks(self, room: str) -> set[str]:
        """The occupants the room told this peer of (slixmpp's XEP-0045 roster)."""
        plugin = self._client.plugin["xep_0045"]
        return self._call(lambda: set(plugin.get_roster(slixmpp.JID(room)) or ()))

    def wait_room_nicks(
        self, room: str, predicate: Callable[[set[str]], bool], timeout: float = 20.0
    ) -> set[str]:
        """Poll ``room_nicks`` until ``predicate`` holds for them."""
        deadline = time.monotonic() + timeout
        while True:
            nicks = self.room_nicks(room)
            if predicate(nicks):
                return nicks
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.jid}: occupants of {room} still {sorted(nicks)}")
            time.sleep(0.05)

    def leave_room(self, room: str, nick: str) -> None:
        self._call(lambda: self._client.plugin["xep_0045"].leave_muc(slixmpp.JID(room), nick))

    def send_raw(self, xml: str) -> None:
        """Write ``xml`` to the stream as is (markup slixmpp could not build or serialize)."""
        self._call(lambda: self._client.send_raw(xml))

    def set_roster_item(self, jid: str, name: str = "", *, remove: bool = False) -> None:
        """Add, rename or (``remove``) delete ``jid`` on this account's own roster.

        A roster set (RFC 6121 2.1.5): the server pushes the change to every
        resource of the account, the gateway's session among them.
        """
        attributes = f"jid={quoteattr(jid)}"
        if remove:
            attributes += " subscription='remove'"
        elif name:
            attributes += f" name={quoteattr(name)}"
        self.send_raw(
            f"<iq type='set' id='roster-{next(_roster_ids)}'>"
            f"<query xmlns='jabber:iq:roster'><item {attributes}/></query></iq>"
        )

    def send_chat_state(self, to: str, state: str) -> None:
        def send() -> None:
            msg = self._client.make_message(mto=to, mtype="chat")
            msg["chat_state"] = state
            msg.send()

        self._call(send)

    def send_presence(
        self,
        *,
        show: str | None = None,
        status: str | None = None,
        ptype: str | None = None,
        to: str | None = None,
    ) -> None:
        self._call(
            lambda: self._client.send_presence(pshow=show, pstatus=status, ptype=ptype, pto=to)
        )

    def subscribe(self, to: str, status: str | None = None) -> None:
        self._call(lambda: self._client.send_presence(pto=to, ptype="subscribe", pstatus=status))

    def answer_subscription(self, to: str, *, allow: bool) -> None:
        ptype = "subscribed" if allow else "unsubscribed"
        self._call(lambda: self._client.send_presence(pto=to, ptype=ptype))

    def received_bodies(self, sender_bare: str) -> list[str]:
        return [
            e.body
            for e in self.snapshot()
            if e.kind == "message" and e.bare == sender_bare and e.body
        ]


def _condition(msg: Any) -> str:
    """A stanza error's condition from the XML (slixmpp drops RFC 6120's newer ones)."""
    for child in msg["error"].xml:
        namespace, _, name = child.tag[1:].partition("}")
        if namespace == "urn:ietf:params:xml:ns:xmpp-stanzas" and name != "text":
            return name
    return ""
