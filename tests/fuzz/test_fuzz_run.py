"""The bounded fuzz run: every target for its share of $PURPLEGW_FUZZ_SECONDS (30 s in all).

Each target reports "fuzz <target> inputs N crashes C seconds S" in the run
summary.  A crash fails with the input, the operation trace and the file the
input was saved to.  The seed is $PURPLEGW_FUZZ_SEED (default 1, so a CI run
is reproducible; "random" picks one and prints it).  Longer runs:
``make fuzz FUZZ_SECONDS=3600`` (docs/sip-core.md).
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

import pytest

from tests.kit.fuzz import TARGETS, fuzz
from tests.kit.tally import report

if TYPE_CHECKING:
    from pathlib import Path

TOTAL_SECONDS = float(os.environ.get("PURPLEGW_FUZZ_SECONDS", "30"))
_seed = os.environ.get("PURPLEGW_FUZZ_SEED", "1")
SEED = secrets.randbelow(2**31) if _seed == "random" else int(_seed)


@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz_target(name: str, crash_dir: Path) -> None:
    result = fuzz(
        TARGETS[name], seconds=TOTAL_SECONDS / len(TARGETS), seed=SEED, crash_dir=crash_dir
    )
    report(result.line())
    assert not result.crashes, f"seed {SEED}, crashes saved under {crash_dir}\n\n" + "\n\n".join(
        crash.message() for crash in result.crashes
    )
    # every seed ran, then mutations (unless the budget is too small to get past the seeds)
    assert result.inputs > len(TARGETS[name].seeds()) or TOTAL_SECONDS / len(TARGETS) < 1
