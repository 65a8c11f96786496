"""Which modules a Python process imported, written by the process itself when it exits.

``ModulesReport(dir).env()`` gives environment variables that put a
``sitecustomize`` on ``PYTHONPATH``: every interpreter started with them
(and every ``spawn`` child, which inherits the environment) writes its
``sys.modules`` to ``dir/reports/<pid>`` at exit, and the first threshold
of its cyclic GC (which a gateway process tunes at start) to
``dir/gc/<pid>``.  Nothing of the code under test is replaced; a process
killed by a signal writes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

_SITECUSTOMIZE = """
import atexit, gc, os, sys

def _report():
    base = os.environ["MODULES_REPORT_DIR"]
    # The threshold first: the modules file is what a test waits for.
    with open(os.path.join(base, "..", "gc", str(os.getpid())), "w") as f:
        f.write(str(gc.get_threshold()[0]))
    with open(os.path.join(base, str(os.getpid())), "w") as f:
        f.write("\\n".join(sorted(sys.modules)))

atexit.register(_report)
"""


class ModulesReport:
    def __init__(self, base: Path) -> None:
        self.site = base / "site"
        self.reports = base / "reports"
        self.gc = base / "gc"
        self.site.mkdir(parents=True)
        self.reports.mkdir()
        self.gc.mkdir()
        (self.site / "sitecustomize.py").write_text(_SITECUSTOMIZE)

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.site), "MODULES_REPORT_DIR": str(self.reports)}

    def modules(self) -> dict[int, set[str]]:
        """By pid: the modules each process that exited had imported."""
        return {int(p.name): set(p.read_text().split()) for p in self.reports.iterdir()}

    def gc_thresholds(self) -> dict[int, int]:
        """By pid: the first threshold of the cyclic GC each process exited with."""
        return {int(p.name): int(p.read_text()) for p in self.gc.iterdir()}


def top_level(modules: set[str], names: tuple[str, ...]) -> set[str]:
    """The top-level packages of ``names`` that ``modules`` contains."""
    return {name.split(".")[0] for name in modules} & set(names)
