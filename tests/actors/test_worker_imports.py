"""What the processes of a daemon with workers import, read from the real processes.

Every interpreter of the test's daemon (the main process and each worker)
writes its ``sys.modules`` to a file when it exits (tests/kit/modules_report.py):
nothing in purplegw is replaced.
Rows are sharded so that one worker hosts an XMPP account (on a port where
nothing listens: its session is created, its login fails) and the other
only ``dummy`` accounts.
"""

from __future__ import annotations

import contextlib
import csv
import subprocess
import time
from typing import TYPE_CHECKING, Any

from purplegw.actors.state import ActorsConfig, shard_of
from tests.kit.gateway import GatewayProcess
from tests.kit.modules_report import ModulesReport, top_level
from tests.kit.ports import free_port

if TYPE_CHECKING:
    from pathlib import Path

ADAPTER_LIBRARIES = ("slixmpp", "nio", "aiohttp")


def _users_for(worker: int, count: int) -> list[str]:
    users = (f"user{i}@sip.test" for i in range(1000))
    return [u for u in users if shard_of(u, 2) == worker][:count]


def _children(pid: int) -> dict[int, str]:
    out = subprocess.run(
        ["ps", "--ppid", str(pid), "-o", "pid=,args="], capture_output=True, text=True, check=False
    ).stdout
    return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in out.splitlines()}


def _libraries(modules: set[str]) -> set[str]:
    return top_level(modules, ADAPTER_LIBRARIES)


def _daemon(tmp_path: Path, xmpp_user: str, dummy_users: list[str]) -> GatewayProcess:
    gateway = GatewayProcess(
        tmp_path,
        actors={"workers": 2},
        extra_config=(
            "[protocols.dummy]\nenabled = true\n"
            f'[protocols.xmpp]\nserver = "127.0.0.1:{free_port("tcp")}"\n'
        ),
        log_level="INFO",
    )
    gateway.cli("db", "init")
    table = tmp_path / "accounts.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sip_user", "ext_user", "ext_prot", "ext_pass"])
        writer.writerow([xmpp_user, "nobody@localhost", "xmpp", "secret"])
        for i, user in enumerate(dummy_users):
            writer.writerow([user, f"user{i}@dummy", "dummy", "secret"])
    gateway.cli("accounts", "import", str(table))
    return gateway


def _wait_started(
    gateway: GatewayProcess, xmpp_user: str, dummy_users: list[str]
) -> dict[str, dict[str, Any]]:
    """The dummy accounts connected, the XMPP account's session created and refused."""
    deadline = time.monotonic() + 60
    while True:
        status: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(RuntimeError):  # control socket not up yet
            status = {a["sip_user"]: a for a in gateway.status()}
        dummies = all(status.get(u, {}).get("state") == "connected" for u in dummy_users)
        if dummies and status.get(xmpp_user, {}).get("last_error"):
            return status
        assert time.monotonic() < deadline, f"not started: {status}\n{gateway.log_text()}"
        time.sleep(0.2)


def test_a_worker_imports_only_the_adapters_of_its_accounts(tmp_path: Path) -> None:
    report = ModulesReport(tmp_path / "modules")
    xmpp_user = _users_for(0, 1)[0]
    dummy_users = _users_for(1, 3)
    gateway = _daemon(tmp_path, xmpp_user, dummy_users)
    gateway.start(env=report.env())
    try:
        status = _wait_started(gateway, xmpp_user, dummy_users)
        assert gateway.process is not None
        main_pid = gateway.process.pid
        children = _children(main_pid)
        # Two workers and nothing else: no multiprocessing resource tracker.
        assert len(children) == 2, children
        assert not [args for args in children.values() if "resource_tracker" in args]
        xmpp_worker = status[xmpp_user]["pid"]
        dummy_worker = status[dummy_users[0]]["pid"]
        assert {xmpp_worker, dummy_worker} == set(children)
    finally:
        assert gateway.stop() == 0
    for pid in children:  # workers exit after the main process's stop command
        deadline = time.monotonic() + 30
        while not (report.reports / str(pid)).exists():
            assert time.monotonic() < deadline, f"worker {pid} wrote no report"
            time.sleep(0.1)
    modules = report.modules()
    assert set(modules) == {main_pid, *children}
    # The worker hosting the XMPP account imported slixmpp for its session...
    assert "purplegw.protocols.xmpp.session" in modules[xmpp_worker]
    assert _libraries(modules[xmpp_worker]) == {"slixmpp"}
    # ...the one hosting only dummy accounts no adapter library at all...
    assert "purplegw.protocols.dummy" in modules[dummy_worker]
    assert _libraries(modules[dummy_worker]) == set()
    # ...and neither the CLI (spawn's re-run of the main module) nor prometheus_client.
    for pid in children:
        assert not {"purplegw.cli", "click", "prometheus_client"} & modules[pid]
    # Each worker set [actors] gc_threshold as the main process does (which
    # restores Python's on its way out: test_process.py checks it).
    thresholds = report.gc_thresholds()
    assert {thresholds[pid] for pid in children} == {ActorsConfig().gc_threshold}
    # The main process hosts no session: no adapter library either.
    assert _libraries(modules[main_pid]) == set()
    assert "purplegw.cli" in modules[main_pid]
