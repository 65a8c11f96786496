"""Group chat end to end: a pjsua2 phone <-> purplegw <-> Prosody's MUC <-> other occupants.

The occupants are slixmpp clients using slixmpp's own XEP-0045 plugin (not
purplegw's MUC code); the rooms are Prosody's ``muc`` component.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.deployment import deployment, phone
from tests.kit.binaries import missing_peer
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.kit.pjsua_agent import PjsuaAgent


@pytest.fixture(scope="module")
def prosody_muc() -> Iterator[Any]:
    from tests.kit.prosody import Prosody, prosody_binary

    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    with Prosody(muc=True) as server:
        yield server


@pytest.fixture
def setup(prosody_muc: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield from deployment(prosody_muc, tmp_path, prefix="gc")


def occupant(prosody: Any, name: str) -> XmppPeer:
    user = prosody.create_user(name)
    return XmppPeer(
        user.jid, user.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file, muc=True
    ).start()


def status_of(agent: PjsuaAgent, to: str, seen: int = 0) -> dict[str, Any]:
    """The answer to the ``seen``-th MESSAGE the phone sent to exactly ``to`` (0: the first)."""

    def answers() -> list[dict[str, Any]]:
        return agent.matching(lambda e: e["event"] == "im_status" and e["to"].strip("<>") == to)

    agent.wait_for(lambda _e: len(answers()) > seen)
    return answers()[seen]


def rename(agent: PjsuaAgent, carol: XmppPeer, room: str, me: str) -> None:
    """``/nick``: a taken nick is 409, a free one renames the account in the room."""
    room_uri = f"sip:{room};proto=xmpp"
    agent.message(room_uri, "/nick carol")
    taken = status_of(agent, room_uri, 2)
    assert taken["code"] == 409, taken
    agent.message(room_uri, "/nick renamed")
    assert status_of(agent, room_uri, 3)["code"] == 200
    carol.wait_room_nicks(room, lambda nicks: "renamed" in nicks and me not in nicks)
    agent.message(room_uri, "under a new name")
    assert status_of(agent, room_uri, 4)["code"] == 202
    moved = carol.wait_for(lambda e: e.kind == "message" and e.body == "under a new name")
    assert moved.sender == f"{room}/renamed"


def test_join_post_receive_who_private_and_leave(
    prosody_muc: Any, setup: dict[str, Any], tmp_path: Path
) -> None:
    gateway, account = setup["gateway"], setup["account"]
    tag = tmp_path.name[-8:].replace("_", "").lower()
    room = f"lobby{tag}@{prosody_muc.muc_service}"
    room_uri = f"sip:{room};proto=xmpp"
    me = account.jid.partition("@")[0]
    carol = occupant(prosody_muc, f"carol{tag}")
    dave = occupant(prosody_muc, f"dave{tag}")
    try:
        carol.join_room(room, "carol")
        dave.join_room(room, "dave")
        carol.send_groupchat(room, "said before you came")
        with phone(gateway) as agent:
            agent.message(room_uri, "hello room ✓")
            assert status_of(agent, room_uri)["code"] == 202, gateway.log_text()
            got = carol.wait_for(lambda e: e.kind == "message" and e.body == "hello room ✓")
            assert got.sender == f"{room}/{me}"

            # History on join: message/cpim with the original time and the occupant's URI.
            old = agent.wait_for(lambda e: e["event"] == "im" and "said before" in e["body"])
            assert old["content_type"] == "message/cpim"
            assert "carol: said before you came" in old["body"]
            assert "DateTime: " in old["body"]
            assert f'From: "carol" <{room_uri};nick=carol>' in old["body"]

            carol.send_groupchat(room, "hi from carol")
            dave.send_groupchat(room, "hi from dave")
            for text in ("carol: hi from carol", "dave: hi from dave"):
                im = agent.wait_for(lambda e, t=text: e["event"] == "im" and e["body"] == t)
                assert room_uri in im["from"]
            assert not agent.matching(lambda e: e["event"] == "im" and "hello room" in e["body"])

            agent.message(room_uri, "/who")
            assert status_of(agent, room_uri, 1)["code"] == 200
            who = agent.wait_for(lambda e: e["event"] == "im" and e["body"].startswith("3 in "))
            assert who["body"] == f"3 in {room}: carol, dave, {me}"
            assert carol.room_nicks(room) == {"carol", "dave", me}

            # An occupant privately, and the phone's answer back to that occupant.
            carol.send_message(f"{room}/{me}", "just between us")
            private = agent.wait_for(
                lambda e: e["event"] == "im" and e["body"] == "just between us"
            )
            assert f"{room_uri};nick=carol" in private["from"]
            agent.message(f"{room_uri};nick=carol", "sure")
            answer = carol.wait_for(lambda e: e.kind == "message" and e.body == "sure")
            assert answer.sender == f"{room}/{me}"

            rename(agent, carol, room, me)

            agent.message(room_uri, "/leave")
            assert status_of(agent, room_uri, 5)["code"] == 200
            carol.wait_room_nicks(room, lambda nicks: "renamed" not in nicks)
    finally:
        carol.stop()
        dave.stop()


def test_members_only_and_banned_are_refused_with_the_reason(
    prosody_muc: Any, setup: dict[str, Any], tmp_path: Path
) -> None:
    gateway, account = setup["gateway"], setup["account"]
    tag = tmp_path.name[-8:].replace("_", "").lower()
    club = f"club{tag}@{prosody_muc.muc_service}"
    pub = f"pub{tag}@{prosody_muc.muc_service}"
    owner = occupant(prosody_muc, f"owner{tag}")
    try:
        owner.join_room(club, "owner")
        owner.configure_room(club, membersonly="1")
        owner.join_room(pub, "owner")
        owner.set_affiliation(pub, account.jid, "outcast")
        with phone(gateway) as agent:
            agent.message(f"sip:{club};proto=xmpp", "let me in")
            refused = status_of(agent, f"sip:{club};proto=xmpp")
            assert refused["code"] == 403, gateway.log_text()
            assert "members-only" in refused["reason"]
            agent.message(f"sip:{pub};proto=xmpp", "let me in")
            banned = status_of(agent, f"sip:{pub};proto=xmpp")
            assert banned["code"] == 403
            assert "banned" in banned["reason"]
        assert not [e for e in owner.snapshot() if e.kind == "message" and e.body == "let me in"]
    finally:
        owner.stop()


def test_a_reconnect_rejoins_and_delivers_nothing_twice(
    prosody_muc: Any, setup: dict[str, Any], tmp_path: Path
) -> None:
    gateway, account = setup["gateway"], setup["account"]
    tag = tmp_path.name[-8:].replace("_", "").lower()
    room = f"again{tag}@{prosody_muc.muc_service}"
    room_uri = f"sip:{room};proto=xmpp"
    me = account.jid.partition("@")[0]
    carol = occupant(prosody_muc, f"carolr{tag}")
    try:
        carol.join_room(room, "carol")
        with phone(gateway, publish=True) as agent:
            agent.message(room_uri, "here")
            assert status_of(agent, room_uri)["code"] == 202, gateway.log_text()
            carol.wait_room_nicks(room, lambda nicks: me in nicks)
            # The room's URI has a presence: open, the note counts the occupants.
            agent.subscribe(room_uri)
            buddy = agent.wait_for(lambda e: e["event"] == "buddy" and e["note"] == "2 occupants")
            assert buddy["status"] != "offline", buddy
            dave = occupant(prosody_muc, f"daver{tag}")
            try:
                dave.join_room(room, "dave")
                agent.wait_for(lambda e: e["event"] == "buddy" and e["note"] == "3 occupants")
            finally:
                dave.stop()
            agent.wait_for(
                lambda e: e["event"] == "buddy" and e["note"] == "2 occupants" and e is not buddy
            )
            carol.send_groupchat(room, "before the break")
            agent.wait_for(lambda e: e["event"] == "im" and e["body"] == "carol: before the break")

            # PIDF closed logs the account out (the room sees it leave), open logs it in.
            agent.publish(online=False)
            gateway.wait_accounts("logged_out", timeout=30)
            carol.wait_room_nicks(room, lambda nicks: me not in nicks)
            carol.send_groupchat(room, "while you were away")
            agent.publish(online=True)
            gateway.wait_accounts("connected", timeout=60)
            carol.wait_room_nicks(room, lambda nicks: me in nicks)  # joined again by itself

            missed = agent.wait_for(lambda e: e["event"] == "im" and "while you were" in e["body"])
            assert missed["content_type"] == "message/cpim"
            assert "carol: while you were away" in missed["body"]
            carol.send_groupchat(room, "after the break")
            # In order per room: anything sent twice would have come before this one.
            agent.wait_for(lambda e: e["event"] == "im" and e["body"] == "carol: after the break")
            bodies = [e["body"] for e in agent.matching(lambda e: e["event"] == "im")]
            assert sum("before the break" in b for b in bodies) == 1, bodies
            assert sum("while you were away" in b for b in bodies) == 1, bodies
    finally:
        carol.stop()


def test_bookmarked_rooms_are_joined_after_a_gateway_restart(
    prosody_muc: Any, setup: dict[str, Any], tmp_path: Path
) -> None:
    gateway, account = setup["gateway"], setup["account"]
    tag = tmp_path.name[-8:].replace("_", "").lower()
    room = f"marked{tag}@{prosody_muc.muc_service}"
    room_uri = f"sip:{room};proto=xmpp"
    carol = occupant(prosody_muc, f"carolb{tag}")
    # The user's own other client bookmarks the room (XEP-0048, autojoin).
    own = XmppPeer(
        account.jid,
        account.password,
        "127.0.0.1",
        prosody_muc.port,
        ca_file=prosody_muc.ca_file,
        resource="desktop",
    ).start()
    try:
        carol.join_room(room, "carol")
        own.bookmark_room(room, "alice-bm")
        assert gateway.stop() == 0, gateway.log_text()
        gateway.start()
        gateway.wait_accounts("connected")
        carol.wait_room_nicks(room, lambda nicks: "alice-bm" in nicks)
        with phone(gateway) as agent:
            carol.send_groupchat(room, "welcome back")
            im = agent.wait_for(lambda e: e["event"] == "im" and e["body"] == "carol: welcome back")
            assert room_uri in im["from"]
            agent.message(room_uri, "thanks")
            assert status_of(agent, room_uri)["code"] == 202
            got = carol.wait_for(lambda e: e.kind == "message" and e.body == "thanks")
            assert got.sender == f"{room}/alice-bm"
    finally:
        own.stop()
        carol.stop()


def test_a_room_joined_by_writing_is_joined_again_after_a_gateway_restart(
    prosody_muc: Any, setup: dict[str, Any], tmp_path: Path
) -> None:
    gateway, account = setup["gateway"], setup["account"]
    tag = tmp_path.name[-8:].replace("_", "").lower()
    room = f"stay{tag}@{prosody_muc.muc_service}"
    room_uri = f"sip:{room};proto=xmpp"
    me = account.jid.partition("@")[0]
    carol = occupant(prosody_muc, f"carols{tag}")
    try:
        carol.join_room(room, "carol")
        with phone(gateway) as agent:
            agent.message(room_uri, "here")
            assert status_of(agent, room_uri)["code"] == 202, gateway.log_text()
            carol.send_groupchat(room, "before the restart")
            agent.wait_for(
                lambda e: e["event"] == "im" and e["body"] == "carol: before the restart"
            )
        assert gateway.stop() == 0, gateway.log_text()
        carol.wait_room_nicks(room, lambda nicks: me not in nicks)
        carol.send_groupchat(room, "while the gateway was down")
        gateway.start()
        gateway.wait_accounts("connected")
        carol.wait_room_nicks(room, lambda nicks: me in nicks)
        with phone(gateway) as agent:
            missed = agent.wait_for(
                lambda e: e["event"] == "im" and "gateway was down" in e["body"]
            )
            assert "carol: while the gateway was down" in missed["body"]
            assert "DateTime: " in missed["body"]
            carol.send_groupchat(room, "after the restart")
            agent.wait_for(lambda e: e["event"] == "im" and e["body"] == "carol: after the restart")
            bodies = [e["body"] for e in agent.matching(lambda e: e["event"] == "im")]
            assert not [b for b in bodies if "before the restart" in b], bodies
            assert sum("gateway was down" in b for b in bodies) == 1, bodies
    finally:
        carol.stop()
