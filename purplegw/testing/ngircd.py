"""Launch an ngIRCd server on loopback for tests.

ngIRCd runs in the foreground (``-n``) with a config written to a temp
directory, listening on a free 127.0.0.1 port.  PAM, IDENT and DNS are off
(PAM would swallow the server password; IDENT and DNS lookups stall every
login by seconds).  As root it keeps running as root: ngIRCd only drops
privileges when ``ServerUID`` is set, which a throw-away test server does not
need.

Usage::

    with Ngircd(password="s3cret") as irc:
        connect(("127.0.0.1", irc.port))

    with Ngircd(tls=True) as irc:       # irc.tls_port, irc.ca_file
        ...

``ngircd_binary()`` is None when the Debian package is missing; the pytest
fixtures in tests/protocols/conftest.py turn that into skip/fail.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from purplegw.testing.ports import free_port

logger = logging.getLogger(__name__)

NGIRCD_BINARY = "/usr/sbin/ngircd"


def ngircd_binary() -> str | None:
    """Path of the ngircd binary, or None when it is not installed."""
    if os.access(NGIRCD_BINARY, os.X_OK):
        return NGIRCD_BINARY
    return shutil.which("ngircd")


class NgircdError(RuntimeError):
    pass


def write_self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (also valid as its own CA file).

    Returns ``(cert_path, key_path)``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Ngircd:
    """A running ngIRCd; ``port`` (plaintext) and ``tls_port`` on ``host``."""

    def __init__(
        self,
        *,
        password: str | None = None,
        tls: bool = False,
        host: str = "127.0.0.1",
        server_name: str = "irc.test.invalid",
        ping_timeout: int = 120,
    ) -> None:
        self.host = host
        self.password = password
        self.tls = tls
        self.server_name = server_name
        self.ping_timeout = ping_timeout
        self.port = free_port("tcp", host)
        self.tls_port = free_port("tcp", host) if tls else None
        self.ca_file: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def _config(self, run_dir: Path) -> str:
        lines = [
            "[Global]",
            f"Name = {self.server_name}",
            "Info = purplegw test server",
            f"Listen = {self.host}",
            f"Ports = {self.port}",
            "MotdPhrase = purplegw test",
            f"PidFile = {run_dir / 'ngircd.pid'}",
        ]
        if self.password:
            lines.append(f"Password = {self.password}")
        lines += [
            "[Limits]",
            "MaxConnectionsIP = 0",
            "MaxNickLength = 30",
            f"PingTimeout = {self.ping_timeout}",
            "PongTimeout = 20",
            "[Options]",
            "PAM = no",
            "Ident = no",
            "DNS = no",
            "ConnectIPv6 = no",
            # No flood throttling: tests send bursts (split long messages).
            "MaxPenaltyTime = 0",
        ]
        if self.tls:
            cert, key = write_self_signed_cert(run_dir, self.host)
            self.ca_file = cert
            lines += [
                "[SSL]",
                f"CertFile = {cert}",
                f"KeyFile = {key}",
                f"Ports = {self.tls_port}",
            ]
        return "\n".join(line for line in lines if line) + "\n"

    def start(self, timeout: float = 15.0) -> Ngircd:
        binary = ngircd_binary()
        if binary is None:
            raise NgircdError("ngircd is not installed")
        self._tmp = tempfile.TemporaryDirectory(prefix="purplegw-ngircd-")
        run_dir = Path(self._tmp.name)
        conf = run_dir / "ngircd.conf"
        conf.write_text(self._config(run_dir))
        self.log_path = run_dir / "ngircd.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-n", "-f", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=run_dir,
            )
        deadline = time.monotonic() + timeout
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NgircdError(f"ngircd exited with {self.proc.returncode}:\n{self.log()}")
            if all(_accepts(self.host, p) for p in ports if p):
                logger.debug("ngircd up on %s:%s", self.host, self.port)
                return self
            time.sleep(0.05)
        self.stop()
        raise NgircdError(f"ngircd did not listen within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL): clients see their socket close."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Ngircd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
