"""RLMI documents and their multipart/related bodies (RFC 4662), read back with the stdlib."""

from __future__ import annotations

import email.parser
import email.policy
import xml.etree.ElementTree as ET

import pytest

from purplegw.sip.presence.rlmi import (
    CONTENT_TYPE_RLMI,
    NS_RLMI,
    ResourceState,
    instance_id,
    list_notification,
    multipart_related,
)

LIST = "sip:alice-buddies@sip.test"
NS = {"r": NS_RLMI}
BOB = ResourceState(
    "sip:bob@example.org;proto=xmpp", 'Bob <&> "B"', "active", b"<presence>bob</presence>"
)
CAROL = ResourceState("sip:carol@irc.test;proto=irc", "carol", "pending")
DAVE = ResourceState("sip:dave@example.org;proto=xmpp", None, "terminated", reason="rejected")


def read(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """The parts as (Content-ID, Content-Type, payload), via the stdlib's MIME parser."""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert message.get_content_type() == "multipart/related"
    assert message.get_param("type") == CONTENT_TYPE_RLMI
    parts = [
        (p["Content-ID"], p.get_content_type(), p.get_payload(decode=True))
        for p in message.iter_parts()
    ]
    assert message.get_param("start") == parts[0][0]
    return parts


def test_full_state_lists_every_resource_with_a_part_per_active_one() -> None:
    content_type, body = list_notification(
        LIST,
        version=0,
        full_state=True,
        resources=[BOB, CAROL, DAVE],
        boundary="b0undary",
        cid_domain="sip.test",
    )
    parts = read(content_type, body)
    assert [p[1] for p in parts] == [CONTENT_TYPE_RLMI, "application/pidf+xml"]
    root = ET.fromstring(  # noqa: S314 - our own documents
        parts[0][2]
    )
    assert root.tag == f"{{{NS_RLMI}}}list"
    assert (root.get("uri"), root.get("version"), root.get("fullState")) == (LIST, "0", "true")
    resources = root.findall("r:resource", NS)
    assert [r.get("uri") for r in resources] == [BOB.uri, CAROL.uri, DAVE.uri]
    assert resources[0].findtext("r:name", namespaces=NS) == 'Bob <&> "B"'
    assert resources[2].find("r:name", NS) is None
    bob, carol, dave = (r.find("r:instance", NS) for r in resources)
    assert bob is not None
    assert carol is not None
    assert dave is not None
    assert (bob.get("state"), bob.get("id")) == ("active", instance_id(BOB.uri))
    assert f"<{bob.get('cid')}>" == parts[1][0]  # the instance names its part
    assert parts[1][2] == BOB.body
    assert (carol.get("state"), carol.get("cid")) == ("pending", None)
    assert (dave.get("state"), dave.get("reason")) == ("terminated", "rejected")


def test_partial_state_carries_only_the_changed_resources_and_a_higher_version() -> None:
    _, first = list_notification(
        LIST,
        version=0,
        full_state=True,
        resources=[BOB, CAROL],
        boundary="b",
        cid_domain="sip.test",
    )
    content_type, body = list_notification(
        LIST, version=1, full_state=False, resources=[BOB], boundary="b", cid_domain="sip.test"
    )
    parts = read(content_type, body)
    root = ET.fromstring(  # noqa: S314 - our own documents
        parts[0][2]
    )
    assert (root.get("version"), root.get("fullState")) == ("1", "false")
    assert [r.get("uri") for r in root.findall("r:resource", NS)] == [BOB.uri]
    instance = root.find("r:resource/r:instance", NS)
    assert instance is not None
    assert instance.get("id") == instance_id(BOB.uri)  # stable across notifications
    assert f"<{instance.get('cid')}>" == parts[1][0]
    assert parts[1][0].strip("<>") not in first.decode()  # content ids are per notification


def test_an_empty_list_is_a_valid_document() -> None:
    content_type, body = list_notification(
        LIST, version=0, full_state=True, resources=[], boundary="b", cid_domain="sip.test"
    )
    (rlmi,) = read(content_type, body)
    assert (
        ET.fromstring(  # noqa: S314 - our own documents
            rlmi[2]
        ).findall("r:resource", NS)
        == []
    )


def test_a_boundary_found_in_a_part_is_refused() -> None:
    with pytest.raises(ValueError, match="boundary"):
        multipart_related(
            [("a@x", "text/plain", b"x\r\n--oops\r\n")], boundary="oops", root_type="text/plain"
        )
