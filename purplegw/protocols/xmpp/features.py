"""The XEPs a gateway connection speaks, without one slixmpp plugin instance per client.

slixmpp's XEP-0030 (disco), -0085 (chat states), -0184 (receipts), -0199
(ping) and -0071 (XHTML-IM) plugins cost ~20 KiB of memory and a
``ClientXMPP`` build's worth of CPU per account (tracemalloc, docs/runtime.md):
each keeps a per-client disco node store with an API registry, event
handlers, filters and stanza matchers.  The gateway needs little of that:

* the stanza plugins (``msg["chat_state"]``, ``msg["request_receipt"]``,
  ``msg["receipt"]``, ``iq["ping"]``) are class-level registrations:
  :func:`install` makes them once per process;
* answers to the two requests a contact or server may send - disco#info
  (the fixed feature list below) and ping - come from :func:`answer_iq`,
  registered per client behind matchers shared by every client;
* receipts (sent for every message that asks for one, as XEP-0184's
  ``auto_ack`` did) and received receipts are handled in the session's one
  ``<message/>`` handler.

XEP-0198 stream management stays slixmpp's plugin: it holds per-stream state
by nature.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, SubElement

from slixmpp.plugins.xep_0085 import stanza as chat_states
from slixmpp.plugins.xep_0184 import stanza as receipts
from slixmpp.plugins.xep_0199 import stanza as ping
from slixmpp.stanza import Iq, Message
from slixmpp.xmlstream import register_stanza_plugin
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

DISCO_INFO_NS = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS_NS = "http://jabber.org/protocol/disco#items"
XHTML_IM_NS = "http://jabber.org/protocol/xhtml-im"

#: What a contact learns from disco#info: the same features the slixmpp
#: plugins advertised before (XHTML-IM: incoming XHTML-only messages are
#: read, purplegw/protocols/xmpp/message_text.py).
FEATURES = (
    DISCO_INFO_NS,
    chat_states.ChatState.namespace,
    receipts.Request.namespace,
    ping.Ping.namespace,
    XHTML_IM_NS,
)
IDENTITY = {"category": "client", "type": "pc", "name": "purplegw"}
#: Message types that get a receipt when they ask for one (XEP-0184 plugin's ``ack_types``).
RECEIPT_TYPES = ("normal", "chat", "headline")

_installed = False


def install() -> None:
    """Register the stanza plugins once per process (class-level, shared by every client)."""
    global _installed  # noqa: PLW0603 - a once-per-process switch
    if _installed:
        return
    register_stanza_plugin(Message, chat_states.ChatState)
    for state in (
        chat_states.Active,
        chat_states.Composing,
        chat_states.Gone,
        chat_states.Inactive,
        chat_states.Paused,
    ):
        register_stanza_plugin(Message, state)
    register_stanza_plugin(Message, receipts.Request)
    register_stanza_plugin(Message, receipts.Received)
    register_stanza_plugin(Iq, ping.Ping)
    _installed = True


def _disco_info() -> Element:
    query = Element(f"{{{DISCO_INFO_NS}}}query")
    SubElement(query, f"{{{DISCO_INFO_NS}}}identity", IDENTITY)
    for feature in FEATURES:
        SubElement(query, f"{{{DISCO_INFO_NS}}}feature", var=feature)
    return query


class IqPayloadMatcher(MatcherBase):
    """An ``<iq/>`` whose payload element is one of ``criteria`` (a set of tags).

    One set lookup per stanza instead of an XPath walk per request kind:
    every incoming stanza is offered to every handler of its stream.
    """

    def match(self, xml: Any) -> bool:
        element = xml.xml
        return element.tag == IQ_TAG and len(element) > 0 and element[0].tag in self._criteria


IQ_TAG = "{jabber:client}iq"
_DISCO_INFO = _disco_info()
# Matchers hold no state: one for every client of the process.
_IQ_REQUESTS = IqPayloadMatcher(
    frozenset(
        (
            f"{{{DISCO_INFO_NS}}}query",
            f"{{{DISCO_ITEMS_NS}}}query",
            f"{{{ping.Ping.namespace}}}ping",
        )
    )
)


def answer_iq(iq: Any) -> None:
    """Answer a disco#info, disco#items or ping request (result), anything else: untouched."""
    if iq["type"] != "get":
        iq.unhandled()  # a set or a stray result/error of these namespaces
        return
    query = iq.xml[0] if len(iq.xml) else None
    node = query.get("node") if query is not None else None
    if node:
        # No entity capabilities are published: no node is known (XEP-0030 3.1).
        reply = iq.reply()
        reply["error"]["condition"] = "item-not-found"
        reply["error"]["type"] = "cancel"
        reply.send()
        return
    reply = iq.reply(clear=True)
    if query is not None and query.tag == _DISCO_INFO.tag:
        element = Element(_DISCO_INFO.tag)
        element.extend(_DISCO_INFO)  # the children are never changed: shared, not copied
        reply.xml.append(element)
    elif query is not None and query.tag.endswith("}query"):
        reply.xml.append(Element(query.tag))
    reply.send()


def register(client: Any) -> None:
    """Give ``client`` the iq answers (the stanza plugins need :func:`install` first)."""
    client.register_handler(Callback("purplegw iq", _IQ_REQUESTS, answer_iq))


def ack_receipt(client: Any, msg: Any) -> None:
    """Send a XEP-0184 receipt for ``msg`` if it asks for one (as the plugin's ``auto_ack``)."""
    if msg["type"] in RECEIPT_TYPES and msg["request_receipt"] and not msg["receipt"]:
        ack = client.Message()
        ack["to"] = msg["from"]
        ack["receipt"] = msg["id"]
        ack.send()


def ping_iq(client: Any, to: str) -> Any:
    """An XEP-0199 ping to ``to``, ready for ``await iq.send(timeout=...)``."""
    iq = client.make_iq_get(ito=to)
    iq.enable("ping")
    return iq
