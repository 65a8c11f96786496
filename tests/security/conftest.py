"""Real peers for the security tests: Prosody, ngIRCd with TLS, tinyproxy, the daemon.

Servers are session-scoped and started on loopback, free ports.  The
"mismatched" servers present a certificate that the client trusts (its
``ca_file``) but that names another host: only the hostname check can
refuse them.
"""

from __future__ import annotations

import time
import tomllib
from typing import TYPE_CHECKING, Any

import pytest
import tomli_w

from tests.kit.binaries import missing_peer
from tests.kit.certs import write_self_signed_cert
from tests.kit.ngircd import Ngircd, ngircd_binary
from tests.kit.prosody import Prosody, prosody_binary
from tests.kit.tinyproxy import tinyproxy_binary

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.kit.gateway import GatewayProcess

IRC_SERVER_PASSWORD = "irc-Srv-pass-7c1e9b"  # the test server's password
WRONG_NAME = "wrong-name.invalid"


def write_cert_for_other_name(cert_path: Path, key_path: Path, name: str = WRONG_NAME) -> None:
    """A self-signed CA certificate naming only ``name`` (no localhost, no 127.0.0.1)."""
    write_self_signed_cert(cert_path, key_path, name, loopback=False)


def _require_prosody() -> None:
    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")


def _require_ngircd() -> None:
    if ngircd_binary() is None:
        missing_peer("ngIRCd", "ngircd")


def require_tinyproxy() -> None:
    if tinyproxy_binary() is None:
        missing_peer("tinyproxy", "tinyproxy")


@pytest.fixture(scope="session")
def prosody() -> Iterator[Prosody]:
    """STARTTLS with a self-signed certificate for ``localhost`` (trusted only via ca_file)."""
    _require_prosody()
    with Prosody() as server:
        yield server


@pytest.fixture(scope="session")
def prosody_wrong_name() -> Iterator[Prosody]:
    """A Prosody whose (trusted) certificate names another host than its domain."""
    _require_prosody()
    with Prosody() as server:
        write_cert_for_other_name(server.cert_path, server.key_path)
        server.restart()  # Prosody reads its certificate at start
        yield server


@pytest.fixture(scope="session")
def ngircd_tls() -> Iterator[Ngircd]:
    """ngIRCd with a TLS port (self-signed certificate) and a server password."""
    _require_ngircd()
    with Ngircd(tls=True, password=IRC_SERVER_PASSWORD) as server:
        yield server


class _WrongNameNgircd(Ngircd):
    def _config(self, run_dir: Path) -> str:
        text = super()._config(run_dir)
        write_cert_for_other_name(run_dir / "cert.pem", run_dir / "key.pem")
        return text


@pytest.fixture(scope="session")
def ngircd_wrong_name() -> Iterator[Ngircd]:
    _require_ngircd()
    with _WrongNameNgircd(tls=True) as server:
        yield server


# --- the daemon ---------------------------------------------------------------------------


def set_config(gateway: GatewayProcess, **sections: dict[str, Any]) -> None:
    """Merge keys into sections of the daemon's TOML config file."""
    config = tomllib.loads(gateway.config.read_text())
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    gateway.config.write_text(tomli_w.dumps(config))


def wait_states(
    gateway: GatewayProcess, want: dict[str, str | Callable[[str], bool]], timeout: float = 60.0
) -> dict[str, dict[str, Any]]:
    """Poll ``status --json`` until each ext_user is in the wanted state; {ext_user: status}."""
    deadline = time.monotonic() + timeout
    last: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        if gateway.process is not None and gateway.process.poll() is not None:
            raise RuntimeError(
                f"gateway exited {gateway.process.returncode}:\n{gateway.log_text()}"
            )
        try:
            last = {a["ext_user"]: a for a in gateway.status()}
        except RuntimeError:
            last = {}
        if all(
            user in last
            and (state(last[user]["state"]) if callable(state) else last[user]["state"] == state)
            for user, state in want.items()
        ):
            return last
        time.sleep(0.2)
    raise TimeoutError(f"states not reached after {timeout}s: {last}\n{gateway.log_text()}")


@pytest.fixture(scope="session")
def ngircd_open() -> Iterator[Ngircd]:
    """ngIRCd on a plaintext port, no server password (NickServ-style logins)."""
    _require_ngircd()
    with Ngircd() as server:
        yield server
