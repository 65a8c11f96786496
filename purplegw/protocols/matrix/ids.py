"""Matrix user ids <-> the gateway's contact ids (pure functions).

The gateway names contacts of protocols that address ``user@host`` as
``user@host`` (``purplegw.gateway.addressing``): a Matrix contact ``@bob:example.org``
travels as ``bob@example.org`` and its SIP URI is
``sip:bob@example.org;proto=matrix``.  The localpart goes into the SIP URI's
user part %-escaped by ``addressing.contact_uri`` (``/`` -> ``%2F``, ``=``
stays), and comes back unescaped; Matrix localparts (spec "User
Identifiers": ``a-z 0-9 . _ = - / +``, historical ids any printable ASCII
but ``:``) therefore all survive the round trip.  A server name with a port
(``example.org:8448``) cannot be a SIP host with the port kept apart, so
such a contact is written ``@bob:example.org:8448`` in full, %-escaped, as
the SIP user part of any URI with ``;proto=matrix``.

Localparts are lower-cased (the spec has required lower case since 2017; a
Matrix user id compares case-sensitively, but servers fold on registration).
"""

from __future__ import annotations

import re

# Spec appendix "User Identifiers": the historical grammar is printable
# ASCII except ':'; servers must accept those from other servers.
_LOCALPART = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# server_name = hostname [ ":" port ]; hostname = IPv4 / "[" IPv6 "]" / DNS name.
_SERVER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?")
MAX_MXID_LENGTH = 255


def mxid_from_contact(contact: str) -> str:
    """``@local:server`` for ``local@server`` or ``@local:server``; ``ValueError`` if neither."""
    contact = contact.strip()
    if contact.startswith("@") and ":" in contact:
        local, _, server = contact[1:].partition(":")
    else:
        local, at, server = contact.rpartition("@")
        if not at:
            raise ValueError("not a Matrix id")
    local = local.lower()
    if not _LOCALPART.fullmatch(local) or not _SERVER.fullmatch(server):
        raise ValueError("not a Matrix id")
    mxid = f"@{local}:{server.lower()}"
    if len(mxid) > MAX_MXID_LENGTH:
        raise ValueError("Matrix id too long")
    return mxid


def contact_from_mxid(mxid: str) -> str:
    """The gateway's contact id for ``@local:server``: ``local@server``.

    A server name with a port keeps the full ``@local:server:port`` form
    (see the module docstring).
    """
    local, _, server = mxid.removeprefix("@").partition(":")
    if ":" in server and not server.startswith("["):
        return mxid
    return f"{local}@{server}"


def server_name(mxid: str) -> str:
    """The server part of ``@local:server``."""
    return mxid.partition(":")[2]
