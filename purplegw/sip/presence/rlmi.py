"""RFC 4662 resource list notifications: an RLMI document and its multipart/related body.

Sans-IO and pure: callers give the list's state, these functions give bytes.

    content_type, body = list_notification(
        "sip:alice-buddies@sip.test", version=0, full_state=True,
        resources=[ResourceState("sip:bob@example.org;proto=xmpp", "bob", "active", pidf)],
        boundary="b1c2...", cid_domain="sip.test")

Rules (RFC 4662 section 5):

1. The body is ``multipart/related`` (RFC 2387) whose root -- named by the
   ``start`` parameter and first in the body -- is the RLMI document
   (``application/rlmi+xml``, namespace ``urn:ietf:params:xml:ns:rlmi``).
2. ``<list uri version fullState>``: ``version`` starts at 0 and grows by one
   per notification of the subscription (5.2); ``fullState="true"`` lists every
   resource, ``"false"`` only those that changed (5.3).
3. One ``<resource uri>`` per resource, its optional ``<name>``, and one
   ``<instance id state>`` per subscription to it: ``active`` instances carry
   ``cid`` naming the body part (RFC 2392 ``Content-ID``) with the resource's
   state; ``pending`` have none; ``terminated`` carry ``reason`` (5.4).
   Instance ids are stable for a resource, so a watcher can match changes.
4. Every part says ``Content-Transfer-Encoding: binary`` and its own
   Content-Type; the boundary must occur in no part (RFC 2046 5.1.1): a
   boundary that does is refused (``ValueError``) rather than sent broken.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from purplegw.sip.presence.pidf import CONTENT_TYPE_PIDF

__all__ = [
    "CONTENT_TYPE_RLMI",
    "NS_RLMI",
    "ResourceState",
    "instance_id",
    "list_notification",
    "multipart_related",
    "rlmi_document",
]

NS_RLMI = "urn:ietf:params:xml:ns:rlmi"
CONTENT_TYPE_RLMI = "application/rlmi+xml"

ET.register_namespace("", NS_RLMI)


@dataclass(frozen=True)
class ResourceState:
    """One list member as the notifier sees it."""

    uri: str
    name: str | None
    state: str  # "active", "pending" or "terminated" (RFC 4662 5.4)
    body: bytes = b""  # the resource's own document (active only)
    content_type: str = CONTENT_TYPE_PIDF
    reason: str | None = None  # terminated only


def instance_id(uri: str) -> str:
    """A stable instance id for ``uri`` (the same in every notification, Rule 3)."""
    return hashlib.sha256(uri.encode()).hexdigest()[:12]


def _cid(uri: str, version: int, domain: str) -> str:
    return f"{instance_id(uri)}.{version}@{domain}"


def rlmi_document(
    list_uri: str,
    version: int,
    *,
    full_state: bool,
    resources: list[ResourceState],
    cid_domain: str,
) -> bytes:
    """The RLMI document (Rules 2, 3); active resources name parts by ``cid``."""
    root = ET.Element(
        f"{{{NS_RLMI}}}list",
        {"uri": list_uri, "version": str(version), "fullState": "true" if full_state else "false"},
    )
    for resource in resources:
        element = ET.SubElement(root, f"{{{NS_RLMI}}}resource", {"uri": resource.uri})
        if resource.name:
            ET.SubElement(element, f"{{{NS_RLMI}}}name").text = resource.name
        attributes = {"id": instance_id(resource.uri), "state": resource.state}
        if resource.state == "active" and resource.body:
            attributes["cid"] = _cid(resource.uri, version, cid_domain)
        if resource.state == "terminated" and resource.reason:
            attributes["reason"] = resource.reason
        ET.SubElement(element, f"{{{NS_RLMI}}}instance", attributes)
    return bytes(ET.tostring(root, encoding="UTF-8", xml_declaration=True))


def multipart_related(
    parts: list[tuple[str, str, bytes]], *, boundary: str, root_type: str
) -> tuple[str, bytes]:
    """``(content_type, body)`` of ``parts`` ``(content_id, content_type, body)``, root first."""
    marker = f"--{boundary}".encode()
    chunks: list[bytes] = []
    for content_id, content_type, body in parts:
        if marker in body:
            raise ValueError("the multipart boundary occurs in a part")
        chunks.append(
            marker
            + b"\r\n"
            + b"Content-Transfer-Encoding: binary\r\n"
            + f"Content-ID: <{content_id}>\r\n".encode()
            + f'Content-Type: {content_type};charset="UTF-8"\r\n\r\n'.encode()
            + body
            + b"\r\n"
        )
    chunks.append(marker + b"--\r\n")
    content_type = (
        f'multipart/related;type="{root_type}";start="<{parts[0][0]}>";boundary="{boundary}"'
    )
    return content_type, b"".join(chunks)


def list_notification(  # noqa: PLR0913 - the list's whole state, all keyword
    list_uri: str,
    *,
    version: int,
    full_state: bool,
    resources: list[ResourceState],
    boundary: str,
    cid_domain: str,
) -> tuple[str, bytes]:
    """``(content_type, body)`` of one NOTIFY of a resource list (Rules 1-4)."""
    document = rlmi_document(
        list_uri, version, full_state=full_state, resources=resources, cid_domain=cid_domain
    )
    parts = [(f"list.{version}@{cid_domain}", CONTENT_TYPE_RLMI, document)]
    parts += [
        (_cid(r.uri, version, cid_domain), r.content_type, r.body)
        for r in resources
        if r.state == "active" and r.body
    ]
    return multipart_related(parts, boundary=boundary, root_type=CONTENT_TYPE_RLMI)
