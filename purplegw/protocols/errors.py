"""One place where adapter exceptions become SIP outcomes.

The account actor wraps every call into a session with this module, so no
adapter has to know SIP:

=========================  =========================================
raised by the session      outcome
=========================  =========================================
(nothing)                  the caller's success status (default 200)
``NotImplementedError``    501 Not Implemented
``Ignore``                 dropped: ``Outcome.dropped`` (no response)
``SessionError`` subclass  its ``status_hint`` (403, 480, 503, ...)
anything else              500, plus an ERROR log line with traceback
=========================  =========================================

``asyncio.CancelledError`` and other ``BaseException`` pass through:
cancelling is not an adapter failure.

Three ways to use it::

    outcome = outcome_for(exc)                      # pure mapping

    with session_errors("send_message", account="alice") as call:
        await session.send_message(contact, text, mid)
    call.outcome                                    # Outcome(202, "Accepted") or the error's

    @maps_session_errors(success=ACCEPTED)
    async def forward(...): await session.send_message(...)   # returns an Outcome
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, Self

from purplegw.protocols.base import Ignore, SessionError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType

logger = logging.getLogger(__name__)

P = ParamSpec("P")

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
    where = f" for {account}" if account else ""
    logger.error("%s%s failed unexpectedly: %r", what, where, exc, exc_info=exc)
    return Outcome(500, REASONS[500], f"{type(exc).__name__}: {exc}")


class session_errors:  # noqa: N801 - used like a function: ``with session_errors(...)``
    """Context manager: swallow an ``Exception`` from the block and record its ``outcome``."""

    def __init__(
        self, what: str = "session call", *, account: str = "", success: Outcome = OK
    ) -> None:
        self.what = what
        self.account = account
        self.outcome = success

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # success, or BaseException (cancellation) passes through
        self.outcome = outcome_for(exc, what=self.what, account=self.account)
        return True


def maps_session_errors(
    success: Outcome = OK, *, what: str | None = None
) -> Callable[[Callable[P, Awaitable[object]]], Callable[P, Awaitable[Outcome]]]:
    """Decorator for a coroutine function: returns ``success`` or the mapped outcome."""

    def decorate(func: Callable[P, Awaitable[object]]) -> Callable[P, Awaitable[Outcome]]:
        label = what or func.__name__

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Outcome:
            with session_errors(label, success=success) as call:
                await func(*args, **kwargs)
            return call.outcome

        return wrapper

    return decorate
