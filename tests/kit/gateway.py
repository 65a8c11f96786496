"""Runs ``purplegw run`` as a real daemon process with a temp config (e2e tests, benchmarks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from purplegw.actors.control import query_status
from purplegw.exceptions import GatewayError
from tests.kit.cli_fork import run_cli
from tests.kit.ports import free_port


class GatewayProcess:
    """A daemon on a free loopback port with its own data directory.

    ``sip`` and ``actors`` add or override keys of those sections;
    ``extra_config`` is appended as is (other sections: [protocols.*],
    [presence]...).
    """

    def __init__(  # each is a config knob the callers set
        self,
        base: Path,
        *,
        extra_config: str = "",
        domain: str = "sip.test",
        sip: dict[str, Any] | None = None,
        actors: dict[str, Any] | None = None,
        log_level: str = "DEBUG",
    ) -> None:
        self.base = base
        self.port = free_port("both")
        self.domain = domain
        self.config = base / "purplegw.toml"
        self.log = base / "gateway.log"
        sections = {
            "sip": {
                "listen": [f"udp:127.0.0.1:{self.port}", f"tcp:127.0.0.1:{self.port}"],
                "domain": domain,
                **(sip or {}),
            },
            "store": {"data_dir": str(base / "data")},
            # Fast reconnects: tests restart servers under the gateway.
            "actors": {"backoff_initial": 0.2, "backoff_max": 2.0, **(actors or {})},
            "logging": {"level": log_level},
        }
        self.config.write_text(tomli_w.dumps(sections) + "\n" + extra_config + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """``purplegw --config <this config> ARGS`` (forked from a process that imported it)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PURPLEGW_")}
        result = run_cli(["--config", str(self.config), *args], env=env, stdin=stdin, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"purplegw {' '.join(args)} failed: {result.stderr}")
        return result

    def start(self, env: dict[str, str] | None = None) -> GatewayProcess:
        """``env`` adds variables to the daemon's environment (NOTIFY_SOCKET...)."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PURPLEGW_")}
        env = inherited | (env or {})
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "purplegw", "--config", str(self.config), "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self

    @property
    def control_socket(self) -> Path:
        """Where the daemon listens for commands (``[daemon] control_socket``, as configured)."""
        config = tomllib.loads(self.config.read_text())
        configured = config.get("daemon", {}).get("control_socket")
        return Path(configured or Path(config["store"]["data_dir"]) / "purplegw.sock")

    def status(self) -> list[dict[str, Any]]:
        """Every account's status, as ``purplegw status --json`` prints it.

        Asked on the control socket from this process: tests poll it several
        times a second, and a ``purplegw`` process costs ~0.5 s of CPU.  The
        command itself is tested in tests/cli/test_status.py.  Raises
        RuntimeError, as the failing command does, while the daemon does not answer.
        """
        try:
            accounts = query_status(self.control_socket)  # ControlError is a RuntimeError
        except (GatewayError, OSError, ValueError) as exc:
            raise RuntimeError(f"purplegw status failed: {exc}") from exc
        return json.loads(json.dumps(accounts))

    def wait_accounts(
        self, state: str = "connected", timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"gateway exited {self.process.returncode}:\n{self.log_text()}")
            try:
                last = self.status()
                if last and all(a.get("state") == state for a in last):
                    return last
            except RuntimeError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"accounts not {state} after {timeout}s: {last}\n{self.log_text()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return ""
