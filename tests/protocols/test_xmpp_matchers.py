"""The cheap stanza matchers answer exactly as slixmpp's own (matchers.py)."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import pytest
from slixmpp.stanza import Iq, Message, Presence
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.matcher import MatchXPath, StanzaPath

from purplegw.protocols.xmpp.matchers import IqStanzaPath, TagMatcher, fast_matcher

# Every document here is written by the tests themselves.
STANZAS = [
    "<message xmlns='jabber:client' from='a@b/c' type='chat'><body>hi</body></message>",
    "<message xmlns='jabber:client' type='error'><error type='cancel'/></message>",
    "<message xmlns='jabber:client'><html xmlns='http://jabber.org/protocol/xhtml-im'/></message>",
    "<message xmlns='jabber:client'><x><body>nested, not a child</body></x></message>",
    "<message xmlns='other:ns'><body>other namespace</body></message>",
    "<presence xmlns='jabber:client' from='a@b/c'/>",
    (
        "<iq xmlns='jabber:client' type='set' id='1'>"
        "<query xmlns='jabber:iq:roster'><item jid='x@y'/></query></iq>"
    ),
    "<iq xmlns='jabber:client' type='get' id='2'><query xmlns='jabber:iq:roster'/></iq>",
    "<iq xmlns='jabber:client' type='set' id='3'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<r xmlns='urn:xmpp:sm:3'/>",
    "<a xmlns='urn:xmpp:sm:3' h='5'/>",
    "<error xmlns='http://etherx.jabber.org/streams'/>",
    "<features xmlns='http://etherx.jabber.org/streams'/>",
    "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
]
XPATHS = [
    "{jabber:client}message",
    "{jabber:client}message/{jabber:client}body",
    "{jabber:client}message/{jabber:client}error",
    "{jabber:client}presence",
    "{http://etherx.jabber.org/streams}error",
    "{http://etherx.jabber.org/streams}features",
    "{urn:xmpp:sm:3}r",
    "{urn:xmpp:sm:3}a",
    "{urn:ietf:params:xml:ns:xmpp-sasl}success",
    "{jabber:client}message//{jabber:client}body",  # slixmpp reads it as message/body
]
CLASSES = {"message": Message, "presence": Presence, "iq": Iq}


def stanza(text: str) -> StanzaBase:
    xml = ET.fromstring(text)  # noqa: S314 - the tests' own documents
    namespace, _, name = xml.tag.partition("}")
    cls = CLASSES.get(name) if namespace == "{jabber:client" else None
    return cls(xml=xml, recv=True) if cls is not None else StanzaBase(xml=xml)


@pytest.mark.parametrize("xpath", XPATHS)
@pytest.mark.parametrize("text", STANZAS)
def test_tag_matcher_answers_as_match_xpath(xpath: str, text: str) -> None:
    original = MatchXPath(xpath)
    fast = fast_matcher(original)
    assert isinstance(fast, TagMatcher)
    assert fast.match(stanza(text)) is original.match(stanza(text))


@pytest.mark.parametrize("text", STANZAS)
def test_roster_push_matcher_answers_as_stanza_path(text: str) -> None:
    original = StanzaPath("iq@type=set/roster")
    fast = fast_matcher(original)
    assert isinstance(fast, IqStanzaPath)
    assert bool(fast.match(stanza(text))) is bool(original.match(stanza(text)))


def test_roster_push_is_matched() -> None:
    fast = fast_matcher(StanzaPath("iq@type=set/roster"))
    assert fast.match(stanza(STANZAS[6]))
    assert not fast.match(stanza(STANZAS[7]))  # a get


@pytest.mark.parametrize(
    "xpath",
    [
        "{jabber:client}message/{jabber:client}body/{jabber:client}x",  # deeper than one child
        "{jabber:client}message/*",
        "{jabber:client}message[@type='chat']",
    ],
)
def test_other_xpaths_keep_slixmpps_matcher(xpath: str) -> None:
    original = MatchXPath(xpath)
    assert fast_matcher(original) is original


def test_other_stanza_paths_keep_slixmpps_matcher() -> None:
    original = StanzaPath("message@type=chat/body")
    assert fast_matcher(original) is original


def test_one_matcher_per_criteria_serves_every_client() -> None:
    import asyncio

    from purplegw.protocols.xmpp.session import Client

    assert fast_matcher(MatchXPath(XPATHS[0])) is fast_matcher(MatchXPath(XPATHS[0]))
    roster = fast_matcher(StanzaPath("iq@type=set/roster"))
    assert fast_matcher(StanzaPath("iq@type=set/roster")) is roster

    async def two() -> tuple[Client, Client]:
        return Client("a@example.org", "x"), Client("b@example.org", "y")

    first, second = asyncio.run(two())

    def matchers(client: Client) -> dict[str, object]:
        return {h.name: h._matcher for h in client._XMLStream__handlers}

    ours, theirs = matchers(first), matchers(second)
    assert ours.keys() == theirs.keys()
    shared = [name for name in ours if ours[name] is theirs[name]]
    assert len(shared) >= 5, shared
    assert all(isinstance(ours[name], (TagMatcher, IqStanzaPath)) for name in shared)
