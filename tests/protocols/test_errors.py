"""Session exceptions -> SIP outcomes (purplegw.protocols.errors)."""

from __future__ import annotations

import logging

import pytest

from purplegw.protocols.base import BadCredentialsError, DeliveryError, Ignore, TransientError
from purplegw.protocols.errors import Outcome, outcome_for
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
        (TimeoutError("no answer"), Outcome(504, "Server Time-out", "no answer")),
        (
            ConnectionResetError("reset by peer"),
            Outcome(503, "Service Unavailable", "reset by peer"),
        ),
    ],
)
def test_mapping(exc, expected):
    assert outcome_for(exc, what="send_typing") == expected


def test_unexpected_exception_is_500_with_a_logged_traceback(caplog):
    try:
        {}["resource"]
    except KeyError as exc:
        error = exc
    with caplog.at_level(logging.ERROR, logger="purplegw.protocols.errors"):
        outcome = outcome_for(error, what="send_message", account="alice@example.org")
    assert outcome == Outcome(500, "Server Internal Error", "KeyError: 'resource'")
    assert not outcome.ok
    assert not outcome.dropped
    (record,) = caplog.records
    assert "send_message for alice@example.org failed unexpectedly" in record.getMessage()
    assert record.exc_info
    assert record.exc_info[0] is KeyError


def test_expected_errors_are_not_logged_as_errors(caplog):
    with caplog.at_level(logging.ERROR):
        outcome = outcome_for(TransientError("server down"))
        outcome_for(Ignore())
        outcome_for(NotImplementedError())
    assert outcome.status == 503
    assert not outcome.ok
    assert not caplog.records
