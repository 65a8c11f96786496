"""Registrar bindings (RFC 3261 10.3) with a fake clock."""

from __future__ import annotations

from purplegw.sip.parser import parse_datagram
from purplegw.sip.registrar import BindingTable

SOURCE = ("udp", "127.0.0.1", 5099)


def register(
    contacts: list[str], *, expires: int | None = None, call_id: str = "c1", cseq: int = 1
) -> bytes:
    lines = [
        "REGISTER sip:example.org SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK" + f"{call_id}{cseq}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.org>;tag=a",
        "To: <sip:alice@example.org>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *([f"Expires: {expires}"] if expires is not None else []),
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def process(table: BindingTable, raw: bytes, now: float):
    return table.process("alice@example.org", parse_datagram(raw), now, SOURCE)


def test_register_refresh_expire() -> None:
    table = BindingTable(min_expires=60, max_expires=3600, default_expires=600)
    result = process(table, register(["<sip:alice@127.0.0.1:5099>"], expires=120), 1000.0)
    assert (result.status, result.changed) == (200, True)
    assert result.headers == [("Contact", "<sip:alice@127.0.0.1:5099>;expires=120")]
    assert [str(b.contact.uri) for b in table.contacts("alice@example.org", 1100.0)] == [
        "sip:alice@127.0.0.1:5099"
    ]
    refresh = process(table, register(["<sip:alice@127.0.0.1:5099>"], expires=120, cseq=2), 1100.0)
    assert (refresh.status, refresh.changed) == (200, False)
    assert table.contacts("alice@example.org", 1219.0) != []
    assert table.contacts("alice@example.org", 1221.0) == []


def test_two_devices_and_per_contact_expires() -> None:
    table = BindingTable(default_expires=600)
    process(table, register(["<sip:alice@127.0.0.1:5099>;expires=300"]), 0.0)
    process(table, register(["<sip:alice@127.0.0.1:6000>"], call_id="c2"), 0.0)
    assert len(table.contacts("alice@example.org", 299.0)) == 2
    assert len(table.contacts("alice@example.org", 301.0)) == 1
    assert table.expire(601.0)[0].contact.uri.port == 6000


def test_interval_too_brief_and_cap() -> None:
    table = BindingTable(min_expires=60, max_expires=3600)
    result = process(table, register(["<sip:alice@127.0.0.1:5099>"], expires=10), 0.0)
    assert (result.status, result.headers) == (423, [("Min-Expires", "60")])
    result = process(table, register(["<sip:alice@127.0.0.1:5099>"], expires=99999), 0.0)
    assert result.headers == [("Contact", "<sip:alice@127.0.0.1:5099>;expires=3600")]


def test_unregister_one_and_star() -> None:
    table = BindingTable()
    process(table, register(["<sip:a@127.0.0.1:1>", "<sip:a@127.0.0.1:2>"]), 0.0)
    result = process(table, register(["<sip:a@127.0.0.1:1>"], expires=0, cseq=2), 1.0)
    assert result.headers == [("Contact", "<sip:a@127.0.0.1:2>;expires=3599")]
    bad = process(table, register(["*"], expires=5, cseq=3), 2.0)
    assert bad.status == 400
    gone = process(table, register(["*"], expires=0, cseq=4), 2.0)
    assert (gone.status, gone.changed) == (200, True)
    assert table.contacts("alice@example.org", 3.0) == []


def test_out_of_order_cseq_is_refused() -> None:
    table = BindingTable()
    process(table, register(["<sip:a@127.0.0.1:1>"], cseq=5), 0.0)
    result = process(table, register(["<sip:a@127.0.0.1:1>"], cseq=4), 1.0)
    assert result.status == 500
    assert len(table.contacts("alice@example.org", 2.0)) == 1


def test_query_lists_bindings() -> None:
    table = BindingTable()
    process(table, register(["<sip:a@127.0.0.1:1>"], expires=100), 0.0)
    query = process(table, register([], cseq=2), 40.0)
    assert query.headers == [("Contact", "<sip:a@127.0.0.1:1>;expires=60")]
