"""The sipp scenarios and the Kamailio launcher against a stock Kamailio.

This keeps the benchmark's reference side honest: the same MESSAGE scenario
the front is measured with passes against Kamailio's sl_send_reply, and the
launcher brings Kamailio up and down on a free port.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.kit.binaries import missing_peer
from tests.kit.kamailio import Kamailio, require_kamailio
from tests.kit.sipp import run_sipp, sipp_binary

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kamailio() -> Iterator[Kamailio]:
    require_kamailio()
    if sipp_binary() is None:
        missing_peer("sipp", "sip-tester")
    with Kamailio((ROOT / "bench" / "kamailio" / "sl_reply.cfg").read_text()) as kam:
        yield kam


def test_message_scenario_passes_against_kamailio(kamailio):
    result = run_sipp(
        ROOT / "tests" / "e2e" / "scenarios" / "message.xml",
        "127.0.0.1",
        kamailio.port,
        calls=50,
        rate=100,
        timeout=20,
        trace_rtt=True,
    )
    assert result.returncode == 0, result.describe()
    assert result.successful == 50
    assert len(result.response_times_ms) == 50


def test_scenario_fails_when_the_answer_is_wrong(kamailio):
    # Kamailio answers 200, the scenario wants 404: sipp must report the failure
    result = run_sipp(
        ROOT / "tests" / "e2e" / "scenarios" / "message_404.xml",
        "127.0.0.1",
        kamailio.port,
        calls=1,
        timeout=15,
    )
    assert result.returncode != 0
    assert result.failed == 1


def test_launcher_stops_kamailio(tmp_path):
    require_kamailio()
    kam = Kamailio((ROOT / "bench" / "kamailio" / "sl_reply.cfg").read_text()).start()
    proc = kam.proc
    kam.stop()
    assert proc is not None
    assert proc.poll() is not None
