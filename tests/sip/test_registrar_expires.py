"""Contact expires parameters are delta-seconds, not whatever int() takes (found by fuzzing)."""

from __future__ import annotations

import pytest

from purplegw.sip.registrar import BindingTable
from tests.kit.sipmsg import make_request

SOURCE = ("udp", "127.0.0.1", 5070)


@pytest.mark.parametrize("value", ["-30", "+60", "1_000", "\u0663", "0x10", ""])
def test_malformed_expires_parameter_is_400_and_binds_nothing(value: str) -> None:
    table = BindingTable(min_expires=60, max_expires=3600)
    contact = f"<sip:a@127.0.0.1:5070>;expires={value}"
    request = make_request("REGISTER", extra=[("Contact", contact)])
    result = table.process("a@gw", request, 1000.0, SOURCE)
    assert result.status == 400
    assert table.contacts("a@gw", 1000.0) == []


def test_huge_expires_parameter_is_capped() -> None:
    table = BindingTable(min_expires=60, max_expires=3600)
    contact = "<sip:a@127.0.0.1:5070>;expires=99999999999999"
    request = make_request("REGISTER", extra=[("Contact", contact)])
    assert table.process("a@gw", request, 1000.0, SOURCE).status == 200
    (binding,) = table.contacts("a@gw", 1000.0)
    assert binding.expires_at == 1000.0 + 3600
