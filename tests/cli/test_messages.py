"""`purplegw messages failed|retry|drop`, run as an operator runs it, on SQLite and MariaDB."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from purplegw.actors.control import ControlServer
from purplegw.config import load_config
from purplegw.store import Store, open_store
from purplegw.store.dead_letters import Direction
from tests.cli.test_cli import config, purplegw  # noqa: F401 - the parametrized config fixture

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ALICE = "alice@sip.test"


@pytest.fixture
def store(config: Path) -> Iterator[Store]:  # noqa: F811 - uses the imported fixture
    """The same store the CLI opens, with two failed messages of each direction."""
    opened = open_store(load_config(config, environ={}))
    letters = opened.dead_letters
    letters.add(
        direction=Direction.TO_NETWORK,
        sip_user=ALICE,
        protocol="xmpp",
        contact="bob@jabber.example",
        body="héllo \x1b[31m red",
        message_id="m-1",
        status=488,
        reason="Not Acceptable Here: U+001B cannot go over XMPP",
        attempts=1,
    )
    letters.add(
        direction=Direction.TO_SIP,
        sip_user=ALICE,
        protocol="xmpp",
        account_id=1,
        contact="bob@jabber.example",
        body="x" * 200,
        status=413,
        reason="Request Entity Too Large",
        attempts=1,
    )
    letters.add(
        direction=Direction.TO_SIP,
        sip_user="zed@sip.test",
        protocol="irc",
        account_id=2,
        contact="nick",
        body="for zed",
        status=480,
        reason="Temporarily Unavailable",
        attempts=12,
    )
    yield opened
    opened.close()


@pytest.mark.usefixtures("store")
def test_failed_lists_with_reason_and_filters(config: Path) -> None:  # noqa: F811
    listed = purplegw(config, "messages", "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["direction"], r["sip_user"], r["status"]) for r in rows] == [
        (1, "to_network", ALICE, 488),
        (2, "to_sip", ALICE, 413),
        (3, "to_sip", "zed@sip.test", 480),
    ]
    assert rows[0]["body"] == "héllo \x1b[31m red"
    assert rows[0]["reason"] == "Not Acceptable Here: U+001B cannot go over XMPP"
    assert rows[0]["message_id"] == "m-1"
    assert rows[2]["attempts"] == 12

    mine = json.loads(purplegw(config, "messages", "failed", "--json", "--user", ALICE).stdout)
    assert [r["id"] for r in mine] == [1, 2]
    incoming = json.loads(
        purplegw(config, "messages", "failed", "--json", "--direction", "to_sip").stdout
    )
    assert [r["id"] for r in incoming] == [2, 3]

    table = purplegw(config, "messages", "failed")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "DIRECTION", "SIP"]
    assert "488 Not Acceptable Here" in lines[1]
    assert "\x1b" not in table.stdout  # a terminal escape in a message is not played back
    assert "x" * 39 + "\u2026" in lines[2]
    assert len(lines) == 4


def test_retry_puts_each_direction_back_and_only_once(config: Path, store: Store) -> None:  # noqa: F811
    retried = purplegw(config, "messages", "retry", "1")
    assert retried.returncode == 0, retried.stderr
    assert "back in the send queue" in retried.stdout
    assert "not running" in retried.stdout
    assert [(p.message_id, p.body) for p in store.sendq.pending()] == [
        ("m-1", "héllo \x1b[31m red")
    ]

    assert purplegw(config, "messages", "retry", "2").returncode == 0
    assert [(m.sip_user, m.body, m.attempts) for m in store.outbox.pending()] == [
        (ALICE, b"x" * 200, 0)
    ]

    again = purplegw(config, "messages", "retry", "1")
    assert again.returncode == 1
    assert "no failed message with id 1" in again.stderr
    assert len(store.sendq.pending()) == 1
    assert [d.id for d in store.dead_letters.list()] == [3]


def test_retry_tells_a_running_gateway(config: Path, store: Store) -> None:  # noqa: F811
    told: list[int] = []
    socket_path = load_config(config, environ={}).control_socket
    server = ControlServer(socket_path, {"messages.requeued": lambda: told.append(1) or True})
    server.start()
    try:
        retried = purplegw(config, "messages", "retry", "3")
    finally:
        server.stop()
    assert retried.returncode == 0, retried.stderr
    assert "the running gateway was told" in retried.stdout
    assert told == [1]
    assert [m.contact for m in store.outbox.pending("zed@sip.test")] == ["nick"]

    # A gateway without the command: the row is queued all the same.
    server = ControlServer(socket_path, {"status": list})
    server.start()
    try:
        older = purplegw(config, "messages", "retry", "2")
    finally:
        server.stop()
    assert older.returncode == 0, older.stderr
    assert "next delivery attempt" in older.stdout
    assert len(store.outbox.pending()) == 2


def test_drop(config: Path, store: Store) -> None:  # noqa: F811
    dropped = purplegw(config, "messages", "drop", "2")
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout.strip() == "dropped message 2"
    gone = purplegw(config, "messages", "drop", "2")
    assert gone.returncode == 1
    assert "no failed message with id 2" in gone.stderr
    assert [d.id for d in store.dead_letters.list()] == [1, 3]
    assert store.outbox.pending() == []
    assert purplegw(config, "messages", "drop", "x").returncode == 2  # click: bad usage
