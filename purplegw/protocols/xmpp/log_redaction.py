"""Keep credentials out of slixmpp's stanza log.

At DEBUG slixmpp logs every stanza it sends and receives ("SEND: ...",
"RECV: ...").  Some carry credentials: SASL ``<auth>`` (PLAIN is
base64("\\0user\\0password"), tried after SCRAM fails, i.e. exactly when a
password is wrong) and ``<response>`` (a SCRAM proof, enough for an offline
dictionary attack on the password), the server's side of SCRAM: the
``<challenge>`` (salt, iteration count, nonces) and the ``<success>`` (the
server signature, computed from the salted password: with the challenge,
enough to test password guesses offline), SASL2's (XEP-0388)
``<initial-response>`` and ``<additional-data>``, legacy XEP-0078
``<password>`` / ``<digest>``, in-band registration's ``<password>``.  A
filter on slixmpp's stream logger replaces their content before any handler
sees the record.
"""

from __future__ import annotations

import logging
import re

STREAM_LOGGER = "slixmpp.xmlstream.xmlstream"
REDACTED = "(redacted)"

# <auth ...>payload</auth>, also prefixed forms such as <sasl:response>.
_SECRET_TAGS = (
    "auth",
    "response",
    "challenge",
    "success",
    "initial-response",
    "additional-data",
    "password",
    "digest",
)
_SECRET_ELEMENT = re.compile(
    r"(<(?P<tag>(?:[\w.-]+:)?(?:" + "|".join(_SECRET_TAGS) + r"))(?:\s[^>]*)?>)"
    r"[^<]+"
    r"(</(?P=tag)\s*>)"
)


def redact(text: str) -> str:
    return _SECRET_ELEMENT.sub(rf"\1{REDACTED}\3", text)


class CredentialFilter(logging.Filter):
    """Rewrites a record whose formatted message carries a credential element."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except RecursionError:
            # slixmpp's stanza serializer recurses once per nesting level, and
            # logging re-raises RecursionError from a handler: a deeply nested
            # stanza from anyone would otherwise kill the stream it arrived on.
            prefix = str(record.msg).split("%", 1)[0]
            record.msg, record.args = f"{prefix}(stanza nested too deeply to log)", None
            return True
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = CredentialFilter()


def install() -> None:
    """Attach the filter to slixmpp's stream logger (idempotent)."""
    stream_logger = logging.getLogger(STREAM_LOGGER)
    if _FILTER not in stream_logger.filters:
        stream_logger.addFilter(_FILTER)
