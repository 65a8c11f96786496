"""Where the shared test corpus lives: ``<repo root>/../shared/corpus``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["corpus_dir"]


def corpus_dir() -> Path:
    """The corpus directory (it sits next to the repository checkout, in CI too)."""
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus").resolve()
