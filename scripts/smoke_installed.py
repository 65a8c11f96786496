"""Start an installed purplegw on its own temp config and wait for it to answer SIP.

Usage: smoke_installed.py PURPLEGW_EXECUTABLE WORK_DIR

Runs ``purplegw config check``, ``purplegw db init`` and ``purplegw run``
(SQLite in WORK_DIR, SIP on a free loopback UDP port), sends SIP OPTIONS
until the daemon answers 200, then stops it with SIGTERM and expects exit
status 0.  Standard library only: it runs with the interpreter of a fresh
virtualenv, outside the source tree (scripts/check-wheel.sh).
"""

# ruff: noqa: INP001 - a script run by path, not a module of a package

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT = 60.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def options(port: int, local_port: int) -> bytes:
    branch = "z9hG4bK" + secrets.token_hex(8)
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:smoke@127.0.0.1:{local_port}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: {secrets.token_hex(8)}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def wait_for_answer(port: int, daemon: subprocess.Popen[bytes]) -> str:
    """The first line of the daemon's answer to OPTIONS (retried until it listens)."""
    deadline = time.monotonic() + START_TIMEOUT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise SystemExit(f"purplegw run exited with status {daemon.returncode}")
            sock.sendto(options(port, sock.getsockname()[1]), ("127.0.0.1", port))
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionRefusedError):
                continue
            return data.split(b"\r\n", 1)[0].decode("ascii", "replace")
    raise SystemExit(f"no answer to OPTIONS on udp 127.0.0.1:{port} in {START_TIMEOUT:.0f}s")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cli(purplegw: str, config: Path, *args: str) -> None:
    say(f"$ purplegw {' '.join(args)}")
    subprocess.run(  # noqa: S603 - our own executable
        [purplegw, "--config", str(config), *args], check=True, timeout=120
    )


def main() -> int:
    purplegw, work = sys.argv[1], Path(sys.argv[2])
    port = free_udp_port()
    config = work / "purplegw.toml"
    config.write_text(
        f'[sip]\nlisten = ["udp:127.0.0.1:{port}"]\n[store]\ndata_dir = "{work / "data"}"\n'
    )
    cli(purplegw, config, "config", "check")
    cli(purplegw, config, "db", "init")
    log = work / "purplegw.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(  # noqa: S603 - our own executable
            [purplegw, "--config", str(config), "run"], stdout=out, stderr=subprocess.STDOUT
        )
    started = time.monotonic()
    try:
        first_line = wait_for_answer(port, daemon)
        say(f"OPTIONS -> {first_line} after {time.monotonic() - started:.1f}s")
    except SystemExit:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
    if not first_line.startswith("SIP/2.0 200") or code != 0:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise SystemExit(f"answer to OPTIONS: {first_line}; exit status after SIGTERM: {code}")
    say("purplegw run stopped cleanly on SIGTERM")
    return 0


if __name__ == "__main__":
    sys.exit(main())
