"""RFC 3858 watcher information: reading, writing, and the same guards as PIDF."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purplegw.sip.presence.errors import PidfError
from purplegw.sip.presence.watcherinfo import (
    Watcher,
    WatcherInfo,
    WatcherInfoNotifier,
    WatcherList,
    active_watcher,
    parse_watcherinfo,
    pending_watcher,
    serialize_watcherinfo,
    watcher_id,
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


# --- the notifier's documents (WatcherInfoNotifier) ----------------------------------

BOB = "sip:bob@example.org;proto=xmpp"
CAROL = "sip:carol@example.org;proto=xmpp"


def _watchers(body: bytes | None) -> tuple[int, str, dict[str, tuple[str, str, str | None]]]:
    assert body is not None
    info = parse_watcherinfo(body)
    (wlist,) = info.lists
    assert (wlist.resource, wlist.package) == ("sip:alice@sip.test", "presence")
    return (
        info.version,
        info.state,
        {w.uri: (w.status, w.event, w.display_name) for w in wlist.watchers},
    )


def test_notifier_full_then_partial_changes_only() -> None:
    notifier = WatcherInfoNotifier("sip:alice@sip.test")
    assert _watchers(notifier.full([])) == (0, "full", {})
    bob = pending_watcher(BOB, "Bob")
    assert _watchers(notifier.partial([bob])) == (
        1,
        "partial",
        {BOB: ("pending", "subscribe", "Bob")},
    )
    assert notifier.partial([bob]) is None  # nothing changed: no document, no version
    carol = pending_watcher(CAROL)
    # bob approved, carol new: both named; the id stays bob's.
    version, state, watchers = _watchers(notifier.partial([active_watcher(BOB, "Bob"), carol]))
    assert (version, state) == (2, "partial")
    assert watchers == {
        BOB: ("active", "approved", "Bob"),
        CAROL: ("pending", "subscribe", None),
    }
    assert active_watcher(BOB).id == bob.id == watcher_id(BOB) != watcher_id(CAROL)
    # carol denied: named once more, terminated/rejected, then forgotten.
    assert _watchers(notifier.partial([active_watcher(BOB, "Bob")], {CAROL: "rejected"})) == (
        3,
        "partial",
        {CAROL: ("terminated", "rejected", None)},
    )
    assert notifier.partial([active_watcher(BOB, "Bob")]) is None
    # bob went away without a reason: deactivated.
    assert _watchers(notifier.partial([])) == (
        4,
        "partial",
        {BOB: ("terminated", "deactivated", "Bob")},
    )
    # A refresh: the full state again, the version still growing.
    assert _watchers(notifier.full([carol])) == (
        5,
        "full",
        {CAROL: ("pending", "subscribe", None)},
    )


def test_notifier_documents_escape_what_contacts_choose() -> None:
    notifier = WatcherInfoNotifier("sip:alice@sip.test")
    uri = "sip:%3Cx%3E@irc.test;proto=irc"
    body = notifier.full([pending_watcher(uri, 'Mallory <"&">')])
    assert _watchers(body)[2] == {uri: ("pending", "subscribe", 'Mallory <"&">')}
