"""One place where adapter exceptions become SIP outcomes.

The account actor (``purplegw.actors.account.AccountCore._execute``) maps
every request it runs on a session (send_message, send_typing,
set_presence, add_contact, remove_contact, answer_authorization) through
``outcome_for``, so no adapter has to know SIP:

=========================  =========================================
raised by the session      outcome
=========================  =========================================
(nothing)                  the caller's success status (default 200)
``NotImplementedError``    501 Not Implemented
``Ignore``                 dropped: ``Outcome.dropped`` (no response)
``SessionError`` subclass  its ``status_hint`` (403, 480, 503, ...)
``TimeoutError``           504 Server Time-out
other ``OSError``          503 (the network failed us, not the adapter)
anything else              500, plus an ERROR log line with traceback
=========================  =========================================

A dropped request is not sent, not retried and not counted; the account
actor still answers its caller 200 (a SIP transaction needs a final
answer), with the reason saying it was dropped.

``asyncio.CancelledError`` and other ``BaseException`` pass through:
cancelling is not an adapter failure.

One pure function, ``outcome_for(exc)``; the actor catches, this decides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from purplegw.protocols.base import Ignore, SessionError

logger = logging.getLogger(__name__)

# RFC 3261 section 21 reason phrases for the statuses adapters hint at.
REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    603: "Decline",
}


@dataclass(frozen=True)
class Outcome:
    """What to answer: ``status`` None means "send nothing" (``Ignore``).

    ``detail`` is the adapter's message, for logs or a Warning header; it
    never goes into the reason phrase (it may name hosts or accounts).
    """

    status: int | None
    reason: str
    detail: str = ""

    @property
    def dropped(self) -> bool:
        return self.status is None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def reason_phrase(status: int) -> str:
    return REASONS.get(status, REASONS.get(status // 100 * 100, "Unknown"))


OK = Outcome(200, "OK")
ACCEPTED = Outcome(202, "Accepted")
DROPPED = Outcome(None, "dropped")


def outcome_for(exc: BaseException, *, what: str = "session call", account: str = "") -> Outcome:
    """Map one exception raised by a session to its outcome (logs unexpected ones)."""
    if isinstance(exc, Ignore):
        return Outcome(None, "dropped", str(exc))
    if isinstance(exc, NotImplementedError):
        return Outcome(501, REASONS[501], str(exc) or f"{what} is not supported by this protocol")
    if isinstance(exc, SessionError):
        status = int(getattr(exc, "status_hint", 500) or 500)
        return Outcome(status, reason_phrase(status), str(exc))
    if isinstance(exc, TimeoutError):
        return Outcome(504, REASONS[504], str(exc) or f"{what} timed out")
    if isinstance(exc, OSError):
        return Outcome(503, REASONS[503], str(exc) or type(exc).__name__)
    where = f" for {account}" if account else ""
    logger.error("%s%s failed unexpectedly: %r", what, where, exc, exc_info=exc)
    return Outcome(500, REASONS[500], f"{type(exc).__name__}: {exc}")
