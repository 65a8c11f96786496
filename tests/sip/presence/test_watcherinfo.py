"""RFC 3858 watcher information: reading, writing, and the same guards as PIDF."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purplegw.sip.presence.errors import PidfError
from purplegw.sip.presence.watcherinfo import (
    Watcher,
    WatcherInfo,
    WatcherList,
    parse_watcherinfo,
    serialize_watcherinfo,
)

# Shaped like the example of RFC 3858 section 6.
RFC3858_EXAMPLE = b"""<?xml version="1.0"?>
<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo"
             version="0" state="full">
  <watcher-list resource="sip:professor@example.net" package="presence">
    <watcher status="active"
             id="8ajksjda7s"
             duration-subscribed="509"
             event="approved" >sip:userA@example.net</watcher>
    <watcher status="pending"
             id="hh8juja87s997-ass7"
             display-name="Mr. Subscriber"
             event="subscribe">sip:userB@example.org</watcher>
  </watcher-list>
</watcherinfo>
"""


def test_rfc3858_example() -> None:
    info = parse_watcherinfo(RFC3858_EXAMPLE, "application/watcherinfo+xml")
    assert info == WatcherInfo(
        version=0,
        state="full",
        lists=(
            WatcherList(
                resource="sip:professor@example.net",
                package="presence",
                watchers=(
                    Watcher(
                        uri="sip:userA@example.net",
                        id="8ajksjda7s",
                        status="active",
                        event="approved",
                        duration_subscribed=509,
                    ),
                    Watcher(
                        uri="sip:userB@example.org",
                        id="hh8juja87s997-ass7",
                        status="pending",
                        event="subscribe",
                        display_name="Mr. Subscriber",
                    ),
                ),
            ),
        ),
    )


def test_pending_authorization_request_round_trips() -> None:
    info = WatcherInfo(
        version=3,
        state="partial",
        lists=(
            WatcherList(
                resource="sip:alice@example.com",
                watchers=(
                    Watcher(
                        uri="xmpp:bob@jabber.example.org",
                        id="w1",
                        status="pending",
                        event="subscribe",
                        display_name='Bob "B" & <co>',
                        expiration=3600,
                        lang="en",
                    ),
                ),
            ),
        ),
    )
    assert parse_watcherinfo(serialize_watcherinfo(info)) == info


@pytest.mark.parametrize(
    ("body", "content_type", "fault"),
    [
        (RFC3858_EXAMPLE, "application/pidf+xml", "Unsupported Media Type"),
        (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>', "", "is not RFC 3858"),
        (b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" state="full"/>', "", "version"),
        (
            b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="1" state="some"/>',
            "",
            "neither full nor partial",
        ),
        (b"", "", "empty"),
        (
            (
                b'<!DOCTYPE w [<!ENTITY a "b">]>'
                b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo">&a;</watcherinfo>'
            ),
            "",
            "declares entities",
        ),
    ],
)
def test_faults_are_named(body: bytes, content_type: str, fault: str) -> None:
    with pytest.raises(PidfError, match=fault):
        parse_watcherinfo(body, content_type)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_pidf_error(body: bytes) -> None:
    try:
        parse_watcherinfo(RFC3858_EXAMPLE[: len(body) % len(RFC3858_EXAMPLE)] + body)
    except PidfError as exc:
        error = exc
    else:
        return
    assert error.status_hint in {400, 413, 415}
