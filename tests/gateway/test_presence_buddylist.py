"""The buddy list (RFC 4662) through the real Gateway, fake front/worker/accounts.

Bodies are read back with the stdlib's MIME and XML parsers, not our encoder.
"""

from __future__ import annotations

import email.parser
import email.policy
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

import pytest

from purplegw.presence import ContactPresence, Presence, Status
from purplegw.protocols.base import AuthorizationAnswer
from purplegw.sip.presence import parse_pidf, pidf_to_presence
from purplegw.sip.presence.rlmi import NS_RLMI
from tests.gateway.fakes import Handle
from tests.gateway.test_presence_service import USER, Rig, open_store
from tests.kit.sipmsg import make_request

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from purplegw.sip.message import Request, Response
    from purplegw.store import Store

LIST = "sip:alice-buddies@sip.test"
NS = {"r": NS_RLMI}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from open_store(tmp_path)


def rig(store: Store) -> Rig:
    xmpp = Handle(USER, "xmpp", "alice@example.org")
    irc = Handle(USER, "irc", "alice@irc.test", account_id=2)
    return Rig(store, handles=[xmpp, irc])


def list_subscribe(
    rig: Rig,
    *,
    user: str = "alice",
    supported: str | None = "eventlist",
    expires: int = 600,
    to_tag: str | None = None,
    cseq: int = 1,
    target: str = LIST,
) -> Response:
    extra = [
        ("Event", "presence"),
        ("Expires", str(expires)),
        ("Contact", "<sip:alice@127.0.0.1:5090>"),
        ("Accept", "application/rlmi+xml, multipart/related, application/pidf+xml"),
    ]
    if supported is not None:
        extra.append(("Supported", supported))
    return rig.request(
        make_request(
            "SUBSCRIBE",
            target,
            from_=f"<sip:{user}@sip.test>",
            from_tag="lt",
            to=f"<{target}>",
            to_tag=to_tag,
            call_id="list-1",
            cseq=cseq,
            extra=extra,
        ),
        port=5090,
    )


def read(notify: Request) -> tuple[ET.Element, dict[str, Any]]:
    """The RLMI root and the PIDF presence per resource URI of a list NOTIFY."""
    content_type = notify.headers.get("Content-Type") or ""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + notify.body
    )
    parts = {p["Content-ID"]: p.get_payload(decode=True) for p in message.iter_parts()}
    root = ET.fromstring(parts[message.get_param("start")])  # noqa: S314 - the gateway's own
    states = {}
    for resource in root.findall("r:resource", NS):
        instance = resource.find("r:instance", NS)
        assert instance is not None
        cid = instance.get("cid")
        states[resource.get("uri")] = (
            instance.get("state"),
            pidf_to_presence(parse_pidf(parts[f"<{cid}>"], "application/pidf+xml"))
            if cid
            else None,
        )
    return root, states


def presence(contact: str, status: Status, note: str | None = None) -> ContactPresence:
    return ContactPresence(contact, {"": Presence(status, note=note)})


def test_without_eventlist_421_and_someone_elses_list_403(store: Store) -> None:
    r = rig(store)
    refused = list_subscribe(r, supported=None)
    assert (refused.status, refused.headers.get("Require")) == (421, "eventlist")
    assert list_subscribe(r, supported="100rel").status == 421
    assert list_subscribe(r, user="bob").status == 403
    assert not r.front.notifies()


def test_full_state_then_partial_notifies_then_unsubscribe(store: Store) -> None:
    r = rig(store)
    xmpp, irc = r.directory.handles
    r.gateway.on_contact_presence(xmpp.info, presence("bob@example.org", Status.AWAY, "lunch"))
    r.gateway.on_authorization_answer(irc.info, "carol", AuthorizationAnswer.DENY)
    r.subscribe(5071)  # alice's phone also watches bob@example.org directly
    ok = list_subscribe(r)
    assert (ok.status, ok.headers.get("Require")) == (200, "eventlist")

    first = r.front.notifies(5090)[-1]
    assert first.headers.get("Require") == "eventlist"
    assert (first.headers.get("Subscription-State") or "").startswith("active")
    root, states = read(first)
    assert (root.get("uri"), root.get("version"), root.get("fullState")) == (LIST, "0", "true")
    bob_uri, carol_uri = "sip:bob@example.org;proto=xmpp", "sip:carol@irc.test;proto=irc"
    assert set(states) == {bob_uri, carol_uri}
    assert states[bob_uri][0] == "active"
    assert (states[bob_uri][1].status, states[bob_uri][1].note) == (Status.AWAY, "lunch")
    assert states[carol_uri] == ("terminated", None)
    names = {
        r.get("uri"): r.findtext("r:name", namespaces=NS) for r in root.findall("r:resource", NS)
    }
    assert names[bob_uri] == "bob@example.org"

    # A change of one contact: a partial NOTIFY naming it only.
    r.gateway.on_contact_presence(xmpp.info, presence("bob@example.org", Status.BUSY, "call"))
    root, states = read(r.front.notifies(5090)[-1])
    assert (root.get("version"), root.get("fullState")) == ("1", "false")
    assert list(states) == [bob_uri]
    assert states[bob_uri][1].status is Status.BUSY
    # A new contact appears in a partial NOTIFY too.
    r.gateway.on_contact_presence(irc.info, presence("dave", Status.AVAILABLE))
    root, states = read(r.front.notifies(5090)[-1])
    assert (root.get("version"), list(states)) == ("2", ["sip:dave@irc.test;proto=irc"])

    # A refresh sends the full state again; an unsubscribe ends it without a list.
    tag = ok.to.tag
    assert list_subscribe(r, to_tag=tag, cseq=2).status == 200
    root, states = read(r.front.notifies(5090)[-1])
    assert (root.get("version"), root.get("fullState"), len(states)) == ("3", "true", 3)
    assert list_subscribe(r, to_tag=tag, cseq=3, expires=0).status == 200
    last = r.front.notifies(5090)[-1]
    assert last.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert not last.body
    sent = len(r.front.notifies(5090))
    r.gateway.on_contact_presence(xmpp.info, presence("bob@example.org", Status.AWAY))
    assert len(r.front.notifies(5090)) == sent
    assert r.presence.watch_count == {USER: 1}  # the direct subscription only


def test_list_dialogs_count_against_the_subscription_cap(store: Store) -> None:
    r = rig(store)
    r.presence.settings.max_subscriptions_per_user = 1
    assert list_subscribe(r).status == 200
    assert r.subscribe(5071).status == 403


def test_other_uris_of_the_domain_are_not_lists(store: Store) -> None:
    r = rig(store)
    assert r.presence.buddylists is not None
    owner_of = r.presence.buddylists.owner_of
    from purplegw.sip.uri import parse_uri

    assert owner_of(parse_uri(LIST)) == USER
    assert owner_of(parse_uri("sip:-buddies@sip.test")) is None
    assert owner_of(parse_uri("sip:alice-buddies@example.org")) is None
    assert owner_of(parse_uri("sip:alice@sip.test")) is None
