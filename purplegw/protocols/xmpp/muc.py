"""Multi-user chat (XEP-0045) for one XMPP session, built on raw stanzas.

Not slixmpp's ``xep_0045`` plugin: it depends on the ``xep_0030`` and
``xep_0004`` plugins, whose per-client disco handlers would answer the
disco#info requests features.py already answers for every client (twice,
with different feature lists), and it costs every account its per-client
state whether it ever joins a room or not (features.py).  A room here is a
``Room`` object made at the first join; the session routes the stanzas of
the rooms it is in to ``Muc``.

What is read from the wire:

* presence from ``room@service/nick``: an occupant came, left or was renamed
  (status 303); the account's own presence carries status 110 (or its
  nick); status 201 is a room the join just created, which is unlocked as an
  instant room (XEP-0045 10.1.2); an error presence refuses a join or a
  nick change (conflict: the nick is taken, the join retries with a suffix);
* groupchat messages with a body: history when they carry a XEP-0203 delay
  (the room's backlog), live otherwise; the room's stable id is the
  XEP-0359 ``<stanza-id by=room>`` when there is one;
* chat messages from ``room@service/nick``: private messages from an occupant.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element, SubElement

from slixmpp.exceptions import IqError, IqTimeout

from purplegw.protocols.base import DeliveryError

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"
MUC_OWNER_NS = "http://jabber.org/protocol/muc#owner"
DISCO_INFO_NS = "http://jabber.org/protocol/disco#info"
SID_NS = "urn:xmpp:sid:0"  # XEP-0359
DATA_NS = "jabber:x:data"
BOOKMARKS2_NS = "urn:xmpp:bookmarks:1"  # XEP-0402
BOOKMARKS_NS = "storage:bookmarks"  # XEP-0048
PUBSUB_NS = "http://jabber.org/protocol/pubsub"
PRIVATE_NS = "jabber:iq:private"  # XEP-0049, where XEP-0048 bookmarks were kept

#: Seconds a disco#info, join or nick change waits for the service.
ANSWER_TIMEOUT = 20.0
#: Nicks tried after a conflict: nick_, nick2, nick3...
NICK_ATTEMPTS = 4
#: How a refused join is told to the SIP user (condition -> SIP status, what it means).
JOIN_ERRORS = {
    "registration-required": (403, "members-only room"),
    "forbidden": (403, "banned from the room"),
    "not-authorized": (403, "the room needs a password"),
    "item-not-found": (404, "no such room"),
    "not-allowed": (403, "the room may not be created"),
    "service-unavailable": (503, "the room is full"),
    "conflict": (409, "nick in use"),
    "jid-malformed": (400, "no nick given"),
    "not-acceptable": (403, "the nick is not acceptable"),
}


@dataclass
class Room:
    jid: str  # bare, lower case
    nick: str
    occupants: set[str] = field(default_factory=set)
    joined: bool = False
    join: asyncio.Future[list[str]] | None = None
    rename: tuple[str, asyncio.Future[None]] | None = None
    sent: set[str] = field(default_factory=set)  # ids of our posts (their echoes)


def stamp(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_nick(nick: str, attempt: int) -> str:
    """The nick tried after ``attempt`` conflicts: ``nick_``, ``nick2``, ``nick3``..."""
    return f"{nick}_" if attempt == 1 else f"{nick}{attempt}"


def statuses(xml: Element) -> set[str]:
    x = xml.find(f"{{{MUC_USER_NS}}}x")
    if x is None:
        return set()
    return {s.get("code", "") for s in x.findall(f"{{{MUC_USER_NS}}}status")}


def join_error(xml: Element, condition: str) -> DeliveryError:
    error = xml.find("{jabber:client}error")
    text = ""
    if error is not None:
        text = (error.findtext("{urn:ietf:params:xml:ns:xmpp-stanzas}text") or "").strip()
    status, meaning = JOIN_ERRORS.get(condition, (403, condition or "refused"))
    return DeliveryError(f"{meaning} ({condition}{': ' + text if text else ''})", status)


class Muc:
    """The rooms of one XMPP session (the session hands it its stanzas)."""

    def __init__(self, client_of: Callable[[], Any], call: Callable[..., None]) -> None:
        self._client_of = client_of
        self._call = call  # SessionEvents callback by name
        self.rooms: dict[str, Room] = {}

    # --- requests --------------------------------------------------------------------

    async def is_room(self, contact: str, cache: dict[str, bool]) -> bool:
        """Whether ``contact``'s service is a MUC service (disco#info category conference).

        The answer is per service (domain) and kept in ``cache`` (shared by
        the process's sessions): one question per service, not per room.
        """
        user, _, domain = contact.rpartition("@")
        if not user or not domain or "/" in domain:
            return False
        domain = domain.lower()
        known = cache.get(domain)
        if known is not None:
            return known
        client = self._client_of()
        iq = client.make_iq_get(queryxmlns=DISCO_INFO_NS, ito=domain)
        try:
            result = await iq.send(timeout=ANSWER_TIMEOUT)
        except IqError:
            cache[domain] = False
            return False
        except IqTimeout:
            return False  # asked again next time
        query = result.xml.find(f"{{{DISCO_INFO_NS}}}query")
        found = query is not None and any(
            i.get("category") == "conference" for i in query.findall(f"{{{DISCO_INFO_NS}}}identity")
        )
        cache[domain] = found
        return found

    async def join(self, room_jid: str, nick: str, history: int, since: float | None) -> list[str]:
        room_jid = room_jid.lower()
        room = self.rooms.get(room_jid)
        if room is not None and room.joined:
            self._call("on_room_joined", room_jid, room.nick, sorted(room.occupants))
            return sorted(room.occupants)
        if room is not None and room.join is not None and not room.join.done():
            return await asyncio.shield(room.join)
        loop = asyncio.get_running_loop()
        for attempt in range(NICK_ATTEMPTS):
            tried = nick if attempt == 0 else next_nick(nick, attempt)
            room = Room(room_jid, tried, join=loop.create_future())
            self.rooms[room_jid] = room
            self._send_join(room, history, since)
            assert room.join is not None
            try:
                occupants = await asyncio.wait_for(asyncio.shield(room.join), ANSWER_TIMEOUT)
            except DeliveryError as exc:
                self.rooms.pop(room_jid, None)
                if exc.status_hint == 409 and attempt + 1 < NICK_ATTEMPTS:
                    continue
                raise
            except TimeoutError:
                self.rooms.pop(room_jid, None)
                raise DeliveryError("the room did not answer the join", 504) from None
            self._call("on_room_joined", room_jid, room.nick, occupants)
            return occupants
        raise DeliveryError("nick in use", 409)  # not reached: the loop raises

    def _send_join(self, room: Room, history: int, since: float | None) -> None:
        client = self._client_of()
        presence = client.make_presence(pto=f"{room.jid}/{room.nick}")
        x = SubElement(presence.xml, f"{{{MUC_NS}}}x")
        attributes = {"maxstanzas": str(history)}
        if since is not None:
            attributes["since"] = stamp(since)
        SubElement(x, f"{{{MUC_NS}}}history", attributes)
        presence.send()

    async def leave(self, room_jid: str) -> None:
        room = self.rooms.pop(room_jid.lower(), None)
        if room is None:
            return
        client = self._client_of()
        client.make_presence(pto=f"{room.jid}/{room.nick}", ptype="unavailable").send()

    def post(self, room_jid: str, text: str, message_id: str) -> None:
        room = self._joined(room_jid)
        client = self._client_of()
        msg = client.make_message(mto=room.jid, mbody=text, mtype="groupchat")
        msg["id"] = message_id
        room.sent.add(message_id)
        msg.send()

    def occupants(self, room_jid: str) -> list[str]:
        return sorted(self._joined(room_jid).occupants)

    async def rename(self, room_jid: str, nick: str) -> None:
        room = self._joined(room_jid)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        room.rename = (nick, future)
        self._client_of().make_presence(pto=f"{room.jid}/{nick}").send()
        try:
            await asyncio.wait_for(future, ANSWER_TIMEOUT)
        except TimeoutError:
            raise DeliveryError("the room did not answer the nick change", 504) from None
        finally:
            room.rename = None

    def _joined(self, room_jid: str) -> Room:
        room = self.rooms.get(room_jid.lower())
        if room is None or not room.joined:
            raise DeliveryError("not in this room", 404)
        return room

    async def bookmarks(self, own_jid: str) -> list[tuple[str, str]]:
        """Autojoin rooms: XEP-0402 (PEP ``urn:xmpp:bookmarks:1``), else XEP-0048's.

        XEP-0048 bookmarks are read from private XML storage (XEP-0049).
        """
        client = self._client_of()
        found: list[tuple[str, str]] = []
        iq = client.make_iq_get(ito=own_jid)
        pubsub = SubElement(iq.xml, f"{{{PUBSUB_NS}}}pubsub")
        SubElement(pubsub, f"{{{PUBSUB_NS}}}items", node=BOOKMARKS2_NS)
        try:
            result = await iq.send(timeout=ANSWER_TIMEOUT)
            for item in result.xml.iter(f"{{{PUBSUB_NS}}}item"):
                conference = item.find(f"{{{BOOKMARKS2_NS}}}conference")
                if conference is not None and conference.get("autojoin") in ("true", "1"):
                    nick = conference.findtext(f"{{{BOOKMARKS2_NS}}}nick") or ""
                    found.append((item.get("id", "").lower(), nick.strip()))
        except (IqError, IqTimeout):
            pass
        if found:
            return [f for f in found if f[0]]
        iq = client.make_iq_get()
        query = SubElement(iq.xml, f"{{{PRIVATE_NS}}}query")
        SubElement(query, f"{{{BOOKMARKS_NS}}}storage")
        try:
            result = await iq.send(timeout=ANSWER_TIMEOUT)
        except (IqError, IqTimeout):
            return []
        for conference in result.xml.iter(f"{{{BOOKMARKS_NS}}}conference"):
            if conference.get("autojoin") in ("true", "1") and conference.get("jid"):
                nick = conference.findtext(f"{{{BOOKMARKS_NS}}}nick") or ""
                found.append((conference.get("jid", "").lower(), nick.strip()))
        return found

    # --- stanzas ---------------------------------------------------------------------

    def owns(self, bare: str) -> bool:
        return bare.lower() in self.rooms

    def presence(self, pres: Any, condition: str) -> None:  # noqa: C901, PLR0912 - one branch per MUC case
        jid = pres["from"]
        room = self.rooms.get(jid.bare.lower())
        if room is None:
            return
        nick = jid.resource
        ptype = pres["type"]
        codes = statuses(pres.xml)
        if ptype == "error":
            error = join_error(pres.xml, condition)
            if room.join is not None and not room.join.done():
                room.join.set_exception(error)
            elif room.rename is not None and not room.rename[1].done():
                room.rename[1].set_exception(error)
            return
        own = "110" in codes or nick == room.nick
        if ptype == "unavailable":
            if "303" in codes:  # renamed
                item = pres.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
                new = item.get("nick", "") if item is not None else ""
                room.occupants.discard(nick)
                if new:
                    room.occupants.add(new)
                if own and new:
                    room.nick = new
                return
            if nick in room.occupants and not own:
                room.occupants.discard(nick)
                self._changed(room)
            room.occupants.discard(nick)
            if own and room.joined:
                del self.rooms[room.jid]
                reason = (
                    "banned" if "301" in codes else "kicked" if "307" in codes else "left the room"
                )
                self._call("on_room_left", room.jid, reason)
            return
        if not own:
            if nick not in room.occupants:
                room.occupants.add(nick)
                self._changed(room)
            return
        room.occupants.add(nick)
        if room.rename is not None and nick == room.rename[0] and not room.rename[1].done():
            room.nick = nick
            room.rename[1].set_result(None)
            self._call("on_room_joined", room.jid, nick, sorted(room.occupants))
            return
        room.nick = nick  # the service may have changed it (status 210)
        if "201" in codes:
            self._unlock(room)
        if not room.joined:
            room.joined = True
            if room.join is not None and not room.join.done():
                room.join.set_result(sorted(room.occupants))

    def _changed(self, room: Room) -> None:
        if room.joined:
            self._call("on_room_occupants", room.jid, sorted(room.occupants))

    def _unlock(self, room: Room) -> None:
        """Accept the default configuration of a room the join created (an instant room)."""
        client = self._client_of()
        iq = client.make_iq_set(ito=room.jid)
        query = SubElement(iq.xml, f"{{{MUC_OWNER_NS}}}query")
        SubElement(query, f"{{{DATA_NS}}}x", type="submit")
        iq.send(callback=lambda _result: None)

    def groupchat(self, msg: Any, text: str | None, sent_at: float | None) -> None:
        jid = msg["from"]
        room = self.rooms.get(jid.bare.lower())
        if room is None or text is None or not jid.resource:
            return  # subjects, the room's own notices, rooms we are not in
        message_id = msg["id"] or None
        for sid in msg.xml.findall(f"{{{SID_NS}}}stanza-id"):
            if (sid.get("by") or "").lower() == room.jid and sid.get("id"):
                message_id = sid.get("id")
        if jid.resource == room.nick or (msg["id"] and msg["id"] in room.sent):
            room.sent.discard(msg["id"])
            return  # our own post, reflected
        self._call(
            "on_room_message",
            room.jid,
            jid.resource,
            text,
            message_id,
            sent_at,
            sent_at is not None,
        )

    def private(self, msg: Any, text: str) -> None:
        jid = msg["from"]
        self._call(
            "on_room_private_message", jid.bare.lower(), jid.resource, text, msg["id"] or None
        )

    def error(self, msg: Any, status: int, reason: str) -> bool:
        """A message error from a room: a post of ours refused.  True when it was one."""
        room = self.rooms.get(msg["from"].bare.lower())
        if room is None or msg["id"] not in room.sent:
            return False
        room.sent.discard(msg["id"])
        self._call("on_room_error", room.jid, status, reason)
        return True

    def clear(self) -> None:
        for room in self.rooms.values():
            if room.join is not None and not room.join.done():
                room.join.set_exception(DeliveryError("disconnected", 503))
        self.rooms.clear()
