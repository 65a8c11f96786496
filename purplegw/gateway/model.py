"""The records the gateway's rules work with: one shape per use.

- ``Account``: which account of which SIP user, on which network, under which
  external id.  What addressing, events and handles all carry; the account
  events' ``AccountInfo`` (purplegw.actors.listener) and the table's
  ``AccountCredentials`` (purplegw.protocols.base) both have this shape, so
  the rules never build a password-less credentials row to ask a question.
- ``AccountRef``: an ``Account`` the gateway makes itself (from an outbox row).
- ``Presence``/``ContactPresence``/``Status``: the protocol-neutral presence
  model.  It is defined in purplegw.presence because the SIP PIDF mapping
  (purplegw.sip.presence) and every adapter (purplegw.protocols) speak it
  too, and those layers sit below the gateway: defining it here would make
  sip/ import gateway/, which imports sip/.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from purplegw.presence import ContactPresence, Presence, Status


class Account(Protocol):
    @property
    def account_id(self) -> int: ...

    @property
    def sip_user(self) -> str: ...

    @property
    def protocol(self) -> str: ...

    @property
    def ext_user(self) -> str: ...


class AccountRef(NamedTuple):
    """An ``Account`` built by the gateway (same field order as the events' AccountInfo)."""

    account_id: int
    sip_user: str
    protocol: str
    ext_user: str


__all__ = ["Account", "AccountRef", "ContactPresence", "Presence", "Status"]
