"""IRC adapter: one nick per account, private messages and nick presence.

Account ids are ``nick@server[:port]`` (see ``account.py`` and docs/irc.md).
Contacts are nicks; SIP addresses them explicitly (``;proto=irc``), so
``addresses_user_at_host`` is False.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar

from purplegw.protocols import base

logger = logging.getLogger(__name__)

_DEFAULTS = Path(__file__).with_name("defaults.toml")
_CHOICES = {
    "auth": ("auto", "sasl", "pass", "nickserv", "none"),
    "presence_method": ("auto", "monitor", "ison"),
}
_POSITIVE = (
    "connect_timeout",
    "ison_interval",
    "keepalive_interval",
    "ctcp_rate_per_sender",
    "ctcp_burst_per_sender",
    "ctcp_rate",
    "ctcp_burst",
)


class Adapter(base.Adapter):
    name: ClassVar[str] = "irc"
    aliases: ClassVar[tuple[str, ...]] = ("prpl-irc",)
    addresses_user_at_host: ClassVar[bool] = False
    has_rooms: ClassVar[bool] = True  # channels (#chan, %23chan in SIP URIs)

    def unsendable(self, text: str) -> tuple[int, str] | None:
        """NUL -> 488, as ``send_message`` decides; everything else is carried.

        ``send_message`` strips other control characters (``text.from_phone``),
        turns CR/LF into line breaks and splits long text over several
        PRIVMSG lines: lossless for what a phone can show, so no size cap.
        """
        if "\0" in text:
            return 488, "NUL is not allowed in IRC messages"
        return None

    def get_default_config(self) -> dict[str, Any]:
        return base.load_defaults(_DEFAULTS)

    def validate_config(self, section: dict[str, Any]) -> list[str]:  # noqa: C901 - one branch per protocol case reads best in one place
        from purplegw.protocols.irc.account import InvalidAccountError, split_host_port  # noqa: PLC0415 - imported when the adapter is validated, not at plugin discovery

        problems: list[str] = []
        known = self.get_default_config()
        for key in section:
            if key not in known:
                problems.append(f"{key}: unknown key (known: {', '.join(sorted(known))})")  # noqa: PERF401 - clearer as a loop with its condition
        for key, choices in _CHOICES.items():
            if key in section and section[key] not in choices:
                problems.append(f"{key}: must be one of {', '.join(choices)}")
        for key in _POSITIVE:
            value = section.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                problems.append(f"{key}: must be a positive number")
        if "tls" in section and not isinstance(section["tls"], bool):
            problems.append("tls: must be true or false")
        if section.get("server"):
            try:
                split_host_port(str(section["server"]), 6697)
            except InvalidAccountError as exc:
                problems.append(f"server: {exc}")
        ca_file = section.get("ca_file")
        if ca_file and not Path(ca_file).is_file():
            problems.append(f"ca_file: {ca_file} is not a file")
        return problems

    def create_session(
        self, credentials: base.AccountCredentials, context: base.SessionContext
    ) -> base.Session:
        from purplegw.protocols.irc.session import IrcSession  # noqa: PLC0415 - imported when the adapter is validated, not at plugin discovery

        merged = {**self.get_default_config(), **context.config}
        return IrcSession(credentials, dataclasses.replace(context, config=merged))

    def normalize_contact(self, contact: str) -> str:
        from purplegw.protocols.irc.protocol import casefold  # noqa: PLC0415 - imported when the adapter is validated, not at plugin discovery

        return casefold(contact.strip())

    def contact_error(self, contact: str) -> str | None:
        # The RFC 2812 grammar with the longest NICKLEN accepted before a
        # server states its own; the session checks the server's NICKLEN.
        from purplegw.protocols.irc.protocol import is_valid_nick  # noqa: PLC0415 - imported when the adapter is validated, not at plugin discovery

        return None if is_valid_nick(contact) else "not a valid IRC nick"
