"""Message bodies: what a SIP MESSAGE carries and what the gateway writes back.

- ``read_body``: text/plain, message/cpim (RFC 3862) and is-composing (RFC
  3994) from a SIP request; the CPIM headers (an IMDN request, RFC 5438, and
  the sender's DateTime) come with it in ``Incoming``.
- ``check_text``: the gateway-level checks on text headed for a network
  (NUL, size); the network's own limits are its adapter's (``unsendable``).
- ``imdn`` / ``cpim_text``: the message/cpim bodies written towards phones.

Rules:

Rule 1. A CPIM header name with a prefix is matched through its ``NS``
        declaration (RFC 3862 4.4): ``imdn.`` is only a convention.
Rule 2. Nothing here parses untrusted XML without defusedxml.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from defusedxml import ElementTree

from purplegw.protocols.base import TypingState

ISCOMPOSING_NS = "{urn:ietf:params:xml:ns:im-iscomposing}"
IMDN_NS = "urn:ietf:params:imdn"  # the CPIM header namespace (RFC 5438 7.1)
IMDN_XML_NS = "{urn:ietf:params:xml:ns:imdn}"
CPIM = "message/cpim"
IMDN_XML = "message/imdn+xml"


@dataclass(frozen=True)
class Incoming:
    """What a SIP MESSAGE from a phone said."""

    kind: str  # "text" | "typing" | "imdn" | "unsupported" | "bad"
    text: str = ""  # the text, or the reason for "unsupported"/"bad"
    typing: TypingState | None = None
    imdn_id: str = ""  # imdn.Message-ID of a text, or the message an "imdn" is about
    notify: frozenset[str] = field(default_factory=frozenset)  # requested dispositions
    disposition: str = ""  # for "imdn": "delivered" | "displayed" | "failed" ...


def read_body(content_type: str | None, body: bytes) -> Incoming:
    media, _, params = (content_type or "text/plain").strip().partition(";")
    media = media.strip().lower()
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    if media == "text/plain":
        try:
            text = body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            return Incoming("bad", f"body is not valid {charset}")
        return Incoming("text", text) if text else Incoming("bad", "empty message")
    if media == CPIM:
        return read_cpim(body)
    if media == "application/im-iscomposing+xml":
        try:
            root = ElementTree.fromstring(body)
        except Exception:  # noqa: BLE001 - any parse failure is the sender's
            return Incoming("bad", "malformed is-composing document")
        state = (root.findtext(f"{ISCOMPOSING_NS}state") or "").strip().lower()
        return Incoming(
            "typing", typing=TypingState.COMPOSING if state == "active" else TypingState.ACTIVE
        )
    return Incoming("unsupported", media)


def _headers(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\n"):
        name, sep, value = line.partition(":")
        if sep:
            out.setdefault(name.strip().lower(), value.strip())
    return out


def read_cpim(body: bytes) -> Incoming:
    """RFC 3862: CPIM headers, blank line, MIME headers, blank line, content."""
    parts = body.replace(b"\r\n", b"\n").split(b"\n\n", 2)
    if len(parts) != 3:
        return Incoming("bad", "malformed message/cpim")
    cpim, mime = _headers(parts[0]), _headers(parts[1])
    prefix = "imdn."
    for line in parts[0].decode("utf-8", "replace").split("\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "ns" and IMDN_NS in value:
            prefix = value.split("<", 1)[0].strip().lower() + "."  # Rule 1
    imdn_id = cpim.get(f"{prefix}message-id", "")
    media = mime.get("content-type", "text/plain").split(";", 1)[0].strip().lower()
    if media == IMDN_XML:
        return _read_imdn(parts[2])
    if media != "text/plain":
        return Incoming("unsupported", "message/cpim with non-text content")
    try:
        content = parts[2].decode("utf-8")
    except UnicodeDecodeError:
        return Incoming("bad", "message/cpim content is not UTF-8")
    if not content:
        return Incoming("bad", "empty message")
    asked = cpim.get(f"{prefix}disposition-notification", "")
    notify = frozenset(a.strip().lower() for a in asked.split(",") if a.strip())
    return Incoming("text", content, imdn_id=imdn_id, notify=notify)


def _read_imdn(xml: bytes) -> Incoming:
    try:
        root = ElementTree.fromstring(xml)
    except Exception:  # noqa: BLE001 - any parse failure is the sender's
        return Incoming("bad", "malformed IMDN document")
    about = (root.findtext(f"{IMDN_XML_NS}message-id") or "").strip()
    for kind in ("delivery", "display"):
        status = root.find(f"{IMDN_XML_NS}{kind}-notification/{IMDN_XML_NS}status")
        if status is not None and len(status):
            value = status[0].tag.removeprefix(IMDN_XML_NS)
            disposition = {"delivered": "delivered", "displayed": "displayed"}.get(value, value)
            return Incoming("imdn", imdn_id=about, disposition=disposition)
    return Incoming("bad", "IMDN without a notification")


def check_text(text: str, max_bytes: int) -> tuple[int, str] | None:
    """The gateway's own limits on a text for any network; None: acceptable."""
    if "\x00" in text:
        return 488, "text contains a NUL character"
    if max_bytes and len(text.encode("utf-8")) > max_bytes:
        return 413, f"text longer than {max_bytes} bytes"
    return None


