"""Discovery of protocol adapters through the ``purplegw.protocols`` entry points.

Mopidy's extension loader is the model: a broken plugin is recorded with a
status and logged once, it never stops the gateway from starting with the
adapters that do load.  Protocol ids in the account table are resolved here,
aliases included (the original module stored libpurple plugin ids such as
``prpl-jabber``), so every other module deals with canonical names only.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from importlib import metadata

from purplegw.exceptions import AdapterError, UnknownProtocolError
from purplegw.protocols.base import Adapter

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "purplegw.protocols"

# The original module's ext_prot values, kept valid even when the adapter
# that normally declares them failed to load, so that the account table
# stays readable and the error says "xmpp is broken", not "unknown id".
BUNDLED_ALIASES = {"prpl-jabber": "xmpp", "jabber": "xmpp", "gtalk": "xmpp", "prpl-irc": "irc"}


class AdapterStatus(enum.Enum):
    ENABLED = "enabled"
    DISABLED = "disabled"  # [protocols.<name>] enabled = false
    BROKEN = "broken"  # import failed or the entry point is not an Adapter
    ENVIRONMENT_ERROR = "environment_error"  # validate_environment() refused


@dataclass
class AdapterInfo:
    name: str
    status: AdapterStatus
    adapter: Adapter | None = None
    error: str = ""


@dataclass
class AdapterRegistry:
    """The adapters of this process, by canonical name, plus their aliases."""

    infos: dict[str, AdapterInfo] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def canonical(self, protocol_id: str) -> str:
        """Canonical name for a protocol id or alias (any case).

        Known-but-unusable adapters (disabled, broken) still resolve: the
        account table may name them, the account actor reports why it idles.
        """
        key = protocol_id.strip().lower()
        info = self.infos.get(key)
        if info is not None:
            return info.name  # one string per protocol, not one per account row
        if key in self.aliases:
            return self.aliases[key]
        known = ", ".join(self.known_ids(include_aliases=True))
        raise UnknownProtocolError(f"unknown protocol {protocol_id!r}; known ids: {known}")

    def get(self, protocol_id: str) -> Adapter:
        """The usable adapter for ``protocol_id``; ``AdapterError`` if it is not usable."""
        name = self.canonical(protocol_id)
        info = self.infos.get(name)
        if info is None:
            raise AdapterError(f"protocol {name!r} is not installed")
        if info.adapter is None or info.status is not AdapterStatus.ENABLED:
            detail = f": {info.error}" if info.error else ""
            raise AdapterError(f"protocol {info.name!r} is {info.status.value}{detail}")
        return info.adapter

    def known_ids(self, *, include_aliases: bool = False) -> list[str]:
        ids = set(self.infos)
        if include_aliases:
            ids |= set(self.aliases)
        return sorted(ids)

    def enabled(self) -> dict[str, Adapter]:
        return {
            name: info.adapter
            for name, info in self.infos.items()
            if info.status is AdapterStatus.ENABLED and info.adapter is not None
        }


def load_adapters(
    protocols_config: dict[str, dict] | None = None,
    *,
    entry_points: list[metadata.EntryPoint] | None = None,
    check_environment: bool = True,
) -> AdapterRegistry:
    """Load every adapter of the entry-point group; never raises for a bad plugin."""
    protocols_config = protocols_config or {}
    if entry_points is None:
        entry_points = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    registry = AdapterRegistry()
    registry.aliases.update(BUNDLED_ALIASES)
    for ep in sorted(entry_points, key=lambda e: e.name):
        info = _load_one(ep, protocols_config.get(ep.name, {}), check_environment=check_environment)
        registry.infos[info.name] = info
        if info.adapter is not None:
            for alias in info.adapter.aliases:
                registry.aliases.setdefault(alias.lower(), info.name)
    summary = ", ".join(f"{i.name}={i.status.value}" for i in registry.infos.values())
    logger.info("Protocol adapters: %s", summary or "none")
    return registry


def _load_one(ep: metadata.EntryPoint, section: dict, *, check_environment: bool) -> AdapterInfo:
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plugin must not stop the gateway
        logger.exception("Protocol adapter %r failed to import", ep.name)
        return AdapterInfo(ep.name, AdapterStatus.BROKEN, error=f"import failed: {exc}")
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        logger.error("Entry point %r is not a purplegw Adapter subclass: %r", ep.name, cls)
        return AdapterInfo(ep.name, AdapterStatus.BROKEN, error="not an Adapter subclass")
    adapter = cls()
    if getattr(adapter, "name", None) != ep.name:
        logger.error(
            "Adapter name %r does not match its entry point %r",
            getattr(adapter, "name", None),
            ep.name,
        )
        return AdapterInfo(ep.name, AdapterStatus.BROKEN, error="name differs from entry point")
    enabled = section.get("enabled", adapter.get_default_config().get("enabled", True))
    if not enabled:
        return AdapterInfo(ep.name, AdapterStatus.DISABLED, adapter)
    if check_environment:
        try:
            adapter.validate_environment()
        except AdapterError as exc:
            logger.warning("Protocol adapter %r disabled: %s", ep.name, exc)
            return AdapterInfo(ep.name, AdapterStatus.ENVIRONMENT_ERROR, adapter, str(exc))
    return AdapterInfo(ep.name, AdapterStatus.ENABLED, adapter)
