"""What XMPP can carry, and how SIP failures and XMPP stanza errors map onto each other.

Pure functions, no slixmpp: the SIP side asks ``unsendable`` for every
MESSAGE headed for XMPP before answering 202.

Content (XML 1.0 section 2.2, ``Char``): a stream may carry TAB, LF, CR and
U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF only.  A stanza holding any
other code point is not well-formed XML and the server closes the whole
stream (``not-well-formed``), so such text is refused (SIP 488) instead of
being sent.

Size: Prosody closes a stream whose stanza exceeds ``c2s_stanza_size_limit``
(256 KiB by default) with a stream error, so text is capped by its size
*after* XML escaping (``&`` becomes five bytes), well below that limit.

Stanza error conditions (RFC 6120 8.3.3) for a bounce of a message the SIP
side refused for good, and SIP statuses for stanza errors that come back for
messages we sent (all permanent: the stanza was refused, resending the same
stanza gets the same error).
"""

from __future__ import annotations

import re

# XML 1.0 Char production, complemented: C0 controls but TAB/LF/CR, the
# surrogate block (a lone surrogate in a Python str), U+FFFE and U+FFFF.
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

#: Default of ``max_text_bytes`` (defaults.toml): escaped UTF-8 bytes of a body.
DEFAULT_MAX_TEXT_BYTES = 65536

#: SIP status a gateway passes to ``bounce`` for a refusal by its own policy
#: (strangers, rate limits of a sender): RFC 3261 603 Decline.
POLICY_STATUS = 603

# SIP status -> (condition, error type), RFC 6120 8.3.2 / 8.3.3.
_CONDITION_FOR_STATUS: dict[int, tuple[str, str]] = {
    404: ("item-not-found", "cancel"),
    410: ("recipient-unavailable", "wait"),
    480: ("recipient-unavailable", "wait"),
    403: ("forbidden", "auth"),
    413: ("not-acceptable", "modify"),
    488: ("not-acceptable", "modify"),
    606: ("not-acceptable", "modify"),
    429: ("resource-constraint", "wait"),
    503: ("resource-constraint", "wait"),
    486: ("resource-constraint", "wait"),
    POLICY_STATUS: ("policy-violation", "modify"),
}

# Stanza error condition -> SIP status of the failed message.  None of them
# is 408/480/503, which the SIP side would retry.
_STATUS_FOR_CONDITION: dict[str, int] = {
    "item-not-found": 404,
    "recipient-unavailable": 404,
    "service-unavailable": 404,
    "remote-server-not-found": 404,
    "gone": 410,
    "jid-malformed": 404,
    "forbidden": 403,
    "not-authorized": 403,
    "not-allowed": 403,
    "policy-violation": 403,
    "subscription-required": 403,
    "not-acceptable": 488,
    "bad-request": 400,
    "resource-constraint": 486,
    "remote-server-timeout": 504,
    "internal-server-error": 500,
    "feature-not-implemented": 501,
}


def _describe(char: str) -> str:
    code = ord(char)
    if code < 0x20:
        kind = "control character"
    elif 0xD800 <= code <= 0xDFFF:
        kind = "lone surrogate"
    else:
        kind = "noncharacter"
    return f"{kind} U+{code:04X}"


def escaped_size(text: str) -> int:
    """UTF-8 bytes of ``text`` as slixmpp writes it in a body (``&<>"'`` escaped)."""
    return (
        len(text.encode("utf-8", "surrogatepass"))
        + 4 * text.count("&")
        + 3 * (text.count("<") + text.count(">"))
        + 5 * (text.count('"') + text.count("'"))
    )


def unsendable(text: str, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES) -> tuple[int, str] | None:
    """None if an XMPP stream can carry ``text``, else (488 or 413, short reason)."""
    bad = _NOT_XML_CHAR.search(text)
    if bad is not None:
        return 488, f"XMPP cannot carry the {_describe(bad.group())} (XML 1.0)"
    if escaped_size(text) > max_text_bytes:
        return 413, f"message larger than the {max_text_bytes} bytes XMPP takes"
    return None


def condition_for_status(status: int) -> tuple[str, str]:
    """(stanza error condition, error type) telling an XMPP sender why SIP refused."""
    found = _CONDITION_FOR_STATUS.get(status)
    if found is not None:
        return found
    if 400 <= status < 500:
        return "not-acceptable", "modify"
    return "service-unavailable", "cancel"


def status_for_condition(condition: str) -> int:
    """SIP status of a message the XMPP network answered with a stanza error."""
    return _STATUS_FOR_CONDITION.get(condition, 400)
