"""Group chat: XMPP rooms (MUC, XEP-0045) and IRC channels for plain SIP phones.

A phone only knows page-mode MESSAGE, so a room is a SIP URI the user writes
to and receives from: ``sip:ROOM@SERVICE;proto=xmpp``,
``sip:%23CHANNEL@SERVER;proto=irc`` (docs/groupchat.md).  Plain objects, run
on the gateway's worker like every rule of this package.

Rules:

Rule 1. A MESSAGE is about a room when its route's protocol has rooms
        (``Adapter.has_rooms``) and the account's session says the contact
        is one (``is_room``: XMPP asks the service by XEP-0030 disco,
        category ``conference``; IRC: a channel name).  The answer is cached
        per (protocol, contact); while unknown the request waits for it and
        then takes the ordinary path or this one.  A contact with
        ``;nick=`` (an occupant, privately) is never a room.
Rule 2. The first text to a room joins it through the user's account with
        the nick of ``[groupchat] nick`` (``{user}``: the account's user
        part) and ``[groupchat] history`` messages of backlog, then posts
        it; posts that arrive while the join runs wait for it, in order.
        A refused join answers every waiting post with the server's status
        and reason (403 members-only, banned, password; 404 no such room).
        A post is answered 202 once the room took it.
Rule 3. Commands: a text of exactly ``/leave`` leaves (200), ``/who``
        answers 200 and sends a MESSAGE from the room listing the
        occupants, ``/nick NEW`` renames (200, or the server's refusal).
        ``/who`` and ``/nick`` in a room the user is not in: 404.
        Typing notifications and IMDNs to a room are answered 200 and go
        nowhere (a room has no single reader).
Rule 4. Room messages reach the phone from the room's URI through the
        outbox (``Messaging.deliver``: they wait while the phone is
        unregistered, within the outbox caps, in order per room).  The
        occupant's nick is in the text (``nick: text``, ``[groupchat]
        prefix_nick``) and, in message/cpim, in ``From:`` as the occupant's
        URI (``...;nick=NICK``).  History (and any message stamped over 60 s
        ago) goes as message/cpim with its original ``DateTime``; so does
        every message when ``prefix_nick`` is off (the nick would be lost).
Rule 5. The user's own messages echoed by the room are dropped (the nick the
        account holds there); so is a message whose id (XEP-0359) was
        already delivered, and history older than the last message the
        room delivered: nothing reaches the phone twice after a rejoin.
Rule 6. A room may send one user ``room_rate`` messages per second
        (``room_burst``), all its occupants together: beyond that its
        messages are dropped (logged), and the user's other rooms and
        contacts are not held back.
Rule 7. Rooms survive reconnects: when the account connects again every
        room it was in is joined again (same nick, history ``since`` the
        last message seen), and the rooms bookmarked with autojoin
        (XEP-0402, XEP-0048) are joined at every login.
Rule 8. A private message from an occupant comes from
        ``sip:ROOM@SERVICE;proto=xmpp;nick=NICK`` (the ordinary message
        path, contact ``room@service/nick``), so the phone's reply reaches
        that occupant.
Rule 9. The rooms each account is in, with the nick and the time of the
        last message delivered, are written to the store (``room_marks``,
        every ``MARK_FLUSH`` seconds and at a clean stop): after a restart
        the account joins them again at its first connection, with history
        since that time.
Rule 10. A SUBSCRIBE to the URI of a room the user is in is answered by the
        gateway (nobody on the network is asked): a PIDF, open, whose note
        counts the occupants ("3 occupants"), sent again whenever someone
        enters or leaves (``on_room_occupants``) or the count is learnt
        anew (a join, a rejoin, a rename, ``/who``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from purplegw.exceptions import StoreError
from purplegw.gateway.addressing import split_occupant
from purplegw.gateway.bodies import CPIM, Incoming, cpim_text
from purplegw.gateway.identity import respond
from purplegw.gateway.messaging import DELAYED_AFTER, TEXT_PLAIN, message_id_of, phrase
from purplegw.gateway.settings import GroupChatSettings
from purplegw.presence import ContactPresence, Presence, Status
from purplegw.sip.ratelimit import RateLimiter, Verdict
from purplegw.store.room_marks import RoomMark

if TYPE_CHECKING:
    from collections.abc import Callable

    from purplegw.gateway.addressing import AddressBook, Route
    from purplegw.gateway.messaging import Messaging
    from purplegw.gateway.model import Account
    from purplegw.gateway.ports import (
        AccountHandlePort,
        DirectoryPort,
        OutcomeFuture,
        Reply,
        RoomMarksPort,
        TimerHandle,
        WorkerPort,
    )
    from purplegw.sip.message import Request

logger = logging.getLogger(__name__)

# Answers of is_room remembered, at most (oldest forgotten first).
MAX_KINDS = 10000
# Message ids and (nick, text) remembered per room for de-duplication (Rule 5).
SEEN_IDS = 500
# A room's delay stamps (whole seconds, the server's clock) and the gateway's
# own clock for live messages disagree by this much at most: history within
# it of the last message delivered is told apart by (nick, text).
STAMP_SLACK = 2.0
# Seconds between writes of the rooms' marks (Rule 9); a clean stop writes them all.
MARK_FLUSH = 5.0

RoomKey = tuple[int, str]  # (account id, room)


@dataclass
class _Post:
    request: Request
    reply: Reply
    text: str
    message_id: str


@dataclass
class Room:
    """One room one account is in (or joining)."""

    account: Account
    name: str
    nick: str
    joined: bool = False
    joining: bool = False
    occupants: list[str] = field(default_factory=list)
    last_at: float | None = None  # time of the newest message delivered (Rule 5)
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)  # fingerprints
    waiting: list[_Post] = field(default_factory=list)  # posts behind the join (Rule 2)

    def saw(self, message_id: str | None, when: float, nick: str, text: str) -> None:
        if message_id:
            self.seen[message_id] = None
            while len(self.seen) > SEEN_IDS:
                self.seen.popitem(last=False)
        key = fingerprint(nick, text)
        self.recent[key] = None
        self.recent.move_to_end(key)
        while len(self.recent) > SEEN_IDS:
            self.recent.popitem(last=False)
        if self.last_at is None or when > self.last_at:
            self.last_at = when


def fingerprint(nick: str, text: str) -> str:
    """A short digest of who said what (Rule 5; kept in the store's marks)."""
    return hashlib.sha256(f"{nick}\0{text}".encode()).hexdigest()[:12]


# Fingerprints of the newest messages kept in a room's mark (Rule 9).
MARK_RECENT = 8


class GroupChat:
    def __init__(  # noqa: PLR0913 - the controller's collaborators, all keyword
        self,
        *,
        messaging: Messaging,
        addresses: AddressBook,
        directory: DirectoryPort,
        worker: WorkerPort,
        has_rooms: Callable[[str], bool],
        settings: GroupChatSettings | None = None,
        clock: Callable[[], float] = time.time,
        marks: RoomMarksPort | None = None,
    ) -> None:
        self.messaging = messaging
        self.addresses = addresses
        self.directory = directory
        self.worker = worker
        self.has_rooms = has_rooms
        self.settings = settings or GroupChatSettings()
        self.clock = clock
        self.rooms: dict[RoomKey, Room] = {}
        self._kinds: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self.limiter = (
            RateLimiter(self.settings.room_rate, self.settings.room_burst)
            if self.settings.room_rate > 0
            else None
        )
        self.dropped = 0  # room messages over the rate (Rule 6)
        # Where a room's presence goes when its occupants change (Rule 10).
        self.on_presence: Callable[[Account, ContactPresence], None] = lambda _a, _p: None
        self.marks = marks
        self._marks: dict[RoomKey, RoomMark] = {}  # read at start, for the first connection
        self._dirty: set[RoomKey] = set()
        self._mark_timer: TimerHandle | None = None

    # --- presence of a room URI (Rule 10) -----------------------------------------------

    def presence_of(self, account: Account, name: str) -> ContactPresence | None:
        """The PIDF-ready presence of ``name`` if the user is in that room, else None."""
        room = self.rooms.get((account.account_id, name))
        if room is None:
            return None
        if not room.joined:
            return ContactPresence(name, {})
        count = len(room.occupants)
        note = f"{count} occupant{'s' if count != 1 else ''}"
        return ContactPresence(name, {"": Presence(Status.AVAILABLE, note=note)})

    def _occupants_changed(self, room: Room) -> None:
        presence = self.presence_of(room.account, room.name)
        if presence is not None:
            self.on_presence(room.account, presence)

    # --- the rooms' marks (Rule 9) ------------------------------------------------------

    def start(self) -> None:
        """Read the rooms the users were in before the restart (joined again on connect)."""
        if self.marks is None:
            return
        try:
            self._marks = {(m.account_id, m.room): m for m in self.marks.all()}
        except StoreError as exc:
            logger.warning("Room marks not read (rooms joined again when written to): %s", exc)

    def stop(self) -> None:
        if self._mark_timer is not None:
            self._mark_timer.cancel()
            self._mark_timer = None
        self._write_marks()

    def _touch(self, room: Room) -> None:
        self._dirty.add((room.account.account_id, room.name))
        if self.marks is not None and self._mark_timer is None:
            self._mark_timer = self.worker.call_later(MARK_FLUSH, self._mark_timer_fired)

    def _mark_timer_fired(self) -> None:
        self._mark_timer = None
        self._write_marks()

    def _write_marks(self) -> None:
        if self.marks is None or not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        marks = [
            RoomMark(key[0], room.name, room.nick, room.last_at, tuple(room.recent)[-MARK_RECENT:])
            for key in dirty
            if (room := self.rooms.get(key)) is not None
        ]
        try:
            self.marks.save_many(marks)
        except StoreError as exc:
            logger.warning("Room marks not written, tried again later: %s", exc)
            self._dirty |= dirty
            self._mark_timer = self.worker.call_later(MARK_FLUSH, self._mark_timer_fired)

    def _forget(self, account_id: int, name: str) -> None:
        self._dirty.discard((account_id, name))
        self._marks.pop((account_id, name), None)
        if self.marks is None:
            return
        try:
            self.marks.delete(account_id, name)
        except StoreError as exc:
            logger.warning("Mark of room %s not removed (joined again at restart): %s", name, exc)

    # --- SIP -> room (Rules 1-3) -----------------------------------------------------

    def claim(  # noqa: PLR0913, PLR0917 - the MESSAGE being routed, as Messaging holds it
        self,
        request: Request,
        reply: Reply,
        route: Route,
        handle: AccountHandlePort,
        body: Incoming,
        resume: Callable[[], None],
    ) -> bool:
        """Handle the MESSAGE if it is for a room (True), or leave it to Messaging (False).

        ``resume`` routes the request again once an unknown contact was
        classified (it then finds the answer cached).
        """
        account, contact = route.account, route.contact
        if not self.has_rooms(account.protocol) or self._occupant(account, contact):
            return False
        key = (account.protocol, contact)
        kind = self._kinds.get(key)
        if kind is None:
            handle.is_room(contact).add_done_callback(
                self.worker.completion(partial(self._classified, key, resume))
            )
            return True
        if not kind:
            return False
        self._to_room(request, reply, account, handle, contact, body)
        return True

    def _occupant(self, account: Account, contact: str) -> bool:
        return self.addresses.user_at_host(account.protocol) and split_occupant(contact) is not None

    def _classified(
        self, key: tuple[str, str], resume: Callable[[], None], done: OutcomeFuture
    ) -> None:
        outcome = done.get()
        if outcome.ok:
            self._kinds[key] = bool(outcome.value)
            while len(self._kinds) > MAX_KINDS:
                self._kinds.popitem(last=False)
        elif outcome.status == 501:
            self._kinds[key] = False
        else:
            # Account offline or the question timed out: the ordinary path
            # (queued or refused there), asked again next time.
            self._kinds[key] = False
            resume()
            del self._kinds[key]
            return
        resume()

    def _to_room(  # noqa: PLR0913, PLR0917 - the request and its route
        self,
        request: Request,
        reply: Reply,
        account: Account,
        handle: AccountHandlePort,
        name: str,
        body: Incoming,
    ) -> None:
        if body.kind != "text":
            reply(respond(request, 200))  # Rule 3: nobody in particular to tell
            return
        text = body.text
        command, _, argument = text.strip().partition(" ")
        room = self.rooms.get((account.account_id, name))
        if command == "/leave" and not argument:
            self._leave(request, reply, account, handle, name)
            return
        if command in ("/who", "/nick") and (room is None or not room.joined):
            reply(respond(request, 404, "Not Found: not in this room (write to it to join)"))
            return
        if command == "/who" and not argument and room is not None:
            handle.room_occupants(name).add_done_callback(
                self.worker.completion(partial(self._who, request, reply, room))
            )
            return
        if command == "/nick" and argument.strip() and room is not None:
            new = argument.strip()
            handle.change_nick(name, new).add_done_callback(
                self.worker.completion(partial(self._renamed, request, reply, room, new))
            )
            return
        post = _Post(request, reply, text, message_id_of(request))
        if room is not None and room.joined:
            self._post(handle, room, post)
            return
        if room is None:
            room = self.rooms[(account.account_id, name)] = Room(
                account, name, self.nick_for(account)
            )
        room.waiting.append(post)
        if not room.joining:
            self._join(handle, room, history=self.settings.history)

    def nick_for(self, account: Account) -> str:
        """The nick of ``[groupchat] nick`` for ``account`` (Rule 2)."""
        user = account.ext_user.partition("@")[0].lstrip("@") or account.ext_user
        sip_user = account.sip_user.partition("@")[0]
        nick = self.settings.nick.replace("{user}", user).replace("{sip_user}", sip_user)
        return nick or user

    def _join(self, handle: AccountHandlePort, room: Room, *, history: int) -> None:
        room.joining = True
        since = room.last_at
        handle.join_room(room.name, room.nick, history, since).add_done_callback(
            self.worker.completion(partial(self._joined, handle, room))
        )

    def _joined(self, handle: AccountHandlePort, room: Room, done: OutcomeFuture) -> None:
        outcome = done.get()
        room.joining = False
        waiting, room.waiting = room.waiting, []
        key = (room.account.account_id, room.name)
        if self.rooms.get(key) is not room:
            for post in waiting:  # left (/leave) while joining
                post.reply(respond(post.request, 480, "Temporarily Unavailable: room left"))
            return
        if not outcome.ok:
            logger.info(
                "%s could not join %s: %d %s",
                room.account.sip_user,
                room.name,
                outcome.status,
                outcome.reason,
            )
            if not room.joined:
                del self.rooms[key]
            for post in waiting:
                post.reply(
                    respond(
                        post.request,
                        outcome.status,
                        f"{phrase(outcome.status)}: {outcome.reason}",
                    )
                )
            return
        room.joined = True
        self._touch(room)
        if isinstance(outcome.value, list):
            room.occupants = [str(n) for n in outcome.value]
            self._occupants_changed(room)
        for post in waiting:
            self._post(handle, room, post)

    def _post(self, handle: AccountHandlePort, room: Room, post: _Post) -> None:
        future = handle.send_room_message(room.name, post.text, post.message_id)
        future.add_done_callback(self.worker.completion(partial(self._posted, post)))

    def _posted(self, post: _Post, done: OutcomeFuture) -> None:
        outcome = done.get()
        if outcome.ok:
            post.reply(respond(post.request, 202))
        else:
            post.reply(
                respond(post.request, outcome.status, f"{phrase(outcome.status)}: {outcome.reason}")
            )

    def _leave(
        self,
        request: Request,
        reply: Reply,
        account: Account,
        handle: AccountHandlePort,
        name: str,
    ) -> None:
        self.rooms.pop((account.account_id, name), None)
        self._forget(account.account_id, name)
        handle.leave_room(name).add_done_callback(
            self.worker.completion(partial(self._answered, request, reply))
        )

    def _answered(self, request: Request, reply: Reply, done: OutcomeFuture) -> None:
        outcome = done.get()
        if outcome.ok:
            reply(respond(request, 200))
        else:
            reply(respond(request, outcome.status, f"{phrase(outcome.status)}: {outcome.reason}"))

    def _who(self, request: Request, reply: Reply, room: Room, done: OutcomeFuture) -> None:
        outcome = done.get()
        if not outcome.ok:
            self._answered(request, reply, done)
            return
        nicks = sorted((str(n) for n in outcome.value or []), key=str.lower)
        room.occupants = nicks
        self._occupants_changed(room)
        reply(respond(request, 200))
        text = f"{len(nicks)} in {room.name}: {', '.join(nicks)}"
        self.messaging.deliver(room.account, room.name, text.encode(), TEXT_PLAIN)

    def _renamed(
        self, request: Request, reply: Reply, room: Room, new: str, done: OutcomeFuture
    ) -> None:
        if done.get().ok:
            room.nick = new
        self._answered(request, reply, done)

    # --- room -> SIP (Rules 4-6, 8) ----------------------------------------------------

    def room_message(  # noqa: PLR0913, PLR0917 - the event's shape
        self,
        account: Account,
        room: str,
        nick: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
        is_history: bool = False,  # noqa: FBT001, FBT002
    ) -> None:
        state = self.rooms.get((account.account_id, room))
        if state is None:
            # A room joined without the gateway asking (a bookmark the session
            # joined itself): it is the user's from now on.
            state = self.rooms[(account.account_id, room)] = Room(
                account, room, self.nick_for(account), joined=True
            )
        now = self.clock()
        if nick == state.nick:
            state.saw(message_id, sent_at or now, nick, text)
            return  # Rule 5: the user's own echo
        if message_id and message_id in state.seen:
            return
        if (
            is_history
            and sent_at is not None
            and self._delivered_before(state, nick, text, sent_at)
        ):
            return
        state.saw(message_id, sent_at if sent_at is not None else now, nick, text)
        self._touch(state)
        if (
            self.limiter is not None
            and self.limiter.hit((account.account_id, room), now) is not Verdict.ALLOW
        ):
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                logger.warning(
                    "Room %s floods %s: messages dropped (%d so far)",
                    room,
                    account.sip_user,
                    self.dropped,
                )
            return
        shown = f"{nick}: {text}" if self.settings.prefix_nick else text
        delayed = sent_at is not None and now - sent_at > DELAYED_AFTER
        if is_history or delayed or not self.settings.prefix_nick:
            body = cpim_text(
                from_uri=self.addresses.contact_uri(account, self.occupant(account, room, nick)),
                from_name=" ".join(nick.split()),
                to_uri=f"sip:{account.sip_user}",
                text=shown,
                sent_at=sent_at if (is_history or delayed) else None,
            )
            self.messaging.deliver(account, room, body, CPIM)
        else:
            self.messaging.deliver(account, room, shown.encode("utf-8"), TEXT_PLAIN)

    @staticmethod
    def _delivered_before(state: Room, nick: str, text: str, sent_at: float) -> bool:
        """History the room sends again on a rejoin (Rule 5)."""
        if state.last_at is None:
            return False
        if sent_at < state.last_at - STAMP_SLACK:
            return True
        return sent_at <= state.last_at + STAMP_SLACK and fingerprint(nick, text) in state.recent

    def occupant(self, account: Account, room: str, nick: str) -> str:
        """The contact naming occupant ``nick`` of ``room`` (its private conversation)."""
        if self.addresses.user_at_host(account.protocol):
            return f"{room}/{nick}"
        return nick  # IRC: an occupant is a nick like any other

    def room_private_message(
        self, account: Account, room: str, nick: str, text: str, message_id: str | None = None
    ) -> None:
        self.messaging.incoming(account, self.occupant(account, room, nick), text, message_id)

    def room_joined(self, account: Account, room: str, nick: str, occupants: list[str]) -> None:
        key = (account.account_id, room)
        state = self.rooms.get(key)
        if state is None:
            state = self.rooms[key] = Room(account, room, nick)
        state.nick = nick
        state.joined = True
        state.occupants = list(occupants)
        self._touch(state)
        self._occupants_changed(state)

    def room_occupants(self, account: Account, room: str, occupants: list[str]) -> None:
        state = self.rooms.get((account.account_id, room))
        if state is None or not state.joined:
            return
        state.occupants = list(occupants)
        self._occupants_changed(state)

    def room_left(self, account: Account, room: str, reason: str = "") -> None:
        state = self.rooms.pop((account.account_id, room), None)
        self._forget(account.account_id, room)
        if state is not None and reason:
            text = f"You are no longer in {room}: {reason}"
            self.messaging.deliver(account, room, text.encode(), TEXT_PLAIN)

    def room_error(self, account: Account, room: str, status: int, reason: str) -> None:
        state = self.rooms.get((account.account_id, room))
        if state is None or state.joining:
            return  # the join's own answer tells the phone
        text = f"{room}: {status} {reason}"
        self.messaging.deliver(account, room, text.encode(), TEXT_PLAIN)

    # --- connections (Rule 7) ------------------------------------------------------------

    def connected(self, account: Account) -> None:
        if not self.has_rooms(account.protocol):
            return
        handle = self.directory.get(account.sip_user, account.protocol)
        if handle is None:
            return
        for key in [k for k in self._marks if k[0] == account.account_id]:
            mark = self._marks.pop(key)
            if key not in self.rooms:  # in the room before the restart (Rule 9)
                self.rooms[key] = Room(
                    account,
                    mark.room,
                    mark.nick,
                    last_at=mark.last_at,
                    recent=OrderedDict.fromkeys(mark.recent),
                )
                self._kinds[(account.protocol, mark.room)] = True
        for room in [r for r in self.rooms.values() if r.account.account_id == account.account_id]:
            room.joined = False
            if not room.joining:
                self._join(handle, room, history=self.settings.history)
        handle.room_bookmarks().add_done_callback(
            self.worker.completion(partial(self._bookmarks, account))
        )

    def _bookmarks(self, account: Account, done: OutcomeFuture) -> None:
        outcome = done.get()
        if not outcome.ok or not outcome.value:
            return
        handle = self.directory.get(account.sip_user, account.protocol)
        if handle is None:
            return
        for name, nick in outcome.value:
            key = (account.account_id, name)
            if key in self.rooms:
                continue
            room = self.rooms[key] = Room(account, name, nick or self.nick_for(account))
            self._kinds[(account.protocol, name)] = True
            # No backlog: after a gateway restart what the room would send again
            # may already have reached the phone before it (nothing twice, Rule 5).
            self._join(handle, room, history=0)

    def disconnected(self, account: Account) -> None:
        for room in self.rooms.values():
            if room.account.account_id == account.account_id:
                room.joined = False
