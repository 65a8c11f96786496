"""Where the test corpus lives: ``tests/corpus`` (copied in, sources in its README)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["corpus_dir"]


def corpus_dir() -> Path:
    """The corpus directory, inside the repository: a clone alone runs the suite."""
    return Path(__file__).resolve().parents[1] / "corpus"
