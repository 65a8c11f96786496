"""A purplegw daemon for the process tests: rows come from a JSON file.

Usage: daemon_main.py <state_dir> <workers>.  The test rewrites
``<state_dir>/rows.json`` and sends SIGHUP to see the diff applied.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from purplegw.actors import process
from purplegw.protocols.base import AccountCredentials


def main() -> int:
    state_dir = Path(sys.argv[1])
    workers = int(sys.argv[2])
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )

    def rows() -> list[AccountCredentials]:
        data = json.loads((state_dir / "rows.json").read_text())
        return [AccountCredentials(**entry) for entry in data]

    config = {
        "actors": {
            "workers": workers,
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
            "login_timeout": 1.0,
            "shutdown_timeout": 10.0,
            "worker_restart_delay": 0.2,
        },
        "protocols": {"dummy": {"enabled": True}},  # off by default in production
    }
    return process.run(
        config,
        rows,
        pidfile=state_dir / "purplegw.pid",
        control_socket=state_dir / "control.sock",
    )


if __name__ == "__main__":
    sys.exit(main())
