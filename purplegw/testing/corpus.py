"""Where the shared test corpus lives (``../shared/corpus`` next to the repo root)."""

from __future__ import annotations

from pathlib import Path


def corpus_dir() -> Path:
    """The corpus folder: the repository root's sibling ``shared/corpus``."""
    repo_root = Path(__file__).resolve().parents[2]
    return (repo_root / ".." / "shared" / "corpus").resolve()
