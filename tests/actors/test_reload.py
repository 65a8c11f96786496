"""Reload diff: only rows that were added, removed or changed are touched."""

from __future__ import annotations

from typing import Any

from purplegw.actors.state import AccountKey

from .conftest import row, state_of, wait_for


def test_reload_touches_only_changed_rows(make_accounts: Any, network: Any) -> None:
    accounts = make_accounts()
    rows = [row(n) for n in range(20)] + [row(50, password="wrong")]
    accounts.apply(rows)
    wait_for(lambda: len(network.online()) == 20, what="20 online")
    wait_for(lambda: state_of(accounts, "sip50").get("state") == "bad_credentials")
    sessions = {n: id(network.session(f"user{n}@dummy")) for n in range(20)}
    handles = {n: accounts.directory.get(f"sip{n}", "dummy") for n in range(20)}

    new_rows = [row(n) for n in range(20) if n not in (3, 4, 5)]
    new_rows.append(row(5, password="changed"))  # same row, new password
    new_rows.append(row(21))  # added
    new_rows.append(row(50, password="fixed"))  # bad credentials corrected
    summary = accounts.apply(new_rows)
    assert sorted(summary.added) == [AccountKey("sip21", "dummy")]
    assert sorted(summary.removed) == [AccountKey("sip3", "dummy"), AccountKey("sip4", "dummy")]
    assert sorted(summary.changed) == [AccountKey("sip5", "dummy"), AccountKey("sip50", "dummy")]
    assert summary.unchanged == 17

    wait_for(lambda: {"user21@dummy", "user50@dummy", "user5@dummy"} <= network.online())
    assert "user3@dummy" not in network.online()
    assert accounts.directory.get("sip3", "dummy") is None
    # the changed account has a new session; every other one kept its own
    assert id(network.session("user5@dummy")) != sessions[5]
    for n in set(range(20)) - {3, 4, 5}:
        assert id(network.session(f"user{n}@dummy")) == sessions[n], n
        assert network.logins[f"user{n}@dummy"] == 1
        assert accounts.directory.get(f"sip{n}", "dummy") is handles[n]
    assert network.logins["user5@dummy"] == 2
    assert state_of(accounts, "sip50")["state"] == "connected"


def test_reload_with_the_same_rows_changes_nothing(make_accounts: Any, network: Any) -> None:
    accounts = make_accounts()
    accounts.apply([row(n) for n in range(5)])
    wait_for(lambda: len(network.online()) == 5)
    summary = accounts.apply([row(n) for n in range(5)])
    assert (summary.added, summary.removed, summary.changed, summary.unchanged) == ([], [], [], 5)
    assert all(count == 1 for count in network.logins.values())


def test_removed_account_logs_out_and_answers_480(make_accounts: Any, network: Any) -> None:
    accounts = make_accounts()
    accounts.apply([row(1), row(2)])
    wait_for(lambda: len(network.online()) == 2)
    old = accounts.directory.get("sip1", "dummy")
    accounts.apply([row(2)])
    assert network.online() == {"user2@dummy"}
    assert old.send_message("user2@dummy", "late", "m").get(timeout=10).status == 480
    assert [e["sip_user"] for e in accounts.status()] == ["sip2"]
