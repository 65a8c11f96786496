"""Worker processes: sharding, events across the pipe, SIGKILL recovery."""

from __future__ import annotations

import logging
import os
import signal
import stat
from typing import TYPE_CHECKING, Any, cast

import pytest

from purplegw import logs
from purplegw.actors.state import ActorsConfig, shard_of
from purplegw.actors.workers import WorkerPool

from .conftest import FAST, Recorder, row, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    workers = WorkerPool(
        ActorsConfig.from_section({**FAST, "workers": 2}), {"dummy": {"enabled": True}}
    )
    yield workers
    workers.stop()


def _connected(pool: WorkerPool) -> dict[str, dict[str, Any]]:
    return {e["sip_user"]: e for e in pool.status() if e["state"] == "connected"}


def _echo(pool: WorkerPool, recorder: Recorder, sip_user: str, text: str) -> None:
    handle = pool.directory.get(sip_user, "dummy")
    assert handle.send_message("echo@dummy", text, text).get(timeout=20).status == 200
    wait_for(lambda: ("echo@dummy", text) in recorder.messages_to(sip_user), what=f"echo {text}")


def test_worker_killed_is_restarted_and_the_others_carry_on(
    pool: WorkerPool, recorder: Recorder
) -> None:
    rows = [row(n) for n in range(12)]
    pool.apply(rows)
    wait_for(lambda: len(_connected(pool)) == 12, what="12 accounts connected")
    status = _connected(pool)
    pids = pool.pids
    assert len(set(pids)) == 2
    for sip_user, entry in status.items():
        assert entry["pid"] == pids[shard_of(sip_user, 2)]
    victims = [r.sip_user for r in rows if shard_of(r.sip_user, 2) == 0]
    survivors = [r.sip_user for r in rows if shard_of(r.sip_user, 2) == 1]
    assert victims
    assert survivors
    for sip_user in status:
        _echo(pool, recorder, sip_user, f"before-{sip_user}")

    os.kill(pids[0], signal.SIGKILL)
    # The other worker's accounts keep exchanging messages meanwhile.
    for round_no in range(3):
        for sip_user in survivors:
            _echo(pool, recorder, sip_user, f"during{round_no}-{sip_user}")
    wait_for(lambda: pool.pids[0] not in (0, pids[0]), what="worker 0 restarted")
    wait_for(lambda: set(victims) <= set(_connected(pool)), what="victims logged in again")
    after = _connected(pool)
    for sip_user in victims:
        assert after[sip_user]["pid"] == pool.pids[0]
        _echo(pool, recorder, sip_user, f"after-{sip_user}")
    for sip_user in survivors:
        assert after[sip_user]["pid"] == pids[1]
        assert after[sip_user]["reconnects"] == 0


def test_reload_across_workers_and_dead_handles(pool: WorkerPool, recorder: Recorder) -> None:
    pool.apply([row(n) for n in range(6)])
    wait_for(lambda: len(_connected(pool)) == 6)
    old = pool.directory.get("sip2", "dummy")
    summary = pool.apply(
        [row(n) for n in range(6) if n not in (2, 4)] + [row(4, password="new"), row(9)]
    )
    assert [k.sip_user for k in summary.removed] == ["sip2"]
    assert [k.sip_user for k in summary.changed] == ["sip4"]
    assert [k.sip_user for k in summary.added] == ["sip9"]
    assert summary.unchanged == 4
    assert pool.directory.get("sip2", "dummy") is None
    assert old.send_message("echo@dummy", "x", "x").get(timeout=20).status == 480
    wait_for(lambda: set(_connected(pool)) == {"sip0", "sip1", "sip3", "sip4", "sip5", "sip9"})
    _echo(pool, recorder, "sip9", "new one")
    # Events name an account by the main process's own AccountInfo, not by
    # an unpickled copy per event (what the gateway keeps would hold each).
    infos = {id(kw["account"]) for kw in recorder.of("on_message", "sip9")}
    assert infos == {id(pool.directory.get("sip9", "dummy").info)}
    entry = next(e for e in pool.status() if e["sip_user"] == "sip4")
    assert entry["state"] == "connected"
    assert entry["ext_user"] == row(4, password="new").ext_user


