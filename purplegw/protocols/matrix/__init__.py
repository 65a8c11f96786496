"""Matrix adapter (matrix-nio): ``ext_prot`` ``matrix``, ``prpl-matrix``.

``ext_user`` is the Matrix user id (``@alice:example.org``); the secret is
the account's password or, written ``token:<access token>``, an access
token.  Contacts travel through the gateway as ``local@server`` (the SIP URI
``sip:bob@example.org;proto=matrix`` names ``@bob:example.org``); the
mapping lives in ``ids.py``, the presence table in ``presence_map.py``, the
session in ``session.py`` (docs/matrix.md).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, ClassVar

from purplegw.exceptions import AdapterError
from purplegw.protocols import base

DEFAULTS_PATH = Path(__file__).with_name("defaults.toml")

_POSITIVE_NUMBERS = (
    "sync_timeout",
    "request_timeout",
    "backoff_initial",
    "backoff_max",
    "reconnect_window",
    "since_interval",
)


# Matrix spec (server-server API, "Size limits"): an event is at most
# 65,536 bytes of canonical JSON.  The envelope a homeserver adds (event and
# room ids, sender, origin_server_ts, hashes, signatures, prev_events...) is
# a few hundred bytes; this much is kept for it.
MAX_EVENT_BYTES = 65536
EVENT_OVERHEAD = 2048


class Adapter(base.Adapter):
    name = "matrix"
    aliases = ("prpl-matrix",)
    addresses_user_at_host: ClassVar[bool] = True

    def unsendable(self, text: str) -> tuple[int, str] | None:
        """NUL -> 488; a body whose event would exceed 65,536 bytes -> 413.

        The Matrix spec caps a whole event (PDU) at 65,536 bytes of JSON;
        the body is measured as JSON (escapes count) plus what the server
        adds around it (ids, signatures, hashes: ``EVENT_OVERHEAD``).
        """
        if "\0" in text:
            return 488, "NUL characters cannot be sent"
        if len(json.dumps(text).encode()) + EVENT_OVERHEAD > MAX_EVENT_BYTES:
            return 413, f"message larger than a Matrix event ({MAX_EVENT_BYTES} bytes)"
        return None

    def get_default_config(self) -> dict[str, Any]:
        return base.load_defaults(DEFAULTS_PATH)

    def validate_config(self, section: dict[str, Any]) -> list[str]:
        problems = []
        homeserver = str(section.get("homeserver", "") or "")
        if homeserver and not homeserver.startswith(("https://", "http://")):
            problems.append(f"homeserver: expected an http(s):// URL, got {homeserver!r}")
        ca_file = section.get("ca_file") or ""
        if ca_file and not Path(ca_file).is_file():
            problems.append(f"ca_file: {ca_file} is not a readable file")
        for key in _POSITIVE_NUMBERS:
            value = section.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                problems.append(f"{key}: must be a positive number of seconds, got {value!r}")
        return problems

    def validate_environment(self) -> None:
        # Found, not imported: a process imports nio when it creates its
        # first session of this protocol (a worker hosting none never does).
        if importlib.util.find_spec("nio") is None:
            raise AdapterError("the Matrix adapter needs matrix-nio: no module named 'nio'")

    def create_session(
        self, credentials: base.AccountCredentials, context: base.SessionContext
    ) -> base.Session:
        # Lazy: importing the adapter must not import nio (loader, CLI).
        from purplegw.protocols.matrix.session import MatrixSession  # noqa: PLC0415

        config = {**self.get_default_config(), **context.config}
        context = base.SessionContext(
            loop=context.loop,
            events=context.events,
            config=config,
            proxy=context.proxy,
            shared=context.shared,
        )
        return MatrixSession(credentials, context)

    def normalize_contact(self, contact: str) -> str:
        """``local@server`` in lower case, from either that form or ``@local:server``."""
        from purplegw.protocols.matrix.ids import contact_from_mxid, mxid_from_contact  # noqa: PLC0415

        try:
            return contact_from_mxid(mxid_from_contact(contact))
        except ValueError:
            return contact.strip().lower()
