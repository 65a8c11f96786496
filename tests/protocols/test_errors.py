"""Session exceptions -> SIP outcomes (purplegw.protocols.errors)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from purplegw.protocols.base import BadCredentialsError, DeliveryError, Ignore, TransientError
from purplegw.protocols.errors import (
    ACCEPTED,
    Outcome,
    maps_session_errors,
    outcome_for,
    session_errors,
)
from purplegw.protocols.xmpp.session import TlsVerificationError


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            NotImplementedError(),
            Outcome(501, "Not Implemented", "send_typing is not supported by this protocol"),
        ),
        (BadCredentialsError("bad pw"), Outcome(403, "Forbidden", "bad pw")),
        (TransientError("down"), Outcome(503, "Service Unavailable", "down")),
        (TlsVerificationError("cert of x"), Outcome(503, "Service Unavailable", "cert of x")),
        (DeliveryError("offline"), Outcome(480, "Temporarily Unavailable", "offline")),
        (DeliveryError("no such user", 404), Outcome(404, "Not Found", "no such user")),
        (DeliveryError("odd", 499), Outcome(499, "Bad Request", "odd")),
        (Ignore("duplicate"), Outcome(None, "dropped", "duplicate")),
    ],
)
def test_mapping(exc, expected):
    assert outcome_for(exc, what="send_typing") == expected


def test_unexpected_exception_is_500_with_a_logged_traceback(caplog):
    def boom():
        raise KeyError("resource")

    with caplog.at_level(logging.ERROR, logger="purplegw.protocols.errors"):
        with session_errors("send_message", account="alice@example.org") as call:
            boom()
    assert call.outcome == Outcome(500, "Server Internal Error", "KeyError: 'resource'")
    (record,) = caplog.records
    assert "send_message for alice@example.org failed unexpectedly" in record.getMessage()
    assert record.exc_info and record.exc_info[0] is KeyError


def test_expected_errors_are_not_logged_as_errors(caplog):
    with caplog.at_level(logging.ERROR), session_errors() as call:
        raise TransientError("server down")
    assert call.outcome.status == 503 and not call.outcome.ok
    assert not caplog.records


def test_decorator_success_drop_and_cancellation():
    @maps_session_errors(success=ACCEPTED)
    async def send(kind: str) -> None:
        if kind == "ignore":
            raise Ignore
        if kind == "cancel":
            raise asyncio.CancelledError
        if kind == "nope":
            raise NotImplementedError

    assert asyncio.run(send("fine")) == ACCEPTED and ACCEPTED.ok
    dropped = asyncio.run(send("ignore"))
    assert dropped.dropped and not dropped.ok
    assert asyncio.run(send("nope")).status == 501
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(send("cancel"))
