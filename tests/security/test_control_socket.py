"""Only the service user can talk to the daemon's control socket; key and database are private.

We run as root, who passes every permission check, so the "other user" is
``nobody``: a forked child drops to it and tries to connect.  The socket sits
in a world-traversable directory, so only the socket's own mode can stop it;
a control case (the same socket opened to everyone) proves the child would
otherwise get in.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.kit.gateway import GatewayProcess
from tests.security.conftest import set_config

if TYPE_CHECKING:
    from collections.abc import Iterator


def connect_as(user: str, path: Path) -> int:
    """0 if ``user`` can connect to the Unix socket at ``path``, else the errno."""
    entry = pwd.getpwnam(user)
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 99
        try:
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
            code = 0
        except OSError as exc:
            code = exc.errno or 98
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture(scope="module")
def public_dir() -> Iterator[Path]:
    """A directory everyone may traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="purplegw-sec-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, public_dir: Path) -> Iterator[GatewayProcess]:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    gateway = GatewayProcess(tmp_path_factory.mktemp("control"))
    set_config(
        gateway,
        daemon={
            "control_socket": str(public_dir / "control.sock"),
            "pid_file": str(public_dir / "purplegw.pid"),
        },
    )
    gateway.cli("db", "init")
    gateway.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            gateway.status()
            break
        except RuntimeError:
            assert time.monotonic() < deadline, gateway.log_text()
            assert gateway.process is not None
            assert gateway.process.poll() is None, gateway.log_text()
            time.sleep(0.1)
    yield gateway
    assert gateway.stop() == 0, gateway.log_text()


def test_control_socket_is_0600_and_refuses_other_users(
    daemon: GatewayProcess, public_dir: Path
) -> None:
    path = public_dir / "control.sock"
    info = path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600, oct(info.st_mode)
    assert info.st_uid == os.geteuid()
    assert connect_as("nobody", path) == errno.EACCES
    # Control: the same socket opened to everyone lets nobody in, so the
    # refusal above came from the socket's mode and not from the set-up.
    path.chmod(0o666)
    assert connect_as("nobody", path) == 0


def test_pid_file_is_not_writable_by_others(daemon: GatewayProcess, public_dir: Path) -> None:
    pid_file = public_dir / "purplegw.pid"
    assert daemon.process is not None
    assert pid_file.read_text().strip() == str(daemon.process.pid)
    info = pid_file.stat()
    assert info.st_uid == os.geteuid()
    # Another user rewriting it would make `purplegw reload` signal their process.
    assert stat.S_IMODE(info.st_mode) & 0o022 == 0, oct(info.st_mode)


def test_key_file_is_0600(daemon: GatewayProcess) -> None:
    key = daemon.base / "data" / "purplegw.key"
    info = key.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600, oct(info.st_mode)
    assert info.st_uid == os.geteuid()


def test_sqlite_store_is_private(daemon: GatewayProcess) -> None:
    """The subscriber table's HA1s are password-equivalent: no other user may read them."""
    files = sorted((daemon.base / "data").glob("purplegw.db*"))  # with -wal/-shm while running
    assert files
    for path in files:
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) & 0o077 == 0, (path.name, oct(info.st_mode))
        assert info.st_uid == os.geteuid()
