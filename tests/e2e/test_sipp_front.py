"""sipp (an independent SIP implementation) against the running SIP front, over UDP and TCP.

sipp exits 0 only when every call of its scenario passed; the tests assert on
that exit code and on sipp's statistics, and on what the router saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from purplegw.actors.front.front import SipFront, StaticRouter
from tests.kit.binaries import missing_peer
from tests.kit.sipp import SippResult, run_sipp, sipp_binary

if TYPE_CHECKING:
    from collections.abc import Iterator

SCENARIOS = Path(__file__).parent / "scenarios"
TRANSPORTS = ["udp", "tcp"]


@pytest.fixture(scope="module")
def router() -> StaticRouter:
    return StaticRouter(users={"alice"})


@pytest.fixture(scope="module")
def front(router: StaticRouter) -> Iterator[SipFront]:
    if sipp_binary() is None:
        missing_peer("sipp", "sip-tester")
    with SipFront({"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]}, router) as f:
        yield f


def sipp(front: SipFront, scenario: str, transport: str, **kwargs) -> SippResult:
    port = next(lst.port for lst in front.listeners if lst.transport == transport)
    return run_sipp(
        SCENARIOS / f"{scenario}.xml", "127.0.0.1", port, transport=transport, timeout=20, **kwargs
    )


def assert_passed(result: SippResult, calls: int = 1) -> None:
    assert result.returncode == 0, result.describe()
    assert result.successful == calls, result.describe()
    assert result.failed == 0, result.describe()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_message_to_known_user_is_accepted(front, router, transport):
    before = len(router.received)
    result = sipp(front, "message", transport, service="alice")
    assert_passed(result)
    assert result.retransmissions == 0
    got = router.received[before:]
    assert [r.method for r in got] == ["MESSAGE"]
    assert got[0].body.startswith(b"hello")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_message_to_unknown_user_is_404(front, transport):
    assert_passed(sipp(front, "message_404", transport, service="nobody"))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_lists_capabilities(front, transport):
    assert_passed(sipp(front, "options", transport))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_subscribe_gets_202_and_notify_then_unsubscribe(front, router, transport):
    before = len(router.notify_results)
    assert_passed(sipp(front, "subscribe", transport, service="alice"))
    # sipp answered both NOTIFYs with 200; our client transactions saw it
    notifies = router.notify_results[before:]
    assert len(notifies) == 2
    assert [f.result(10).status for f in notifies] == [200, 200]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_many_messages_each_delivered_once(front, router, transport):
    before = len(router.received)
    calls = 300
    result = sipp(
        front, "message", transport, service="alice", calls=calls, rate=300, max_concurrent=50
    )
    assert_passed(result, calls)
    call_ids = [r.call_id for r in router.received[before:]]
    assert len(call_ids) == calls
    assert len(set(call_ids)) == calls  # no duplicate deliveries
