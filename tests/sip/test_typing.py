"""The sans-IO SIP core type-checks under mypy --strict (STYLE.md tooling)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_strict_sip_core() -> None:
    pytest.importorskip("mypy")
    files = sorted(str(p) for p in (ROOT / "purplegw" / "sip").glob("*.py"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            "/dev/null",
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_io_imports_in_sip_core() -> None:
    forbidden = (
        "import socket",
        "import threading",
        "import time",
        "import pykka",
        "import gevent",
        "import asyncio",
        "import select",
    )
    for path in (ROOT / "purplegw" / "sip").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for word in forbidden:
            assert word not in text, f"{path.name} must stay sans-IO ({word})"
