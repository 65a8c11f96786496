"""Group chat rules on their own (purplegw.gateway.groupchat): fake account, real outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from purplegw.actors.account import OutcomeFuture
from purplegw.actors.state import Outcome
from purplegw.gateway.addressing import AddressBook, contact_uri, resolve, split_occupant
from purplegw.gateway.bodies import read_cpim
from purplegw.gateway.groupchat import GroupChat
from purplegw.gateway.settings import GroupChatSettings
from tests.gateway.fakes import Directory, Handle
from tests.gateway.test_messaging import USER, Rig
from tests.gateway.test_messaging import store as store  # noqa: PLC0414 - the fixture

if TYPE_CHECKING:
    from purplegw.sip.message import Response
    from purplegw.store import Store

ROOM = "lobby@conference.example.org"
ROOM_URI = f"sip:{ROOM};proto=xmpp"


class RoomHandle(Handle):
    """Rooms are the contacts on conference.example.org; answers set per operation."""

    def __init__(self) -> None:
        super().__init__(USER, "xmpp", "alice@example.org")
        self.answers: dict[str, Outcome] = {"room_bookmarks": Outcome(200, "", [])}

    def _op(self, *call: Any) -> OutcomeFuture:
        self.calls.append(call)
        future = OutcomeFuture()
        op = call[0]
        if op == "is_room":
            outcome = Outcome(200, "", call[1].endswith("@conference.example.org"))
        else:
            outcome = self.answers.get(op, Outcome(200, "ok", ["alice", "carol"]))
        future.set(outcome)
        return future


class RoomRig(Rig):
    def __init__(self, store: Store, **settings: Any) -> None:
        super().__init__(store)
        self.handle = RoomHandle()
        directory = Directory(self.handle)
        self.messaging.directory = directory
        addresses = AddressBook(
            directory,
            canonical=str.lower,
            user_at_host=lambda p: p == "xmpp",
            gateway_domain="sip.test",
        )
        self.messaging.addresses = addresses
        self.rooms = GroupChat(
            messaging=self.messaging,
            addresses=addresses,
            directory=directory,
            worker=self.worker,
            has_rooms=lambda p: p == "xmpp",
            settings=GroupChatSettings(**settings),
            clock=self.clock,
        )
        self.messaging.rooms = self.rooms

    def post(self, text: str, ruri: str = ROOM_URI) -> Response:
        (reply,) = self.message(text.encode(), ruri=ruri)
        return reply

    def ops(self) -> list[str]:
        return [c[0] for c in self.handle.calls]


def test_the_first_message_joins_with_the_account_nick_and_history_then_posts(
    store: Store,
) -> None:
    rig = RoomRig(store)
    assert rig.post("hello room").status == 202
    assert rig.ops() == ["is_room", "join_room", "send_room_message"]
    assert rig.handle.calls[1] == ("join_room", ROOM, "alice", 20, None)
    assert rig.handle.calls[2][1:3] == (ROOM, "hello room")
    assert rig.post("again").status == 202  # joined and classified: straight to the room
    assert rig.ops()[3:] == ["send_room_message"]


def test_a_contact_that_is_not_a_room_takes_the_ordinary_path(store: Store) -> None:
    rig = RoomRig(store)
    assert rig.post("hi bob", ruri="sip:bob@example.org").status == 202
    assert rig.ops() == ["is_room", "send_message"]
    rig.post("hi again", ruri="sip:bob@example.org")
    assert rig.ops()[2:] == ["send_message"]  # the answer is cached


def test_a_refused_join_answers_with_the_servers_status_and_reason(store: Store) -> None:
    rig = RoomRig(store)
    rig.handle.answers["join_room"] = Outcome(403, "XMPP registration-required: members only")
    reply = rig.post("let me in")
    assert reply.status == 403
    assert "members only" in reply.reason
    assert "send_room_message" not in rig.ops()
    assert rig.rooms.rooms == {}
    del rig.handle.answers["join_room"]
    assert rig.post("now?").status == 202  # tried again: no stale state


def test_room_messages_reach_the_phone_from_the_room_with_the_nick(store: Store) -> None:
    rig = RoomRig(store)
    rig.post("hello")
    rig.rooms.room_joined(rig.handle.info, ROOM, "alice", ["alice", "carol"])
    rig.rooms.room_message(rig.handle.info, ROOM, "alice", "hello")  # the echo
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "hi alice", "id-1")
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "hi alice", "id-1")  # again
    rig.register()
    (sent,) = rig.front.requests("MESSAGE", 5070)
    assert sent.body == b"carol: hi alice"
    assert (sent.headers.get("From") or "").startswith(f"<{ROOM_URI}>")
    rig.answer(sent, 200)
    assert rig.front.requests("MESSAGE", 5070) == [sent]  # echo and duplicate dropped


def test_history_goes_as_cpim_with_its_time_and_the_occupant_uri(store: Store) -> None:
    rig = RoomRig(store)
    rig.post("hello")
    stamp = rig.clock() - 3600
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "old news", None, stamp, True)
    rig.register()
    (sent,) = rig.front.requests("MESSAGE", 5070)
    assert sent.headers.get("Content-Type") == "message/cpim"
    body = sent.body.decode()
    assert f'From: "carol" <{ROOM_URI};nick=carol>' in body
    assert "DateTime: " in body
    assert read_cpim(sent.body).text == "carol: old news"


def test_without_prefix_the_nick_is_only_in_the_cpim_from(store: Store) -> None:
    rig = RoomRig(store, prefix_nick=False)
    rig.post("hello")
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "bare text")
    rig.register()
    (sent,) = rig.front.requests("MESSAGE", 5070)
    assert read_cpim(sent.body).text == "bare text"
    assert f'"carol" <{ROOM_URI};nick=carol>' in sent.body.decode()


def test_a_rejoin_asks_for_history_since_the_last_message_and_drops_older(store: Store) -> None:
    rig = RoomRig(store)
    rig.post("hello")
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "live")
    seen_at = rig.clock()
    rig.rooms.disconnected(rig.handle.info)
    rig.rooms.connected(rig.handle.info)
    join = [c for c in rig.handle.calls if c[0] == "join_room"][-1]
    assert join == ("join_room", ROOM, "alice", 20, seen_at)
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "live", None, seen_at - 1, True)
    rig.clock.now += 5
    rig.rooms.room_message(rig.handle.info, ROOM, "dave", "new", None, seen_at + 2, True)
    rig.register()
    bodies = []
    for _ in range(3):
        for request in rig.front.requests("MESSAGE", 5070)[len(bodies) :]:
            bodies.append(
                read_cpim(request.body).text
                if request.body.startswith(b"From")
                else request.body.decode()
            )
            rig.answer(request, 200)
    assert bodies == ["carol: live", "dave: new"]


def test_a_flooding_room_is_limited_without_holding_back_another(store: Store) -> None:
    rig = RoomRig(store, room_rate=1.0, room_burst=3)
    other = "quiet@conference.example.org"
    rig.post("hello")
    rig.post("hello", ruri=f"sip:{other};proto=xmpp")
    for i in range(10):
        rig.rooms.room_message(rig.handle.info, ROOM, "spammer", f"spam {i}")
    rig.rooms.room_message(rig.handle.info, other, "carol", "still here")
    rows = store.outbox.pending(USER)
    assert [r.body for r in rows if r.contact == ROOM] == [
        b"spammer: spam 0",
        b"spammer: spam 1",
        b"spammer: spam 2",
    ]
    assert [r.body for r in rows if r.contact == other] == [b"carol: still here"]
    assert rig.rooms.dropped == 7


def test_commands_leave_who_and_nick(store: Store) -> None:
    rig = RoomRig(store)
    assert rig.post("/who").status == 404  # not in the room yet
    rig.post("hello")
    assert rig.post("/who").status == 200
    (listing,) = store.outbox.pending(USER)
    assert listing.body == f"2 in {ROOM}: alice, carol".encode()
    assert rig.post("/nick alicia").status == 200
    assert rig.handle.calls[-1] == ("change_nick", ROOM, "alicia")
    rig.rooms.room_message(rig.handle.info, ROOM, "alicia", "my own echo")
    assert len(store.outbox.pending(USER)) == 1
    rig.handle.answers["change_nick"] = Outcome(409, "XMPP conflict: nick in use")
    assert rig.post("/nick carol").status == 409
    assert rig.post("/leave").status == 200
    assert rig.handle.calls[-1] == ("leave_room", ROOM)
    assert rig.rooms.rooms == {}


def test_typing_to_a_room_is_answered_and_dropped(store: Store) -> None:
    rig = RoomRig(store)
    doc = (
        b'<?xml version="1.0"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
        b"<state>active</state></isComposing>"
    )
    (reply,) = rig.message(doc, "application/im-iscomposing+xml", ruri=ROOM_URI)
    assert reply.status == 200
    assert "send_typing" not in rig.ops()


def test_an_offline_account_answers_480_and_is_asked_again_later(store: Store) -> None:
    rig = RoomRig(store)
    rig.handle.answers["join_room"] = Outcome(480, "account offline")
    assert rig.post("hello").status == 480


def test_private_messages_from_an_occupant_and_the_reply_route(store: Store) -> None:
    rig = RoomRig(store)
    rig.rooms.room_private_message(rig.handle.info, ROOM, "carol", "psst")
    rig.register()
    (sent,) = rig.front.requests("MESSAGE", 5070)
    from_uri = f"{ROOM_URI};nick=carol"
    assert (sent.headers.get("From") or "").startswith(f"<{from_uri}>")
    assert rig.post("psst back", ruri=from_uri).status == 202
    assert rig.handle.calls[-1][:3] == ("send_message", f"{ROOM}/carol", "psst back")


def test_nick_template_and_occupant_uris() -> None:
    directory = Directory()
    addresses = AddressBook(
        directory, canonical=str.lower, user_at_host=lambda p: p == "xmpp", gateway_domain="x"
    )
    chat = GroupChat(
        messaging=None,  # type: ignore[arg-type]
        addresses=addresses,
        directory=directory,
        worker=None,  # type: ignore[arg-type]
        has_rooms=lambda _p: True,
        settings=GroupChatSettings(nick="{sip_user}-sip"),
    )
    irc = Handle(USER, "irc", "alice@irc.example").info
    assert chat.nick_for(irc) == "alice-sip"
    assert chat.occupant(irc, "#chan", "bob") == "bob"
    assert contact_uri(irc, "#chan", user_at_host=False, gateway_domain="x") == (
        "sip:%23chan@irc.example;proto=irc"
    )
    route = resolve(USER, "%23chan", "irc.example", "irc", [irc])
    assert route.contact == "#chan"  # type: ignore[union-attr]
    route = resolve(USER, "%23chan", "irc.example", "irc", [irc], nick="bob")
    assert route.contact == "bob"  # type: ignore[union-attr]


def test_history_in_the_same_second_as_the_last_message_is_told_apart_by_its_text(
    store: Store,
) -> None:
    rig = RoomRig(store)
    rig.post("hello")
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "one")
    at = rig.clock()
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "one", None, at - 0.5, True)
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "two", None, at - 0.5, True)
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "ancient", None, at - 60, True)
    assert [m.body.rsplit(b"\r\n", 1)[-1] for m in store.outbox.pending(USER)] == [
        b"carol: one",
        b"carol: two",
    ]


def test_rooms_are_joined_again_after_a_restart_with_history_since_the_last_message(
    store: Store,
) -> None:
    rig = RoomRig(store)
    rig.rooms.marks = store.room_marks
    rig.post("hello")
    rig.rooms.room_message(rig.handle.info, ROOM, "carol", "seen before the restart")
    seen_at = rig.clock()
    rig.rooms.stop()  # a clean stop writes the marks

    again = RoomRig(store)
    again.rooms.marks = store.room_marks
    again.rooms.start()
    again.rooms.connected(again.handle.info)
    assert again.handle.calls[0] == ("join_room", ROOM, "alice", 20, seen_at)
    again.rooms.room_message(  # the room's stamp is in whole seconds: told by its text
        again.handle.info, ROOM, "carol", "seen before the restart", None, seen_at - 0.5, True
    )
    again.rooms.room_message(
        again.handle.info, ROOM, "carol", "said while down", None, seen_at + 30, True
    )
    assert [m.contact for m in store.outbox.pending(USER)] == [ROOM, ROOM]  # one each run
    assert again.rooms.rooms[(1, ROOM)].last_at == seen_at + 30
    assert again.post("/leave").status == 200
    assert store.room_marks.all() == []


def test_only_a_slash_after_the_at_names_an_occupant() -> None:
    assert split_occupant("lobby@conference.example.org/carol@home") == (
        "lobby@conference.example.org",
        "carol@home",
    )
    assert split_occupant("we/ird+name=x@example.org") is None  # a Matrix localpart
    assert split_occupant("bob@example.org") is None


def test_a_room_the_user_is_in_has_a_presence_counting_its_occupants(store: Store) -> None:
    rig = RoomRig(store)
    seen: list[Any] = []
    rig.rooms.on_presence = lambda account, presence: seen.append(presence)
    assert rig.rooms.presence_of(rig.handle.info, ROOM) is None  # not in it: not ours
    rig.post("hello")
    (joined,) = seen
    assert joined.contact == ROOM
    assert joined.aggregate.note == "2 occupants"
    assert joined.aggregate.is_open
    rig.rooms.room_joined(rig.handle.info, ROOM, "alice", ["alice", "carol", "dave"])
    assert seen[-1].aggregate.note == "3 occupants"
    rig.rooms.room_occupants(rig.handle.info, ROOM, ["alice", "carol"])
    assert seen[-1].aggregate.note == "2 occupants"
    rig.rooms.room_occupants(rig.handle.info, "other@conference.example.org", ["x"])
    assert len(seen) == 3  # not a room the user is in
