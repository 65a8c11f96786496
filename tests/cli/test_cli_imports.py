"""Commands that need no adapter import no adapter library (read from the real process)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from tests.kit.gateway import GatewayProcess
from tests.kit.modules_report import ModulesReport, top_level

if TYPE_CHECKING:
    from pathlib import Path

ADAPTER_LIBRARIES = ("slixmpp", "nio", "aiohttp")


def _run(report: ModulesReport, config: Path, *args: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURPLEGW_")} | report.env()
    result = subprocess.run(
        [sys.executable, "-m", "purplegw", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (modules,) = report.modules().values()
    for path in report.reports.iterdir():
        path.unlink()
    return modules


def test_db_init_and_accounts_list_import_no_adapter_library(tmp_path: Path) -> None:
    report = ModulesReport(tmp_path / "modules")
    gateway = GatewayProcess(tmp_path)
    modules = _run(report, gateway.config, "db", "init")
    assert "purplegw.store" in modules  # the report is the command's
    assert top_level(modules, ADAPTER_LIBRARIES) == set()
    modules = _run(report, gateway.config, "accounts", "list")
    assert "purplegw.store.accounts" in modules
    assert top_level(modules, ADAPTER_LIBRARIES) == set()
    assert not [
        m for m in modules if m.startswith("purplegw.protocols.") and m.endswith(".session")
    ]


def test_the_report_sees_an_adapter_library_when_one_is_imported(tmp_path: Path) -> None:
    # The same check, on a command that does import one: the test can fail.
    report = ModulesReport(tmp_path / "modules")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURPLEGW_")} | report.env()
    subprocess.run([sys.executable, "-c", "import slixmpp"], env=env, check=True, timeout=60)
    (modules,) = report.modules().values()
    assert top_level(modules, ADAPTER_LIBRARIES) == {"slixmpp"}
