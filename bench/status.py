"""How long `purplegw status` takes with 10,000 accounts, next to a bare control-socket round trip.

    .venv/bin/python bench/status.py [--accounts 10000] [--workers 0,2] [--runs 20] [--ref REV]

A daemon gets N rows of the dummy adapter (instant logins, no server) and is
started; once every account is connected, each row of the table is timed
``--runs`` times (median and 90th percentile):

- ``bare socket``: one request the daemon refuses at once (an unknown
  command) over the control socket: the floor of any answer;
- ``status (socket)``: the ``status`` command over the control socket, JSON
  decoded, as `purplegw status` gets it;
- ``status --json (CLI)``: the whole `purplegw status --json` process, as an
  operator or a script runs it (Python start-up included);
- ``CLI start-up``: `purplegw --version`, the share of the line above that
  is only starting Python and the command.

``--ref REV`` runs the same against another commit too (e.g. the one before
the status cache, whose `status` asked every account actor), checked out in
a temporary git worktree, side by side.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kit.gateway import GatewayProcess  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable


def control_round_trip(path: Path, command: str) -> bytes:
    """One request, one answer line (what purplegw.actors.control.call does)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(os.fspath(path))
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        with sock.makefile("rb") as stream:
            return stream.readline()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """User + system CPU so far of ``root`` and its children (the daemon and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(root) or fields[1] == str(root):
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], object], runs: int, daemon: int) -> tuple[float, float, float, float]:
    """Median and 90th percentile wall ms of ``fn``; CPU ms per call of the daemon and the CLI.

    CPU time is what the machine being busy with other work does not inflate
    much; wall time on a loaded machine is mostly waiting for a core.
    """
    samples = []
    daemon_cpu, cli_cpu = cpu_seconds(daemon), children_cpu()
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(1000 * (time.perf_counter() - started))
    daemon_ms = 1000 * (cpu_seconds(daemon) - daemon_cpu) / runs
    cli_ms = 1000 * (children_cpu() - cli_cpu) / runs
    samples.sort()
    return (
        statistics.median(samples),
        samples[min(len(samples) - 1, int(0.9 * len(samples)))],
        daemon_ms,
        cli_ms,
    )


def prepare(base: Path, accounts: int, workers: int) -> GatewayProcess:
    gateway = GatewayProcess(
        base,
        extra_config="[protocols.dummy]\nenabled = true\n",
        actors={"workers": workers},
        log_level="WARNING",
    )
    gateway.cli("db", "init")
    table = base / "accounts.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sip_user", "ext_user", "ext_prot", "ext_pass"])
        for i in range(accounts):
            writer.writerow([f"u{i}@sip.test", f"user{i}@dummy", "dummy", "pw"])
    gateway.cli("accounts", "import", str(table))
    return gateway


def measure(label: str, accounts: int, workers: int, runs: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="purplegw-bench-status-") as tmp:
        gateway = prepare(Path(tmp), accounts, workers)
        gateway.start()
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    entries = json.loads(gateway.cli("status", "--json").stdout)
                except RuntimeError:
                    entries = []
                connected = sum(1 for e in entries if e["state"] == "connected")
                if connected == accounts:
                    break
                if time.monotonic() > deadline:
                    msg = f"{connected}/{accounts} connected after 600 s\n{gateway.log_text()}"
                    raise RuntimeError(msg)
                time.sleep(2.0)
            path = socket_path(gateway)
            listed = len(json.loads(control_round_trip(path, "status"))["result"])
            assert listed == accounts, listed
            cases: list[tuple[str, Callable[[], object]]] = [
                ("bare socket", lambda: control_round_trip(path, "no-such-command")),
                ("status (socket)", lambda: json.loads(control_round_trip(path, "status"))),
                ("status --json (CLI)", lambda: gateway.cli("status", "--json")),
                ("CLI start-up", lambda: gateway.cli("--version")),
            ]
            assert gateway.process is not None
            for name, fn in cases:
                median, p90, daemon_ms, cli_ms = timed(fn, runs, gateway.process.pid)
                rows.append(
                    {
                        "code": label,
                        "workers": workers,
                        "accounts": accounts,
                        "path": name,
                        "median_ms": median,
                        "p90_ms": p90,
                        "daemon_cpu_ms": daemon_ms,
                        "cli_cpu_ms": cli_ms,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            gateway.stop(timeout=120)
    return rows


def socket_path(gateway: GatewayProcess) -> Path:
    """The daemon's control socket (``[daemon] control_socket`` empty: in the data dir)."""
    return gateway.base / "data" / "purplegw.sock"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--ref", help="another commit to measure the same way, side by side")
    args = parser.parse_args()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    rows: list[dict[str, object]] = []
    for workers in (int(w) for w in args.workers.split(",")):
        rows += measure(f"{head} (this)", args.accounts, workers, args.runs)
    if args.ref:
        with tempfile.TemporaryDirectory(prefix="purplegw-bench-ref-") as tmp:
            tree = Path(tmp) / "tree"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.ref],
                check=True,
                capture_output=True,
            )
            # The daemon and the CLI run from that tree; this script and its kit from ours.
            previous = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = str(tree)
            try:
                for workers in (int(w) for w in args.workers.split(",")):
                    rows += measure(f"{args.ref} (ref)", args.accounts, workers, args.runs)
            finally:
                if previous is None:
                    del os.environ["PYTHONPATH"]
                else:
                    os.environ["PYTHONPATH"] = previous
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=True,
                    capture_output=True,
                )
    print()
    header = (
        f"{'code':>16} {'workers':>7} {'accounts':>8} | {'path':<20} | "
        f"{'median ms':>9} {'p90 ms':>8} | {'x bare socket':>13} | "
        f"{'CPU ms: daemon':>14} {'CLI':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        bare = next(
            r
            for r in rows
            if r["code"] == row["code"]
            and r["workers"] == row["workers"]
            and r["path"] == "bare socket"
        )
        print(
            f"{row['code']:>16} {row['workers']:>7} {row['accounts']:>8} | {row['path']:<20} | "
            f"{row['median_ms']:>9.1f} {row['p90_ms']:>8.1f} | "
            f"{float(row['median_ms']) / float(bare['median_ms']):>13.1f} | "
            f"{row['daemon_cpu_ms']:>14.1f} {row['cli_cpu_ms']:>6.0f}"
        )
    print(
        f"{args.runs} runs per row; 'x bare socket': median over the bare round trip's median; "
        "CPU ms per call (the daemon with its workers; the CLI process); "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
