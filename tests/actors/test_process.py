"""The daemon as a subprocess: status socket, SIGHUP reload, SIGUSR1, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from purplegw.actors.control import ControlError, call
from purplegw.actors.process import EXIT_ALREADY_RUNNING, query_status, send_reload

from .conftest import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

DAEMON = Path(__file__).with_name("daemon_main.py")
ROOT = Path(__file__).resolve().parents[2]


def _rows(spec: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "account_id": sum(map(ord, sip_user)),
            "sip_user": sip_user,
            "ext_user": f"{sip_user}@dummy",
            "protocol": "dummy",
            "password": password,
            "original_protocol": "dummy",
        }
        for sip_user, password in sorted(spec.items())
    ]


class Daemon:
    def __init__(self, state_dir: Path, workers: int) -> None:
        self.dir = state_dir
        self.log = state_dir / "daemon.log"
        self.socket = state_dir / "control.sock"
        self.pidfile = state_dir / "purplegw.pid"
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def write_rows(self, spec: dict[str, str]) -> None:
        tmp = self.dir / "rows.tmp"
        tmp.write_text(json.dumps(_rows(spec)))
        tmp.replace(self.dir / "rows.json")

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, str(DAEMON), str(self.dir), str(self.workers)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def status(self) -> dict[str, dict[str, Any]]:
        try:
            return {e["sip_user"]: e for e in query_status(self.socket, timeout=10)}
        except ControlError:
            return {}

    def connected(self) -> set[str]:
        return {u for u, e in self.status().items() if e["state"] == "connected"}


@pytest.fixture(params=[0, 2], ids=["in-process", "2-workers"])
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    # Unix socket paths are limited to ~100 bytes: keep the directory short.
    state_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"pgw-{os.getpid()}-{request.param}"
    state_dir.mkdir(exist_ok=True)
    d = Daemon(state_dir, request.param)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait(10)
    for path in state_dir.iterdir():
        path.unlink()
    state_dir.rmdir()


def test_daemon_status_reload_and_clean_stop(daemon: Daemon) -> None:
    daemon.write_rows({f"u{n}": "pw" for n in range(6)} | {"bad": "wrong"})
    daemon.proc = daemon.start()
    wait_for(
        lambda: daemon.connected() == {f"u{n}" for n in range(6)},
        timeout=60,
        what=f"daemon accounts online; log:\n{daemon.log}",
    )
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert int(daemon.pidfile.read_text()) == daemon.proc.pid
    before = daemon.status()
    assert before["bad"]["state"] == "bad_credentials"

    # A second daemon on the same pid file refuses to start.
    second = daemon.start()
    assert second.wait(60) == EXIT_ALREADY_RUNNING

    # SIGHUP: u0 removed, u1 changed, bad fixed, u9 added; the rest untouched.
    daemon.write_rows({f"u{n}": "pw" for n in range(2, 6)} | {"u1": "new", "bad": "ok", "u9": "pw"})
    assert send_reload(daemon.pidfile) == daemon.proc.pid
    expected = {"u1", "u2", "u3", "u4", "u5", "u9", "bad"}
    wait_for(
        lambda: daemon.connected() == expected and "u0" not in daemon.status(),
        timeout=60,
        what="reload applied",
    )
    after = daemon.status()
    for sip_user in ("u2", "u3", "u4", "u5"):
        # same connection: no state change since it first connected
        assert after[sip_user]["since"] == before[sip_user]["since"]
        assert after[sip_user]["pid"] == before[sip_user]["pid"]
    assert after["u1"]["since"] > before["u1"]["since"]
    assert call(daemon.socket, "reload")["unchanged"] == 7

    daemon.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "Current state of MainThread" in daemon.log.read_text(), what="tracebacks")

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(60) == 0
    log = daemon.log.read_text()
    for sip_user in expected:
        assert f"Account {sip_user}/dummy ({sip_user}@dummy): LOGGED_OUT" in log
    assert not daemon.pidfile.exists()
    assert not daemon.socket.exists()
    with pytest.raises(ControlError):
        send_reload(daemon.pidfile)


def test_proxy_section_to_settings() -> None:
    from purplegw.actors.process import proxy_settings
    from purplegw.protocols.base import ProxySettings

    assert proxy_settings({"http_host": "", "http_port": 0}) is None
    assert proxy_settings({"http_host": "127.0.0.1", "http_port": 0}) is None
    assert proxy_settings(None) is None
    assert proxy_settings(
        {"http_host": "127.0.0.1", "http_port": 8888, "username": "u", "password": "p"}
    ) == ProxySettings("127.0.0.1", 8888, "u", "p")
    assert proxy_settings({"http_host": "127.0.0.1", "http_port": 8888, "username": ""}) == (
        ProxySettings("127.0.0.1", 8888)
    )


def test_bad_actors_section_exits_16() -> None:
    from purplegw.actors.process import EXIT_STARTUP_FAILED, run

    assert run({"actors": {"workers": -1}}, list) == EXIT_STARTUP_FAILED


def test_run_in_process_orders_services_around_the_accounts(network: Any) -> None:
    from purplegw.actors import listener
    from purplegw.actors.process import EXIT_OK, run
    from purplegw.protocols.base import AccountCredentials

    journal: list[str] = []

    class Sink(listener.EventSink):
        def on_connection_state(self, account: Any, state: Any, reason: str) -> None:
            journal.append(f"{account.sip_user}:{state.name}")

    sink = Sink()

    def service(runtime: Any) -> Any:
        journal.append("service started")
        listener.add_sink(sink)

        def stop() -> None:
            listener.remove_sink(sink)
            journal.append("service stopped")

        return stop

    def ready(runtime: Any) -> None:
        wait_for(lambda: "alice@dummy" in network.online())
        handle = runtime.directory.get("alice", "dummy")
        assert handle.send_message("echo@dummy", "hi", "m1").get(timeout=10).status == 200
        os.kill(os.getpid(), signal.SIGTERM)

    rows = [AccountCredentials(1, "alice", "alice@dummy", "dummy", "pw", "dummy")]
    code = run(
        {"actors": {"shutdown_timeout": 10}, "protocols": {"dummy": {"enabled": True}}},
        lambda: rows,
        services=[service],
        ready=ready,
    )
    assert code == EXIT_OK
    assert journal[0] == "service started"
    assert journal[-2:] == ["alice:LOGGED_OUT", "service stopped"]
    assert "alice:CONNECTED" in journal


@pytest.mark.parametrize(("configured", "expected"), [(None, 50_000), (12_345, 12_345), (0, 700)])
def test_run_sets_the_gc_threshold_and_restores_it(configured: int | None, expected: int) -> None:
    import gc

    from purplegw.actors.process import EXIT_OK, run

    seen: list[int] = []

    def ready(runtime: Any) -> None:
        seen.append(gc.get_threshold()[0])
        os.kill(os.getpid(), signal.SIGTERM)

    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])  # Python's default, whatever ran before
    try:
        actors = {} if configured is None else {"gc_threshold": configured}
        assert (
            run({"actors": actors, "protocols": {"dummy": {"enabled": True}}}, list, ready=ready)
            == EXIT_OK
        )
        assert seen == [expected]
        assert gc.get_threshold()[0] == 700
    finally:
        gc.set_threshold(*before)


def test_negative_gc_threshold_is_refused() -> None:
    from purplegw.actors.process import EXIT_STARTUP_FAILED, run

    assert run({"actors": {"gc_threshold": -1}}, list) == EXIT_STARTUP_FAILED
