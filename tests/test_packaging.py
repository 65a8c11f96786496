"""What an operator installs: package data, shipped defaults, the systemd unit.

scripts/check-wheel.sh (CI, before the suite) goes further: it installs the
wheel built from the sdist in a fresh virtualenv and runs the daemon.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from purplegw.config import load_config
from purplegw.config.loader import DEFAULT_CONFIG
from purplegw.protocols.loader import AdapterStatus, load_adapters
from tests.kit.binaries import missing_peer

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = [
    "purplegw/py.typed",
    "purplegw/config/default.toml",
    "purplegw/protocols/dummy/defaults.toml",
    "purplegw/protocols/irc/defaults.toml",
    "purplegw/protocols/matrix/defaults.toml",
    "purplegw/protocols/xmpp/defaults.toml",
]


def test_packaged_defaults_are_the_shipped_example_byte_for_byte() -> None:
    # One text, two places (see the header comment): make etc/purplegw.toml copies.
    assert not DEFAULT_CONFIG.is_symlink()
    assert DEFAULT_CONFIG.read_bytes() == (REPO / "etc" / "purplegw.toml").read_bytes()


def test_every_package_data_file_is_a_real_file() -> None:
    for name in PACKAGE_DATA:
        path = REPO / name
        assert path.is_file(), name
        assert not path.is_symlink(), f"{name}: a symlink does not survive a wheel"


def test_dummy_adapter_is_off_unless_a_config_turns_it_on(tmp_path: Path) -> None:
    registry = load_adapters(check_environment=False)
    defaults = {
        name: info.adapter.get_default_config()
        for name, info in registry.infos.items()
        if info.adapter is not None
    }
    config = load_config(environ={}, protocol_defaults=defaults)
    assert config.protocol("dummy")["enabled"] is False
    statuses = {
        name: info.status
        for name, info in load_adapters(config["protocols"], check_environment=False).infos.items()
    }
    assert statuses == {
        "dummy": AdapterStatus.DISABLED,
        "irc": AdapterStatus.ENABLED,
        "matrix": AdapterStatus.ENABLED,
        "xmpp": AdapterStatus.ENABLED,
    }

    on = tmp_path / "purplegw.toml"
    on.write_text("[protocols.dummy]\nenabled = true\n")
    config = load_config(on, environ={}, protocol_defaults=defaults)
    registry = load_adapters(config["protocols"], check_environment=False)
    assert registry.infos["dummy"].status is AdapterStatus.ENABLED


@pytest.mark.slow
def test_the_wheel_carries_the_package_data(tmp_path: Path) -> None:
    subprocess.run(  # our own interpreter and tree
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
        # the pure wheel: the data files are the same, the compile is check-wheel's to test
        env={**os.environ, "PURPLEGW_COMPILE": "0"},
    )
    (wheel,) = tmp_path.glob("purplegw-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert not [n for n in names if n.endswith(".so")]
        assert set(PACKAGE_DATA) <= names, set(PACKAGE_DATA) - names
        packaged = archive.read("purplegw/config/default.toml")
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt")))
    assert packaged == (REPO / "etc" / "purplegw.toml").read_bytes()
    groups = configparser.ConfigParser()
    groups.read_string(entry_points.decode())
    assert dict(groups["purplegw.protocols"]) == {
        "dummy": "purplegw.protocols.dummy:Adapter",
        "irc": "purplegw.protocols.irc:Adapter",
        "matrix": "purplegw.protocols.matrix:Adapter",
        "xmpp": "purplegw.protocols.xmpp:Adapter",
    }
    assert not [n for n in names if n.startswith("tests/")]


def _verify_unit(unit: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        missing_peer("systemd-analyze", "systemd")
    executable = Path(sys.executable).with_name("purplegw")
    return subprocess.run(  # our own script
        ["/bin/sh", str(REPO / "scripts" / "verify-unit.sh"), str(unit), str(executable)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_systemd_unit_verifies_without_findings() -> None:
    result = _verify_unit(REPO / "etc" / "purplegw.service")
    assert result.returncode == 0, result.stderr


def test_the_unit_check_fails_on_a_finding_systemd_only_prints(tmp_path: Path) -> None:
    """systemd-analyze exits 0 on an unknown key; verify-unit.sh must not."""
    unit = tmp_path / "purplegw.service"
    text = (REPO / "etc" / "purplegw.service").read_text()
    unit.write_text(text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    result = _verify_unit(unit)
    assert result.returncode != 0
    assert "NoNewPrivilege" in result.stderr
