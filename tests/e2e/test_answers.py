"""The final SIP answer tells the truth about the account behind it (real daemon, dummy network)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.kit.gateway import GatewayProcess
from tests.kit.raw_ua import RawUA

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path,
        sip={"trusted": ["127.0.0.1/32"]},
        actors={"queue_limit": 2},
        extra_config="[protocols.dummy]\nenabled = true",
    )
    gw.cli("db", "init")
    for user, ext in (("hung", "hang@dummy"), ("locked", "badpass@dummy"), ("fine", "fine@dummy")):
        gw.cli(
            "accounts", "add", f"{user}@sip.test", ext, "dummy", "--password-stdin", stdin="pw\n"
        )
    gw.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = {a["ext_user"]: a["state"] for a in gw.status()} if _alive(gw) else {}
        if (
            states.get("badpass@dummy") == "bad_credentials"
            and states.get("fine@dummy") == "connected"
        ):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"accounts did not settle: {gw.log_text()}")
    yield gw
    assert gw.stop() == 0, gw.log_text()


def _alive(gw: GatewayProcess) -> bool:
    try:
        gw.status()
    except RuntimeError:
        return False
    return True


def test_connecting_account_queues_then_refuses_when_full(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    answers = [ua.request("MESSAGE", "sip:bob@dummy", "hung@sip.test")[0] for _ in range(3)]
    assert answers == [202, 202, 480]


def test_rejected_credentials_are_403(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, data = ua.request("MESSAGE", "sip:bob@dummy", "locked@sip.test")
    assert status == 403, data


def test_connected_account_is_202_and_unknown_contact_form_404(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    assert ua.request("MESSAGE", "sip:echo@dummy", "fine@sip.test")[0] == 202
    status, data = ua.request("MESSAGE", "sip:nick@irc.example;proto=irc", "fine@sip.test")
    assert status == 404, data
    status, data = ua.request("MESSAGE", "sip:someone@example.org", "stranger@sip.test")
    assert status == 403, data
