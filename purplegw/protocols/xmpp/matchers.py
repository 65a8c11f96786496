"""Stanza matchers that cost a tag comparison, for the handlers every stanza is offered to.

slixmpp offers each incoming stanza to every handler of its stream (17 on a
gateway client) and runs each one that matches.  Most are
``MatchXPath("{ns}tag")`` or ``MatchXPath("{ns}tag/{ns}child")``, and
slixmpp 1.17 matches those by wrapping the stanza in a new element and
running an ElementPath query: ~2 us each, ~30 us per received message in all
(py-spy of bench/messaging.py, XMPP->SIP at 1,200/s).  :func:`fast_matcher`
gives the same answer for those two shapes with a tag comparison (and one
``find`` for the child); anything else keeps slixmpp's matcher.
"""

from __future__ import annotations

import re
from typing import Any

from slixmpp.xmlstream.matcher import MatchXPath, StanzaPath
from slixmpp.xmlstream.matcher.base import MatcherBase

# One element name with its namespace, no predicates, wildcards or axes.
_NAME = r"\{[^{}]*\}[^{}/\[\]@*.:()|=' \"]+"
_SIMPLE = re.compile(rf"({_NAME})(?:/({_NAME}))?")


class TagMatcher(MatcherBase):
    """Matches a stanza whose element is ``tag`` (and, if given, has a direct ``child``).

    The same as ``MatchXPath("tag")`` / ``MatchXPath("tag/child")``: slixmpp
    appends the stanza to a new root and ``find``s the path from there, which
    selects the stanza itself if its tag matches, then its direct children.
    """

    __slots__ = ("_child", "_tag")

    def __init__(self, tag: str, child: str | None = None) -> None:
        super().__init__(f"{tag}/{child}" if child else tag)
        self._tag = tag
        self._child = child

    def match(self, xml: Any) -> bool:
        element = xml.xml
        if element.tag != self._tag:
            return False
        return self._child is None or element.find(self._child) is not None


IQ_TAG = "{jabber:client}iq"


class IqStanzaPath(MatcherBase):
    """``StanzaPath("iq...")`` that answers False at once for anything but an ``<iq/>``.

    slixmpp's roster push handler is ``StanzaPath("iq@type=set/roster")``;
    ``ElementBase.match`` splits and compares the path for every stanza.  Only
    an Iq stanza (name "iq", no stanza has a plugin of that name) can match.
    """

    def __init__(self, inner: StanzaPath) -> None:
        super().__init__(inner._criteria)  # noqa: SLF001 - slixmpp keeps it there
        self._inner = inner

    def match(self, xml: Any) -> bool:
        return xml.xml.tag == IQ_TAG and self._inner.match(xml)


# Both kinds keep nothing but their criteria: one instance per criteria
# serves every client of the process (~1.2 KiB less per account: a client
# has a dozen handlers).
_SHARED: dict[Any, MatcherBase] = {}


def fast_matcher(matcher: MatcherBase) -> MatcherBase:
    """A cheaper matcher equal to ``matcher`` (see the module docstring), else ``matcher``."""
    if type(matcher) is StanzaPath:
        criteria = matcher._criteria  # noqa: SLF001
        first = criteria[0] if isinstance(criteria, list) and criteria else ""
        if first == "iq" or first.startswith(("iq@", "{jabber:client}iq@")) or first == IQ_TAG:
            key = (IqStanzaPath, tuple(criteria) if isinstance(criteria, list) else criteria)
            shared = _SHARED.get(key)
            if shared is None:
                shared = _SHARED[key] = IqStanzaPath(matcher)
            return shared
        return matcher
    if type(matcher) is not MatchXPath:
        return matcher
    criteria = matcher._criteria  # noqa: SLF001 - slixmpp keeps it there
    shared = _SHARED.get(criteria)
    if shared is None:
        simple = _SIMPLE.fullmatch(criteria)
        if simple is None:
            return matcher
        shared = _SHARED[criteria] = TagMatcher(simple[1], simple[2])
    return shared
