"""Runs ``purplegw`` commands as processes forked from one that imported the package.

A ``python -m purplegw`` process spends ~0.5 s of CPU importing before it does
anything (1.5-2.5 s on a loaded 2-core machine), and the end-to-end tests run
hundreds of commands to set their daemons up.  The fork server is a
single-threaded process that imports the command line and what its commands
load (the store, the protocol adapters) once; each command is then a child
forked from it that runs ``python -m purplegw``'s ``__main__`` with the
caller's argv, environment, working directory and stdin, and whose exit code,
stdout and stderr come back as a ``subprocess.CompletedProcess``.  Nothing
runs in the test process, whose logging and threads the commands never see.

    result = run_cli(["--config", str(path), "users", "list"], env=env, timeout=60)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_HEADER = struct.Struct("!I")


# --- the server (``python -m tests.kit.cli_fork``) ------------------------------------------


def _read_exact(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _write_message(fd: int, message: dict[str, Any]) -> None:
    payload = json.dumps(message).encode()
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view) :]


def _read_message(fd: int) -> dict[str, Any]:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return dict(json.loads(_read_exact(fd, size)))


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)  # what sys.exit("text") prints
    return 1


def _child(request: dict[str, Any], requests: int, replies: int) -> None:
    """In the forked child: become ``python -m purplegw ARGS``; never returns."""
    import runpy
    import traceback

    code = 1
    try:
        os.close(requests)
        os.close(replies)
        os.chdir(request["cwd"])
        for fd, path, flags in (
            (0, request["stdin"], os.O_RDONLY),
            (1, request["stdout"], os.O_WRONLY),
            (2, request["stderr"], os.O_WRONLY),
        ):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [request["main"], *request["args"]]
        try:
            runpy.run_module("purplegw", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
    except BaseException:  # noqa: BLE001 - an uncaught error is exit 1 with a traceback, as python does
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def serve() -> None:
    # What the commands import, once: the command line, the store, every adapter.
    import purplegw.cli
    import purplegw.store
    from purplegw.protocols.loader import load_adapters

    load_adapters(check_environment=False)
    assert threading.active_count() == 1, "the fork server must stay single-threaded"
    main_path = str(Path(purplegw.cli.__file__).with_name("__main__.py"))
    requests, replies = os.dup(0), os.dup(1)
    # Nothing stray (a warning printed) may land in the replies.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    while True:
        try:
            request = _read_message(requests)
        except EOFError:
            return
        request["main"] = main_path
        pid = os.fork()
        if pid == 0:
            _child(request, requests, replies)
        _, status = os.waitpid(pid, 0)
        _write_message(replies, {"returncode": os.waitstatus_to_exitcode(status)})


# --- the client (in the test process) -------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        root = Path(__file__).resolve().parents[2]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PURPLEGW_")}
        self.process = subprocess.Popen(  # our own interpreter and module
            [sys.executable, "-m", "tests.kit.cli_fork"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=root,
            env=env,
            start_new_session=True,  # a timeout kills it with the command it runs
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.requests = self.process.stdin.fileno()
        self.replies = self.process.stdout.fileno()

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_lock = threading.Lock()
_server: _Server | None = None


def _close() -> None:
    if _server is not None:
        _server.close()


def run_cli(
    args: list[str],
    *,
    env: dict[str, str],
    stdin: str = "",
    timeout: float = 60.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m purplegw ARGS`` in a forked child; the result as ``subprocess.run`` has it."""
    global _server  # noqa: PLW0603 - one fork server per test process
    with _lock, tempfile.TemporaryDirectory(prefix="purplegw-cli-") as tmp:
        if _server is None or not _server.alive():
            if _server is None:
                atexit.register(_close)
            _server = _Server()
        files = {name: Path(tmp) / name for name in ("stdin", "stdout", "stderr")}
        files["stdin"].write_text(stdin)
        files["stdout"].touch()
        files["stderr"].touch()
        request = {
            "args": args,
            "env": env,
            "cwd": str(cwd or Path.cwd()),
            **{name: str(path) for name, path in files.items()},
        }
        _write_message(_server.requests, request)
        deadline = time.monotonic() + timeout
        while not select.select([_server.replies], [], [], max(0.0, deadline - time.monotonic()))[
            0
        ]:
            if time.monotonic() >= deadline:
                os.killpg(_server.process.pid, signal.SIGKILL)  # a new server next time
                _server.process.wait()
                raise subprocess.TimeoutExpired(["purplegw", *args], timeout)
        try:
            reply = _read_message(_server.replies)
        except EOFError:
            raise RuntimeError(f"the purplegw fork server died running {args}") from None
        return subprocess.CompletedProcess(
            ["purplegw", *args],
            reply["returncode"],
            files["stdout"].read_text(errors="replace"),
            files["stderr"].read_text(errors="replace"),
        )


if __name__ == "__main__":
    serve()
