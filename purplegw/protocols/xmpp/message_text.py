"""The plain text of an incoming <message/>, XHTML-IM (XEP-0071) included.

SIP MESSAGE bodies we produce are text/plain.  XEP-0071 requires a sender
to include a plain <body/> next to <html/>, so that one wins; some clients
send only <html/>, and then the text is the XHTML body's character data
with block elements turned into line breaks.  The XHTML arrives already
parsed (slixmpp/ElementTree), so no markup is ever handled as a string.

The markup comes from anyone who can send us a message, so the walk is a
loop over an explicit stack, never recursion (a few thousand nested
elements used to raise RecursionError inside the stream's event handler and
drop the account's connection).  Its memory is one stack entry per element
still to visit, bounded by the stanza size the server allows.  Structure
is read down to ``MAX_DEPTH`` levels; deeper elements no longer break lines
(thousands of nested blocks would otherwise be thousands of line breaks),
but their character data is kept, in order: no text is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

XHTML_IM_NS = "http://jabber.org/protocol/xhtml-im"
XHTML_NS = "http://www.w3.org/1999/xhtml"
MAX_DEPTH = 100  # XHTML-IM that people write nests a handful of levels
# Elements after which a reader expects a new line.
_BLOCKS = {"p", "br", "div", "li", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5", "h6"}


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _walk(root: Element, out: list[str]) -> None:
    # Items are elements to open (with their depth) or text to emit; pushed in
    # reverse so that they pop in document order: text, children each followed
    # by its tail, then the block's line break.
    stack: list[tuple[Element, int] | str] = [(root, 0)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        element, depth = item
        name = _local(element.tag)
        if name in ("script", "style"):
            continue
        if element.text:
            out.append(element.text)
        if name in _BLOCKS and depth < MAX_DEPTH:
            stack.append("\n")
        for child in reversed(element):
            if child.tail:
                stack.append(child.tail)
            stack.append((child, depth + 1))


def xhtml_to_text(html: Element) -> str:
    """Character data of an XHTML-IM <html/> (or <body/>) element, tags dropped."""
    bodies = [c for c in html if _local(c.tag) == "body"] if _local(html.tag) == "html" else [html]
    parts: list[str] = []
    for body in bodies[:1]:  # several <body xml:lang=...>: the first is the default language
        _walk(body, parts)
    lines = [line.strip() for line in "".join(parts).splitlines()]
    return "\n".join(line for line in lines if line)


def message_text(message: Element) -> str | None:
    """Plain <body/> if present and not blank, else the XHTML-IM text, else None."""
    body = None
    html = None
    for child in message:
        name = _local(child.tag)
        if name == "body" and body is None and not child.tag.startswith("{" + XHTML_NS):
            body = child.text or ""
        elif name == "html" and child.tag.startswith("{" + XHTML_IM_NS):
            html = child
    if body is not None and body.strip():
        return body
    if html is not None:
        text = xhtml_to_text(html)
        return text or None
    return None
