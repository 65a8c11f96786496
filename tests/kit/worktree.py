"""The trees a benchmark's ``--against REV`` compares: REV's code first, then this tree's."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def compared_trees(against: str, prefix: str) -> Iterator[dict[str, str]]:
    """Label -> source root: REV in a temporary git worktree (when given), then this tree.

    The reference comes first so a bench runs it first and prints it as the
    row the others' ratios are against; the worktree is removed on exit.
    """
    roots = {"this tree": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        other = Path(tmp) / "against"
        if against:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other), against],
                check=True,
                capture_output=True,
            )
            roots = {against: str(other), **roots}
        try:
            yield roots
        finally:
            if against:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)],
                    check=False,
                )
