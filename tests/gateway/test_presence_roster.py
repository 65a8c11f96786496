"""The roster as the buddy list, and watcher information (RFC 3857/3858), through the real Gateway.

Fake front, worker and accounts (tests/gateway/fakes.py); bodies are read
back with the stdlib's MIME and XML parsers and the watcherinfo reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from purplegw.actors.listener import AccountInfo
from purplegw.presence import Status
from purplegw.protocols.base import AuthorizationAnswer, ConnectionState, RosterItem
from purplegw.sip.presence.watcherinfo import parse_watcherinfo
from tests.gateway.fakes import Handle
from tests.gateway.test_presence_buddylist import NS, list_subscribe, presence, read
from tests.gateway.test_presence_service import USER, Rig, open_store
from tests.kit.sipmsg import make_request

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from purplegw.sip.message import Request, Response
    from purplegw.store import Store

BOB = "sip:bob@example.org;proto=xmpp"
CAROL = "sip:carol@example.org;proto=xmpp"
DAVE = "sip:dave@irc.test;proto=irc"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from open_store(tmp_path)


def rig(store: Store) -> Rig:
    xmpp = Handle(USER, "xmpp", "alice@example.org")
    irc = Handle(USER, "irc", "alice@irc.test", account_id=2)
    return Rig(store, handles=[xmpp, irc])


def resources(notify: Request) -> dict[str, tuple[str | None, str | None, str | None]]:
    """uri -> (name, instance state, reason) of a list NOTIFY."""
    root, _ = read(notify)
    found = {}
    for resource in root.findall("r:resource", NS):
        instance = resource.find("r:instance", NS)
        assert instance is not None
        found[resource.get("uri") or ""] = (
            resource.findtext("r:name", namespaces=NS),
            instance.get("state"),
            instance.get("reason"),
        )
    return found


def full_state(notify: Request) -> str | None:
    return read(notify)[0].get("fullState")


def test_the_list_is_the_roster_with_its_names(store: Store) -> None:
    r = rig(store)
    xmpp, irc = r.directory.handles
    # A contact seen before the roster came (a stranger's presence) is not on it.
    r.gateway.on_contact_presence(xmpp.info, presence("eve@example.org", Status.AVAILABLE))
    r.gateway.on_roster(
        xmpp.info,
        (
            RosterItem("bob@example.org", "Bob Builder", "to"),
            RosterItem("carol@example.org", "", "none", pending_out=True),
        ),
    )
    r.gateway.on_roster(irc.info, (RosterItem("dave", "", "both"),))
    r.gateway.on_contact_presence(xmpp.info, presence("bob@example.org", Status.AWAY, "lunch"))
    assert list_subscribe(r).status == 200
    first = r.front.notifies(5090)[-1]
    assert full_state(first) == "true"
    assert resources(first) == {
        BOB: ("Bob Builder", "active", None),
        CAROL: ("carol@example.org", "pending", None),
        DAVE: ("dave", "active", None),  # no presence yet: active, offline
    }
    _, states = read(first)
    assert (states[BOB][1].status, states[BOB][1].note) == (Status.AWAY, "lunch")
    assert states[DAVE][1].status is Status.OFFLINE

    # eve's presence changes: not on the roster, no NOTIFY.
    before = len(r.front.notifies(5090))
    r.gateway.on_contact_presence(xmpp.info, presence("eve@example.org", Status.AWAY))
    assert len(r.front.notifies(5090)) == before


def test_roster_pushes_and_accounts_coming_and_going_are_partial_notifies(store: Store) -> None:
    r = rig(store)
    xmpp, irc = r.directory.handles
    r.gateway.on_roster(xmpp.info, (RosterItem("bob@example.org", "Bob", "to"),))
    assert list_subscribe(r).status == 200
    count = len(r.front.notifies(5090))

    def last() -> Request:
        notifies = r.front.notifies(5090)
        assert len(notifies) == count + 1
        return notifies[-1]

    # Added on another client of the account.
    r.gateway.on_roster_item(xmpp.info, RosterItem("carol@example.org", "Carol", "none", True))
    latest = last()
    assert (full_state(latest), resources(latest)) == (
        "false",
        {CAROL: ("Carol", "pending", None)},
    )
    count += 1
    # Renamed.
    r.gateway.on_roster_item(xmpp.info, RosterItem("bob@example.org", "Robert", "to"))
    assert resources(last()) == {BOB: ("Robert", "active", None)}
    count += 1
    # The same item again: nothing to say.
    r.gateway.on_roster_item(xmpp.info, RosterItem("bob@example.org", "Robert", "to"))
    assert len(r.front.notifies(5090)) == count
    # Removed: named once more, terminated/noresource.
    r.gateway.on_roster_removed(xmpp.info, "carol@example.org")
    assert resources(last()) == {CAROL: ("Carol", "terminated", "noresource")}
    count += 1
    # An account logs in: its roster arrives as one partial NOTIFY.
    r.gateway.on_roster(irc.info, (RosterItem("dave", "", "both"),))
    assert resources(last()) == {DAVE: ("dave", "active", None)}
    count += 1
    # It disconnects but stays in the table: nothing leaves the list.
    r.gateway.on_connection_state(irc.info, ConnectionState.TRANSIENT_DISCONNECT, "lost")
    assert len(r.front.notifies(5090)) == count
    # ... nor when it logs out (PIDF closed parks it).
    r.gateway.on_connection_state(irc.info, ConnectionState.LOGGED_OUT, "")
    assert len(r.front.notifies(5090)) == count
    # A reload removes its row: its contacts leave the list.
    r.directory.handles.remove(irc)
    r.gateway.on_account_removed(AccountInfo(0, USER, "irc", ""))
    assert resources(last()) == {DAVE: ("dave", "terminated", "noresource")}
    count += 1
    r.gateway.on_account_removed(AccountInfo(0, USER, "irc", ""))  # said twice: once
    assert len(r.front.notifies(5090)) == count
    # A refresh lists what is left, in full.
    list_subscribe(r, to_tag=_to_tag(r), cseq=2)
    latest = last()
    assert (full_state(latest), set(resources(latest))) == ("true", {BOB})


def _to_tag(r: Rig) -> str:
    notify = r.front.notifies(5090)[0]
    assert notify.from_ is not None
    tag = notify.from_.tag
    assert tag is not None
    return tag


def test_an_account_without_a_roster_keeps_the_contacts_seen(store: Store) -> None:
    r = rig(store)
    xmpp, irc = r.directory.handles
    r.gateway.on_roster(xmpp.info, ())
    r.gateway.on_contact_presence(irc.info, presence("dave", Status.AVAILABLE))
    assert list_subscribe(r).status == 200
    assert set(resources(r.front.notifies(5090)[-1])) == {DAVE}


# --- watcher information ----------------------------------------------------------------


def winfo_subscribe(
    r: Rig,
    *,
    user: str = "alice",
    target: str = USER,
    expires: int = 600,
    to_tag: str | None = None,
    cseq: int = 1,
) -> Response:
    return r.request(
        make_request(
            "SUBSCRIBE",
            f"sip:{target}",
            from_=f"<sip:{user}@sip.test>",
            from_tag="wt",
            to=f"<sip:{target}>",
            to_tag=to_tag,
            call_id="winfo-1",
            cseq=cseq,
            extra=[
                ("Event", "presence.winfo"),
                ("Expires", str(expires)),
                ("Contact", "<sip:alice@127.0.0.1:5091>"),
                ("Accept", "application/watcherinfo+xml"),
            ],
        ),
        port=5091,
    )


def watchers(notify: Request) -> tuple[str, dict[str, tuple[str, str, str | None]]]:
    assert notify.headers.get("Event") == "presence.winfo"
    assert notify.content_type == "application/watcherinfo+xml"
    info = parse_watcherinfo(notify.body)
    (wlist,) = info.lists
    assert (wlist.resource, wlist.package) == (f"sip:{USER}", "presence")
    return info.state, {w.uri: (w.status, w.event, w.display_name) for w in wlist.watchers}


def answer(r: Rig, contact_uri: str, word: str) -> Response:
    return r.request(
        make_request(
            "MESSAGE",
            contact_uri,
            from_=f"<sip:{USER}>",
            to=f"<{contact_uri}>",
            body=word.encode(),
            content_type="text/plain",
        )
    )


def test_winfo_lists_pending_requests_and_follows_the_answers(store: Store) -> None:
    r = rig(store)
    xmpp, _irc = r.directory.handles
    r.gateway.on_roster(xmpp.info, (RosterItem("bob@example.org", "Bob", "both"),))
    r.gateway.on_authorization_request(xmpp.info, "carol@example.org", "hi")
    ok = winfo_subscribe(r)
    assert ok.status == 200
    (first,) = r.front.notifies(5091)
    assert (first.headers.get("Subscription-State") or "").startswith("active")
    assert watchers(first) == (
        "full",
        {
            BOB: ("active", "approved", "Bob"),
            CAROL: ("pending", "subscribe", None),
        },
    )
    # A new request: partial, naming it only.
    r.gateway.on_authorization_request(xmpp.info, "erin@example.org", "")
    erin = "sip:erin@example.org;proto=xmpp"
    assert watchers(r.front.notifies(5091)[-1]) == (
        "partial",
        {erin: ("pending", "subscribe", None)},
    )
    # The user allows carol by MESSAGE, as before: the answer goes out, winfo shows it.
    assert answer(r, CAROL, "allow").status == 200
    assert xmpp.calls[-1] == (
        "answer_authorization",
        "carol@example.org",
        AuthorizationAnswer.ALLOW,
    )
    assert watchers(r.front.notifies(5091)[-1]) == (
        "partial",
        {CAROL: ("active", "approved", None)},
    )
    # The roster push that follows (subscription from) changes nothing visible.
    count = len(r.front.notifies(5091))
    r.gateway.on_roster_item(xmpp.info, RosterItem("carol@example.org", "", "from"))
    assert len(r.front.notifies(5091)) == count
    # erin denied: terminated/rejected once.
    assert answer(r, erin, "deny").status == 200
    assert watchers(r.front.notifies(5091)[-1]) == (
        "partial",
        {erin: ("terminated", "rejected", None)},
    )
    tag = r.front.notifies(5091)[0].from_
    assert tag is not None
    assert tag.tag is not None
    # A refresh: the full state again, erin gone, carol now from the roster.
    assert winfo_subscribe(r, to_tag=tag.tag, cseq=2).status == 200
    assert watchers(r.front.notifies(5091)[-1]) == (
        "full",
        {BOB: ("active", "approved", "Bob"), CAROL: ("active", "approved", None)},
    )
    # Unsubscribe: a final NOTIFY without body.
    assert winfo_subscribe(r, expires=0, to_tag=tag.tag, cseq=3).status == 200
    final = r.front.notifies(5091)[-1]
    assert (final.headers.get("Subscription-State") or "").startswith("terminated")
    assert not final.body
    assert r.presence.watch_count.get(USER, 0) == 0


def test_winfo_of_somebody_else_is_403_and_unknown_dialogs_481(store: Store) -> None:
    r = rig(store)
    assert winfo_subscribe(r, user="bob").status == 403
    assert winfo_subscribe(r, target="bob@sip.test").status == 403
    assert winfo_subscribe(r, to_tag="nope", cseq=2).status == 481
    assert not r.front.notifies(5091)
