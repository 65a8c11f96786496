"""The log file: born 0600 (also after logrotate moved it), no SCRAM server messages, wire at TRACE.

One real daemon logs to a file at DEBUG with the SIP wire log on, logs in
to a Prosody that keeps SCRAM keys (so the salt it sends is known to the
test) and answers one SIP request.  The file is then read as an operator
would read it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import stat
import time
from typing import TYPE_CHECKING, Any

import pytest

from purplegw import logs
from tests.kit.gateway import GatewayProcess
from tests.kit.prosody import Prosody, _encode
from tests.kit.raw_ua import RawUA
from tests.security.conftest import set_config
from tests.security.test_secrets import leaks

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

XMPP_PASSWORD = "xmpp-Log-pw-5f20c7"

# A base64 run long enough to carry a SCRAM message (the shortest, "v=" and
# a SHA-1 signature, is 32 characters).
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
# RFC 5802 server-first-message and server-final-message.
_SCRAM_SERVER_MESSAGE = re.compile(r"^(r=[^,]+,s=[^,]+,i=\d+|v=[A-Za-z0-9+/=]+)$")


def scram_server_messages(text: str) -> list[str]:
    """Every SCRAM server message found base64-encoded in ``text``."""
    found = []
    for run in _BASE64_RUN.findall(text):
        try:
            decoded = base64.b64decode(run, validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError):
            continue
        if _SCRAM_SERVER_MESSAGE.match(decoded):
            found.append(decoded)
    return found


def test_scram_server_messages_are_found() -> None:
    # The search must see what an unredacted log line carries.
    challenge = base64.b64encode(b"r=abcdefgh0123,s=c2FsdHNhbHQ=,i=4096").decode()
    success = base64.b64encode(b"v=" + base64.b64encode(b"\x01" * 20)).decode()
    line = (
        f"RECV: <challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{challenge}</challenge>"
        f"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{success}</success>"
    )
    assert len(scram_server_messages(line)) == 2
    assert not scram_server_messages(
        line.replace(challenge, "(redacted)").replace(success, "(redacted)")
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def salt_of(prosody: Prosody, localpart: str) -> str:
    """The salt Prosody sends for this account, as it appears in the challenge (base64)."""
    assert prosody.run_dir is not None
    data = (
        prosody.run_dir
        / "data"
        / _encode(prosody.domain)
        / "accounts"
        / f"{_encode(localpart)}.dat"
    ).read_text()
    match = re.search(r'\["salt"\] = "([^"]+)"', data)
    assert match is not None, data
    return base64.b64encode(match.group(1).encode()).decode()


def wait_for(path: Path, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        assert time.monotonic() < deadline, f"{text!r} not in {path}:\n{content[-3000:]}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def run(
    hashed_prosody: Prosody,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("logfile")
    user = hashed_prosody.create_user("logalice", XMPP_PASSWORD)
    log_file = base / "log" / "purplegw.log"
    log_file.parent.mkdir()
    gateway = GatewayProcess(base, extra_config=hashed_prosody.gateway_section())
    set_config(gateway, logging={"file": str(log_file), "sip_wire": True})
    gateway.cli("db", "init")
    gateway.cli(
        "accounts",
        "add",
        "alice@sip.test",
        user.jid,
        "xmpp",
        "--password-stdin",
        stdin=XMPP_PASSWORD + "\n",
    )
    old_umask = os.umask(0o022)  # the daemon inherits the usual umask: 0644 files
    try:
        gateway.start()
    finally:
        os.umask(old_umask)
    result: dict[str, Any] = {"salt": salt_of(hashed_prosody, "logalice")}
    try:
        gateway.wait_accounts("connected")
        answer = RawUA(gateway).request("OPTIONS", gateway.uri, "probe@127.0.0.1")
        result["options"] = answer
        result["mode"] = mode(log_file)
        # logrotate without copytruncate: the file is moved away, the
        # daemon reopens the path at its next record.
        rotated = log_file.with_suffix(".log.1")
        log_file.rename(rotated)
        gateway.cli("reload")
        wait_for(log_file, "Reload")
        result["rotated_mode"] = mode(log_file)
    finally:
        result["code"] = gateway.stop()
    result["log"] = "\n".join(
        p.read_text(errors="replace") for p in sorted(log_file.parent.iterdir())
    )
    result["stdout"] = gateway.log.read_text(errors="replace")
    return result


def test_the_daemon_ran(run: dict[str, Any]) -> None:
    assert run["code"] == 0, run["stdout"][-3000:]
    assert run["options"][0] == 200, run["options"]


def test_log_file_is_created_0600(run: dict[str, Any]) -> None:
    assert run["mode"] == 0o600


def test_log_file_reopened_after_rotation_is_0600(run: dict[str, Any]) -> None:
    assert run["rotated_mode"] == 0o600


def test_sasl_challenge_and_success_are_redacted(run: dict[str, Any]) -> None:
    log = run["log"]
    # The exchange was logged (SCRAM: a challenge and a success), with the payloads replaced.
    assert re.search(r"RECV: <challenge [^>]*>\(redacted\)</challenge>", log), log[-4000:]
    assert re.search(r"RECV: <success [^>]*>\(redacted\)</success>", log), log[-4000:]
    assert not leaks(log, {"salt": run["salt"]})
    assert not scram_server_messages(log)


def test_sip_wire_log_is_at_trace(run: dict[str, Any]) -> None:
    lines = [line for line in run["log"].splitlines() if " purplegw.sip.wire: " in line]
    assert lines, run["log"][-3000:]  # the OPTIONS and its answer, at least
    assert all(" TRACE " in line for line in lines), lines[:3]


# --- the handler itself, under a umask that would leave files world-readable ----------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
def test_private_file_handler_ignores_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    handler = logs.PrivateFileHandler(str(path), encoding="utf-8")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "one", None, None)
    try:
        handler.emit(record)
        assert mode(path) == 0o600
        path.rename(tmp_path / "gw.log.1")
        handler.emit(record)  # WatchedFileHandler notices the move and reopens
        assert mode(path) == 0o600
        assert path.read_text() == "one\n"
    finally:
        handler.close()


def test_an_existing_log_file_keeps_the_mode_logrotate_gave_it(tmp_path: Path) -> None:
    path = tmp_path / "gw.log"
    path.touch()
    path.chmod(0o640)  # logrotate: create 0640 purplegw adm
    handler = logs.PrivateFileHandler(str(path), encoding="utf-8")
    try:
        handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "x", None, None))
    finally:
        handler.close()
    assert mode(path) == 0o640