def test_counters_written_without_an_event_reach_the_main_process(
    pool: WorkerPool, recorder: Recorder
) -> None:
    # A worker pushes the statuses its board marked as written: message
    # counters change with no connection event, and still arrive.
    pool.apply([row(n) for n in range(4)])
    wait_for(lambda: len(_connected(pool)) == 4, what="4 accounts connected")
    for n in range(3):
        _echo(pool, recorder, "sip1", f"count-{n}")

    def counted() -> bool:
        entry = _connected(pool)["sip1"]
        return (entry["messages_out"], entry["messages_in"]) == (3, 3)

    wait_for(counted, what="sip1's counters in the main process")
    for sip_user, entry in _connected(pool).items():
        if sip_user != "sip1":
            assert (entry["messages_out"], entry["messages_in"]) == (0, 0)


def test_status_lists_every_account_while_its_worker_restarts(recorder: Recorder) -> None:
    """From the kill until the new worker took its rows: listed, as worker_restarting."""
    del recorder  # fixture: events of the pool go somewhere
    config = ActorsConfig.from_section({**FAST, "workers": 2, "worker_restart_delay": 1.0})
    pool = WorkerPool(config, {"dummy": {"enabled": True}})
    try:
        rows = [row(n) for n in range(12)]
        pool.apply(rows)
        wait_for(lambda: len(_connected(pool)) == 12, what="12 accounts connected")
        victims = {r.sip_user for r in rows if shard_of(r.sip_user, 2) == 0}
        dead_pid = pool.pids[0]
        os.kill(dead_pid, signal.SIGKILL)
        seen: list[dict[str, tuple[str, int]]] = []

        def back() -> bool:
            now = {e["sip_user"]: (e["state"], e["pid"]) for e in pool.status()}
            seen.append(now)
            return all(now[u][0] == "connected" and now[u][1] not in (0, dead_pid) for u in victims)

        wait_for(back, timeout=30, what="the killed worker's accounts back")
        assert all(set(now) == {r.sip_user for r in rows} for now in seen)
        restarting = [now for now in seen if now[min(victims)][0] == "worker_restarting"]
        assert restarting, "never shown as worker_restarting"
        # Shown with what they last reported: the dead worker's pid.
        assert all(now[u] == ("worker_restarting", dead_pid) for now in restarting for u in victims)
        # The other worker's accounts never stopped being connected.
        assert all(
            state == "connected"
            for now in seen
            for u, (state, _pid) in now.items()
            if u not in victims
        )
    finally:
        pool.stop()


def test_workers_log_to_the_configured_file(tmp_path: Path, recorder: Recorder) -> None:
    """Worker processes write to the 0600 log file in its format, each line marked by worker."""
    del recorder  # the events sink; only the file matters here
    log_file = tmp_path / "purplegw.log"
    section = {
        "level": "INFO",
        "format": "%(levelname)s %(name)s: %(message)s",
        "file": str(log_file),
        "sip_wire": False,
    }
    saved = (logging.getLogger().handlers[:], logging.getLogger().level)
    logs.setup(cast("Any", {"logging": section, "loglevels": {}}))
    try:
        workers = WorkerPool(
            ActorsConfig.from_section({**FAST, "workers": 2}), {"dummy": {"enabled": True}}
        )
        try:
            rows = [row(n) for n in range(6)]
            workers.apply(rows)
            wait_for(lambda: len(_connected(workers)) == 6, what="6 accounts connected")
            pids = workers.pids

            def both_workers_logged() -> bool:
                text = log_file.read_text(encoding="utf-8")
                return all(f"worker{i}[{pid}] INFO " in text for i, pid in enumerate(pids))

            wait_for(both_workers_logged, what="a line from each worker in the file")
        finally:
            workers.stop()
    finally:
        root = logging.getLogger()
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    connected = [
        line for line in log_file.read_text(encoding="utf-8").splitlines() if "CONNECTED" in line
    ]
    assert len(connected) >= 6
    assert all(line.startswith("worker") for line in connected)
