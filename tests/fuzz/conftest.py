"""Where crashing fuzz inputs go: $PURPLEGW_FUZZ_CRASH_DIR (for CI artifacts), else a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def crash_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("PURPLEGW_FUZZ_CRASH_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("fuzz-crashes")
