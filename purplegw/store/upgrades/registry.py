"""The upgrade registry, apart from the package so that upgrades import it without a cycle.

Each ``vNNN_*.py`` module registers its function with ``@upgrade(...)``
when ``purplegw/store/upgrades/__init__.py`` imports it, in number order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from purplegw.store.database import Database, check_identifier


@dataclass(frozen=True)
class Tables:
    """Names of the tables that config may rename (shared with Kamailio)."""

    accounts: str = "purplemap"
    subscribers: str = "subscriber"

    def __post_init__(self) -> None:
        check_identifier(self.accounts)
        check_identifier(self.subscribers)


Upgrade = Callable[[Database, Tables], None]
UPGRADES: list[tuple[str, Upgrade]] = []


def upgrade(description: str) -> Callable[[Upgrade], Upgrade]:
    def register(func: Upgrade) -> Upgrade:
        UPGRADES.append((description, func))
        return func

    return register
