"""The accounts' rosters as their sessions last reported them.

Plain state on the presence service's worker (purplegw.gateway.presence):
the buddy list (purplegw.gateway.buddylist) and the watcher information
(purplegw.gateway.winfo) read it.  The adapters report a roster with
``on_roster`` (the whole list, at each login), ``on_roster_item`` and
``on_roster_removed`` (changes after it); purplegw.protocols.base says what
each field means.

Rules:

Rule 1. One roster per (sip_user, protocol): what the account's last login
        reported, changed by the pushes since.  Contacts are keyed by their
        id folded to lower case, as presentities are.
Rule 2. An account that never reported a roster has none (``None``), which
        is not the same as an empty one: the buddy list then falls back to
        the contacts the gateway saw for it.
Rule 3. An account whose row a reload removed (the ``on_account_removed``
        event) loses its roster and is marked gone until it reports again or
        connects, so its contacts leave the user's lists.  A disconnection or
        a logout is no departure: the contacts stay, offline.
Rule 4. Rosters live in memory: every login reports the whole list again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from purplegw.gateway.model import Account
    from purplegw.protocols.base import RosterItem

AccountKey = tuple[str, str]  # (sip_user, protocol)


class Rosters:
    """Rules 1-4; every method runs on the presence service's worker."""

    def __init__(self) -> None:
        self._rosters: dict[AccountKey, dict[str, RosterItem]] = {}
        self._accounts: dict[AccountKey, Account] = {}  # who reported it (ext_user for URIs)
        self._of_user: dict[str, set[AccountKey]] = {}
        self.gone: set[AccountKey] = set()

    def replace(self, account: Account, items: Iterable[RosterItem]) -> None:
        """The whole roster of ``account`` (a login)."""
        key = (account.sip_user, account.protocol)
        self.gone.discard(key)
        self._accounts[key] = account
        self._of_user.setdefault(key[0], set()).add(key)
        self._rosters[key] = {item.contact.lower(): item for item in items}

    def put(self, account: Account, item: RosterItem) -> None:
        """``item`` was added or changed (a push)."""
        key = (account.sip_user, account.protocol)
        self.gone.discard(key)
        self._accounts[key] = account
        self._of_user.setdefault(key[0], set()).add(key)
        self._rosters.setdefault(key, {})[item.contact.lower()] = item

    def remove(self, key: AccountKey, contact: str) -> RosterItem | None:
        """``contact`` left the roster (a push); the item it had, if any."""
        roster = self._rosters.get(key)
        return roster.pop(contact.lower(), None) if roster is not None else None

    def drop(self, key: AccountKey) -> None:
        """The account is gone (Rule 3)."""
        self._rosters.pop(key, None)
        keys = self._of_user.get(key[0], set())
        keys.discard(key)
        if not keys:
            self._of_user.pop(key[0], None)
        self.gone.add(key)

    def back(self, key: AccountKey) -> bool:
        """The account connected again; True if it was gone."""
        if key in self.gone:
            self.gone.discard(key)
            return True
        return False

    def account(self, key: AccountKey) -> Account | None:
        """The account that last reported the roster of ``key``."""
        return self._accounts.get(key)

    def of(self, key: AccountKey) -> dict[str, RosterItem] | None:
        """The roster of ``key`` by folded contact, or None (Rule 2)."""
        return self._rosters.get(key)

    def get(self, sip_user: str, protocol: str, contact: str) -> RosterItem | None:
        roster = self._rosters.get((sip_user, protocol))
        return roster.get(contact.lower()) if roster is not None else None

    def keys_of(self, sip_user: str) -> list[AccountKey]:
        """The accounts of ``sip_user`` that reported a roster."""
        return sorted(self._of_user.get(sip_user, ()))


__all__ = ["AccountKey", "Rosters"]
