"""A hostile XHTML-IM message through Prosody: the account survives, the next message arrives.

The sender is an independent slixmpp client; the message is written to the
stream raw because serializing 5,000 nested elements is beyond slixmpp's own
(recursive) serializer.  Before the text walker became iterative this
message raised RecursionError in the gateway's stream handler (in the text
walker, and at DEBUG level in slixmpp's stanza log too), the account lost its
connection and the message was lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.deployment import deployment, phone

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DEPTH = 5_000
IM = "http://jabber.org/protocol/xhtml-im"
XHTML = "http://www.w3.org/1999/xhtml"


@pytest.fixture
def setup(prosody: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield from deployment(prosody, tmp_path, prefix="deep")


def test_deeply_nested_xhtml_keeps_the_account_and_the_next_message(
    setup: dict[str, Any],
) -> None:
    gateway, account, peer = setup["gateway"], setup["account"], setup["peer"]
    before = gateway.status()[0]
    assert before["state"] == "connected"
    with phone(gateway) as agent:
        peer.send_raw(
            f"<message xmlns='jabber:client' to='{account.jid}' type='chat' id='deep-1'>"
            f"<html xmlns='{IM}'><body xmlns='{XHTML}'>"
            + "<span>" * DEPTH
            + "deep ✓"
            + "</span>" * DEPTH
            + "</body></html></message>"
        )
        peer.send_message(account.jid, "after the deep one ✓")

        agent.wait_for(
            lambda e: e["event"] == "im" and e["body"] == "after the deep one ✓", timeout=30
        )
        # The deep message's text was kept, and delivered first (its user's order).
        assert [e["body"] for e in agent.matching(lambda e: e["event"] == "im")] == [
            "deep ✓",
            "after the deep one ✓",
        ], gateway.log_text()

    status = gateway.status()[0]
    assert status["state"] == "connected", status
    assert status["reconnects"] == before["reconnects"], status
    log = gateway.log.read_text(errors="replace")
    assert "RecursionError" not in log
    assert "Traceback" not in log
