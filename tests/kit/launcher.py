"""Starting, waiting for and stopping the foreground servers the tests run."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path


def launch(argv: Sequence[str], *, cwd: Path, output: Path) -> subprocess.Popen[bytes]:
    """Run a server in the foreground, its output in ``output``."""
    with output.open("wb") as out:
        return subprocess.Popen(  # argv built by the launcher modules
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd
        )


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(
    proc: subprocess.Popen[bytes],
    host: str,
    ports: Sequence[int],
    timeout: float,
    fail: Callable[[str], Exception],
) -> None:
    """Return once every port accepts TCP; raise ``fail(reason)`` if the server dies or is late."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise fail(f"exited with {proc.returncode}")
        if all(accepts(host, port) for port in ports):
            return
        time.sleep(0.05)
    raise fail(f"did not listen within {timeout}s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not go within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