def iscomposing(state: TypingState) -> bytes:
    """RFC 3994 is-composing document for ``state``."""
    active = "active" if state is TypingState.COMPOSING else "idle"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
        f"<state>{active}</state><contenttype>text/plain</contenttype>"
        "</isComposing>"
    ).encode()


def _stamp(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def imdn(*, from_uri: str, to_uri: str, about: str, status: str, when: float) -> bytes:
    """An RFC 5438 notification (message/cpim) that message ``about`` was ``status``.

    ``status``: "delivered" or "failed" (delivery-notification), "displayed"
    (display-notification).
    """
    kind = "display" if status == "displayed" else "delivery"
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        '<imdn xmlns="urn:ietf:params:xml:ns:imdn">'
        f"<message-id>{_xml(about)}</message-id><datetime>{_stamp(when)}</datetime>"
        f"<{kind}-notification><status><{status}/></status></{kind}-notification></imdn>"
    )
    return (
        f"From: <{from_uri}>\r\nTo: <{to_uri}>\r\nNS: imdn <{IMDN_NS}>\r\n"
        f"imdn.Message-ID: {uuid.uuid4().hex}\r\nDateTime: {_stamp(when)}\r\n\r\n"
        f"Content-Type: {IMDN_XML}\r\nContent-Disposition: notification\r\n\r\n"
        f"{xml}"
    ).encode()


def cpim_text(  # noqa: PLR0913 - keyword-only: one per CPIM header written
    *,
    from_uri: str,
    to_uri: str,
    text: str,
    sent_at: float | None,
    imdn_id: str = "",
    notify: str = "",
    from_name: str = "",
) -> bytes:
    """A text as message/cpim, with the time it was written and an IMDN request.

    ``from_name`` is the sender's display name in ``From:`` (RFC 3862
    Formal-name: a room occupant's nick).
    """
    sender = f"<{from_uri}>"
    if from_name:
        name = from_name.replace("\\", "\\\\").replace('"', '\\"')
        sender = f'"{name}" {sender}'
    lines = [f"From: {sender}", f"To: <{to_uri}>"]
    if sent_at is not None:
        lines.append(f"DateTime: {_stamp(sent_at)}")
    if imdn_id:
        lines += [f"NS: imdn <{IMDN_NS}>", f"imdn.Message-ID: {imdn_id}"]
        if notify:
            lines.append(f"imdn.Disposition-Notification: {notify}")
    return (
        "\r\n".join(lines) + "\r\n\r\nContent-Type: text/plain;charset=UTF-8\r\n\r\n" + text
    ).encode()


def _xml(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
