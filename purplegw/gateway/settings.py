"""The gateway's settings, read from the ``[sip]``, ``[presence]``, ``[messaging]`` and
``[gateway]`` config sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# [presence] authorization: how a contact's request to see the user's presence is answered.
POLICIES = ("ask", "allow_roster", "deny")


@dataclass
class GatewaySettings:
    domain: str = "localhost"
    trusted: list[str] = field(default_factory=list)
    outbound_proxy: str = ""
    auth_algorithms: tuple[str, ...] = ("MD5",)
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    rate_per_user: float = 0.0  # 0: no limit
    burst_per_user: int = 50
    rate_limit_table_size: int = 16384

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> GatewaySettings:
        return cls(
            domain=section.get("domain", "localhost"),
            trusted=list(section.get("trusted", [])),
            outbound_proxy=section.get("outbound_proxy", ""),
            auth_algorithms=tuple(section.get("auth_algorithms") or ["MD5"]),
            rate_per_user=section.get("rate_per_user", 0.0),
            burst_per_user=section.get("burst_per_user", 50),
            rate_limit_table_size=section.get("rate_limit_table_size", 16384),
        )


@dataclass
class PresenceSettings:
    authorization: str = "ask"
    keep_online: bool = False
    publish_min_expires: int = 60
    publish_max_expires: int = 3600
    publish_default_expires: int = 3600
    subscribe_min_expires: int = 60
    subscribe_max_expires: int = 3600
    subscribe_default_expires: int = 3600
    upstream: str = ""
    upstream_expires: int = 3600
    max_publications_per_user: int = 10
    max_subscriptions_per_user: int = 100
    buddy_list_user: str = "{user}-buddies"

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> PresenceSettings:
        known = set(cls.__dataclass_fields__)
        settings = cls(**{k: v for k, v in (section or {}).items() if k in known})
        if settings.authorization not in POLICIES:
            raise ValueError(f"[presence] authorization must be one of {', '.join(POLICIES)}")
        return settings


@dataclass
class MessagingSettings:
    """``[messaging]``: limits and failure handling of the message pipeline."""

    max_text_bytes: int = 65536  # 0: only the network's own limit
    retry_attempts: int = 8  # delivery attempts towards SIP before a dead letter
    retry_max_age: float = 86400.0  # seconds a message may wait for its SIP user
    notify_failures: bool = True  # tell a SIP sender whose accepted message failed
    outbox_max_messages: int = 10000  # per SIP user (0: no limit)
    outbox_max_bytes: int = 20_000_000  # per SIP user (0: no limit)
    sender_rate: float = 0.0  # messages/s per external sender (0: no limit)
    sender_burst: int = 100
    dead_binding_timeouts: int = 2  # consecutive timeouts before a contact is skipped
    strangers: str = "allow"  # applied by the sessions (actors/process.py passes it on)

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> MessagingSettings:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (section or {}).items() if k in known})


@dataclass
class ContactSettings:
    """``[gateway]``: the gateway as a SIP contact (purplegw.gateway.contact_service)."""

    contact_user: str = "gateway"  # sip:gateway@DOMAIN; empty: no such contact
    notify_account_trouble: bool = True  # a MESSAGE when an account needs the user
    trouble_min_interval: float = 3600.0  # seconds between two notices about one account

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> ContactSettings:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (section or {}).items() if k in known})


@dataclass
class GroupChatSettings:
    """``[groupchat]``: rooms (XMPP MUC, IRC channels) for SIP phones (docs/groupchat.md)."""

    nick: str = "{user}"  # {user}: the account's user part, {sip_user}: the SIP user's
    prefix_nick: bool = True  # "nick: text" in the text a phone shows
    history: int = 20  # messages of backlog asked for on a first join
    room_rate: float = 5.0  # messages/s one room may send one SIP user (0: no limit)
    room_burst: int = 30

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> GroupChatSettings:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (section or {}).items() if k in known})
