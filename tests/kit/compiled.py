"""The SIP core's compiled modules (setup.py, COMPILED) next to their sources.

An editable install builds mypyc's extension modules into the tree, and
Python imports ``parser.cpython-311-x86_64-linux-gnu.so`` before
``parser.py``: a source edited after the build would not be what runs.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def compiled_modules(root: Path = ROOT) -> dict[Path, Path]:
    """``{extension module: its source}`` for every compiled module in the tree."""
    found = {}
    for extension in (root / "purplegw").rglob("*.so"):
        source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
        found[extension] = source
    return found


def core_kind(root: Path = ROOT) -> str:
    """``compiled`` when the tree holds mypyc's build (setup.py, COMPILED), else ``pure``."""
    return "compiled" if compiled_modules(root) else "pure"


def stale_compiled_modules(root: Path = ROOT) -> list[str]:
    """Sources changed since their extension module was built (or gone)."""
    stale = []
    for extension, source in compiled_modules(root).items():
        if not source.is_file() or source.stat().st_mtime > extension.stat().st_mtime:
            stale.append(str(source.relative_to(root)))
    return sorted(stale)
