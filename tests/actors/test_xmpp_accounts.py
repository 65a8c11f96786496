"""200 XMPP accounts against a real Prosody: isolation and reload diff.

Failure modes: rejected password and a non-existent account (bad
credentials), a TCP connection cut under a logged-in account (dead
connection), and -- on the same shared loop -- dummy accounts whose adapter
raises or hangs in login and send.  The other accounts keep exchanging
messages through Prosody meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from purplegw.actors.state import AccountKey, Outcome
from purplegw.protocols.base import AccountCredentials

from .conftest import Recorder, state_of, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.prosody, pytest.mark.slow]

N = 200


def _xmpp_row(n: int, jid: str, password: str, sip_user: str | None = None) -> AccountCredentials:
    return AccountCredentials(n, sip_user or f"x{n}", jid, "xmpp", password, "xmpp")


def _dummy_row(n: int, ext_user: str) -> AccountCredentials:
    return AccountCredentials(n, f"d{n}", ext_user, "dummy", "pw", "dummy")


@pytest.fixture
def xmpp_users(prosody: Any) -> list[Any]:
    return prosody.create_users(N + 1, prefix="act")


@pytest.fixture
def xmpp_accounts(make_accounts: Any, prosody: Any) -> Iterator[Any]:
    xmpp = {
        "server": prosody.address,
        "ca_file": prosody.ca_file,
        "keepalive": 0,
        "connect_timeout": 20,
        "login_timeout": 40,
    }
    return make_accounts(
        protocols={"xmpp": xmpp, "dummy": {}},
        login_timeout=30,
        send_timeout=20,
        logout_timeout=5,
        shutdown_timeout=30,
        backoff_initial=0.2,
        backoff_max=1.0,
    )


def _stream_id(accounts: Any, sip_user: str) -> str | None:
    session = accounts.directory.get(sip_user, "xmpp").current_session()
    return None if session is None or session.client is None else session.client.stream_id


def _exchange(
    accounts: Any, recorder: Recorder, users: list[Any], senders: list[int], tag: str
) -> None:
    """Each sender i messages the XMPP user of the next sender; all must arrive."""
    futures = []
    for pos, i in enumerate(senders):
        peer = senders[(pos + 1) % len(senders)]
        handle = accounts.directory.get(f"x{i}", "xmpp")
        futures.append(handle.send_message(users[peer].jid, f"{tag} {i}", f"{tag}-{i}"))
    outcomes = [f.get(timeout=60) for f in futures]
    # Written to the stream; Prosody's XEP-0198 ack settles each one later.
    assert outcomes == [Outcome(202, "sent, awaiting the server's acknowledgement")] * len(senders)
    for i in senders:
        wait_for(
            lambda i=i: (
                {"message_id": f"{tag}-{i}", "outcome": Outcome(200, "acknowledged by the server")}
                in [
                    {k: kw[k] for k in ("message_id", "outcome")}
                    for kw in recorder.of("on_send_result", f"x{i}")
                ]
            ),
            timeout=60,
            what=f"server ack of {tag}-{i}",
        )
    for pos, i in enumerate(senders):
        peer = senders[(pos + 1) % len(senders)]
        wait_for(
            lambda peer=peer, i=i: (users[i].jid, f"{tag} {i}") in recorder.messages_to(f"x{peer}"),
            timeout=60,
            what=f"{tag} message from x{i} to x{peer}",
        )


def _online(accounts: Any, sip_users: set[str]) -> bool:
    connected = {e["sip_user"] for e in accounts.status() if e["state"] == "connected"}
    return sip_users <= connected


def test_200_xmpp_accounts_one_failing_each_way(
    xmpp_accounts: Any, xmpp_users: list[Any], recorder: Recorder, network: Any
) -> None:
    accounts = xmpp_accounts
    users = xmpp_users
    rows = [_xmpp_row(i, users[i].jid, users[i].password) for i in range(N)]
    rows[0] = _xmpp_row(0, users[0].jid, "wrong password")  # rejected by Prosody
    rows[1] = _xmpp_row(1, "nobody@localhost", "pw")  # no such account
    rows += [
        _dummy_row(900, "raise@dummy"),
        _dummy_row(901, "hang@dummy"),
        _dummy_row(902, "sendhang@dummy"),
        _dummy_row(903, "sendraise@dummy"),
    ]
    accounts.apply(rows)
    good = list(range(2, N))
    wait_for(
        lambda: _online(accounts, {f"x{i}" for i in good}),
        timeout=120,
        what="198 XMPP accounts online",
    )
    wait_for(lambda: {"sendhang@dummy", "sendraise@dummy"} <= network.online(), timeout=60)
    wait_for(lambda: state_of(accounts, "x0")["state"] == "bad_credentials", timeout=60)
    wait_for(lambda: state_of(accounts, "x1")["state"] == "bad_credentials", timeout=60)

    # Cut one account's TCP connection under it (a dead connection).
    victim = 2
    first_stream = _stream_id(accounts, f"x{victim}")
    session = accounts.directory.get(f"x{victim}", "xmpp").current_session()
    session.context.loop.call_soon_threadsafe(session.client.transport.abort)
    hanging = accounts.directory.get("d902", "dummy").send_message("x@dummy", "x", "h")
    raising = accounts.directory.get("d903", "dummy").send_message("x@dummy", "x", "r")

    others = [i for i in good if i != victim]
    _exchange(accounts, recorder, users, others, "round1")
    wait_for(
        lambda: (
            _stream_id(accounts, f"x{victim}") not in (None, first_stream)
            and state_of(accounts, f"x{victim}")["state"] == "connected"
        ),
        timeout=60,
        what="victim back on a new stream",
    )
    _exchange(accounts, recorder, users, good, "round2")

    assert raising.get(timeout=30).status == 500
    assert hanging.get(timeout=30).status == 504
    states = {e["sip_user"]: e for e in accounts.status()}
    assert "RuntimeError" in states["d900"]["last_error"]
    wait_for(lambda: "timed out" in state_of(accounts, "d901")["last_error"], timeout=90)
    assert network.attempts["hang@dummy"] >= 1
    for i in others:
        assert states[f"x{i}"]["reconnects"] == 0, states[f"x{i}"]
        assert states[f"x{i}"]["state"] == "connected"


def test_reload_among_200_keeps_the_other_streams(
    xmpp_accounts: Any, xmpp_users: list[Any], prosody: Any
) -> None:
    accounts = xmpp_accounts
    users = xmpp_users
    rows = [_xmpp_row(i, users[i].jid, users[i].password) for i in range(N)]
    accounts.apply(rows)
    wait_for(
        lambda: _online(accounts, {f"x{i}" for i in range(N)}),
        timeout=120,
        what="200 XMPP accounts online",
    )
    streams = {i: _stream_id(accounts, f"x{i}") for i in range(N)}
    assert None not in streams.values()
    assert len(set(streams.values())) == N

    changed = prosody.create_user(users[5].jid.split("@")[0], "a new password")
    new_rows = [r for r in rows if r.sip_user not in ("x5", "x7")]
    new_rows.append(_xmpp_row(5, changed.jid, changed.password))
    new_rows.append(_xmpp_row(N, users[N].jid, users[N].password))
    summary = accounts.apply(new_rows)
    assert summary.changed == [AccountKey("x5", "xmpp")]
    assert summary.removed == [AccountKey("x7", "xmpp")]
    assert summary.added == [AccountKey(f"x{N}", "xmpp")]
    assert summary.unchanged == N - 2

    wait_for(lambda: _online(accounts, {"x5", f"x{N}"}), timeout=60, what="changed/added online")
    assert _stream_id(accounts, "x5") != streams[5]
    assert accounts.directory.get("x7", "xmpp") is None
    for i in set(range(N)) - {5, 7}:
        assert _stream_id(accounts, f"x{i}") == streams[i], i
