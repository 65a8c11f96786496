"""XMPP adapter (slixmpp): ``ext_prot`` ``xmpp``, ``prpl-jabber``, ``jabber``, ``gtalk``.

``gtalk`` rows are plain XMPP accounts whose server defaults to
``gtalk_server`` (talk.google.com:5222) unless ``server`` is set.  The
session lives in ``session.py``; the presence table in ``presence_map.py``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import Any

from purplegw.exceptions import AdapterError
from purplegw.protocols import base
from purplegw.protocols.xmpp import errors
from purplegw.protocols.xmpp.jid import jid_module

logger = logging.getLogger(__name__)

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")

_POSITIVE_NUMBERS = ("connect_timeout", "login_timeout")


@functools.cache
def _max_text_bytes() -> int:
    return int(
        base.load_defaults(DEFAULTS_PATH).get("max_text_bytes", errors.DEFAULT_MAX_TEXT_BYTES)
    )


class Adapter(base.Adapter):
    name = "xmpp"
    aliases = ("prpl-jabber", "jabber", "gtalk")
    addresses_user_at_host = True
    has_rooms = True  # XEP-0045 rooms, purplegw/protocols/xmpp/muc.py

    def get_default_config(self) -> dict[str, Any]:
        return base.load_defaults(DEFAULTS_PATH)

    def validate_config(self, section: dict[str, Any]) -> list[str]:
        from purplegw.protocols.xmpp.session import parse_server  # noqa: PLC0415

        problems = []
        for key in ("server", "gtalk_server"):
            try:
                parse_server(str(section.get(key, "") or ""))
            except ValueError:
                problems.append(f"{key}: expected host:port, got {section.get(key)!r}")
        if section.get("allow_plaintext") and section.get("require_tls", True):
            problems.append("allow_plaintext: needs require_tls = false")
        ca_file = section.get("ca_file") or ""
        if ca_file and not Path(ca_file).is_file():
            problems.append(f"ca_file: {ca_file} is not a readable file")
        for key in _POSITIVE_NUMBERS:
            value = section.get(key, 1)
            if not isinstance(value, (int, float)) or value <= 0:
                problems.append(f"{key}: must be a positive number of seconds, got {value!r}")
        keepalive = section.get("keepalive", 0)
        if not isinstance(keepalive, (int, float)) or keepalive < 0:
            problems.append(f"keepalive: must be >= 0 seconds, got {keepalive!r}")
        return problems

    def validate_environment(self) -> None:
        # Found, not imported: a process imports slixmpp when it creates its
        # first session of this protocol (a worker hosting none never does).
        if importlib.util.find_spec("slixmpp") is None:
            raise AdapterError("the XMPP adapter needs slixmpp: no module named 'slixmpp'")

    def create_session(
        self, credentials: base.AccountCredentials, context: base.SessionContext
    ) -> base.Session:
        # Lazy: importing the adapter must not import slixmpp (loader, CLI).
        from purplegw.protocols.xmpp.session import XmppSession  # noqa: PLC0415

        config = self._merged_config(context)
        if config is not context.config:
            context = base.SessionContext(
                loop=context.loop,
                events=context.events,
                config=config,
                proxy=context.proxy,
                shared=context.shared,
                strangers=context.strangers,
            )
        return XmppSession(credentials, context)

    def _merged_config(self, context: base.SessionContext) -> dict[str, Any]:
        """The defaults under the section: one dict per distinct section in the process.

        Sessions only read it; 10,000 accounts of one section would
        otherwise hold 10,000 equal copies (~0.7 KiB each).
        """
        try:
            key = ("xmpp.config", tuple(sorted(context.config.items())))
            hash(key)
        except TypeError:  # a list or table value: not shared, merged per session
            return {**self.get_default_config(), **context.config}
        merged = context.shared.get(key)
        if merged is None:
            merged = context.shared[key] = {**self.get_default_config(), **context.config}
        return merged

    def unsendable(self, text: str) -> tuple[int, str] | None:
        """XML 1.0 forbidden code points -> 488, over ``max_text_bytes`` -> 413 (``errors.py``)."""
        return errors.unsendable(text, _max_text_bytes())

    def contact_error(self, contact: str) -> str | None:
        # RFC 7622 through slixmpp's own JID parser (nodeprep, IDNA, lengths):
        # what it would refuse when the session sends, refused before a
        # SUBSCRIBE keeps anything.  Loaded when a contact is first checked,
        # not at plugin discovery, and without the rest of slixmpp (jid.py).
        parser = jid_module()
        try:
            parser.JID(contact.strip())
        except parser.InvalidJID:
            return "not a valid XMPP address"
        return None

    def normalize_contact(self, contact: str) -> str:
        """Bare JID, lower-cased local part and domain (resource dropped)."""
        bare = contact.strip().partition("/")[0]
        return bare.lower()
