"""The SIP core both ways it installs: compiled by mypyc, or pure Python.

``make test`` builds the test virtualenv with PURPLEGW_COMPILE=1, so the whole
suite runs the compiled modules of setup.py's COMPILED, as a normal install on a
machine with a C compiler does.  An install without one gets the same sources
interpreted: the tests here keep that fallback honest.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.compiled import compiled_modules, stale_compiled_modules

REPO = Path(__file__).resolve().parents[1]


def compiled_list() -> list[str]:
    """setup.py's COMPILED, read from its source (running setup.py would build)."""
    for node in ast.walk(ast.parse((REPO / "setup.py").read_text())):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            return sorted(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no COMPILED list")


def test_compiled_modules_in_the_tree_are_the_listed_ones() -> None:
    # A module dropped from COMPILED must not leave an extension that shadows its source.
    found = sorted(str(source.relative_to(REPO)) for source in compiled_modules().values())
    if not found:
        pytest.skip("pure-Python install (PURPLEGW_COMPILE=0 or no C compiler)")
    assert found == compiled_list()
    assert stale_compiled_modules() == []


def test_staleness_is_seen(tmp_path: Path) -> None:
    package = tmp_path / "purplegw" / "sip"
    package.mkdir(parents=True)
    source = package / "parser.py"
    extension = package / "parser.cpython-311-x86_64-linux-gnu.so"
    source.write_text("")
    extension.write_bytes(b"")
    os.utime(source, (1_000, 1_000))
    os.utime(extension, (2_000, 2_000))
    assert stale_compiled_modules(tmp_path) == []
    os.utime(source, (3_000, 3_000))  # edited after the build
    assert stale_compiled_modules(tmp_path) == ["purplegw/sip/parser.py"]
    source.unlink()
    assert stale_compiled_modules(tmp_path) == ["purplegw/sip/parser.py"]


@pytest.mark.slow
def test_the_pure_python_sip_core_passes_the_sip_tests(tmp_path: Path) -> None:
    """The package and tests copied without extension modules: tests/sip on the sources."""
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "*.pyc")
    shutil.copytree(REPO / "purplegw", tmp_path / "purplegw", ignore=ignore)
    shutil.copytree(REPO / "tests", tmp_path / "tests", ignore=ignore)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    # python -m puts the working directory first: the copy, not the editable install
    where = subprocess.run(
        [sys.executable, "-c", "import purplegw.sip.parser as p; print(p.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where == str(tmp_path / "purplegw" / "sip" / "parser.py")
    # the tests of the compiled modules; not the hypothesis runs, the mypy check
    # or the PIDF documents, which cost most of the time and test no compiled code
    skip = ("tests/sip/test_fuzz.py", "tests/sip/test_typing.py", "tests/sip/presence")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/sip"),
            *(f"--ignore={path}" for path in skip),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
