"""What a test does when a real peer is not installed.

Under CI (the CI environment variable set) a missing server is a failure:
the suite promises to test against real peers, and a silent skip would
hide a broken install step.  On a developer machine it is a skip.
"""

from __future__ import annotations

import os

import pytest


def missing_peer(what: str, package: str) -> None:
    message = f"{what} is not installed (Debian package: {package}; `make test-deps` installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
