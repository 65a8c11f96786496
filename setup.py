"""purplegw: a SIP <-> instant-messaging and presence gateway."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "purplegw" / "__init__.py").read_text(), re.MULTILINE
).group(1)

setup(
    name="purplegw",
    version=VERSION,
    description=(
        "SIP <-> instant messaging and presence gateway (successor of Kamailio's purple module)"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-2.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["purplegw", "purplegw.*"]),
    # Everything the gateway reads at run time is package data, so that a
    # wheel or sdist install runs without the source tree (scripts/check-wheel.sh).
    # MANIFEST.in lists the same files for the sdist, plus etc/, docs/ and tests/.
    include_package_data=True,
    package_data={
        "purplegw": ["py.typed", "config/default.toml", "protocols/*/defaults.toml"],
    },
    install_requires=[
        "click>=8.1",
        # pykka's private runtime hooks are used by the actor runtime: pin the
        # minor version so an upgrade fails loudly in the test suite, not in prod.
        "pykka>=4.5,<4.6",
        "slixmpp>=1.17,<1.18",
        # DNS SRV (_xmpp-client._tcp) lookups for XMPP domains; slixmpp uses it when installed.
        "aiodns>=4.0",
        "PyMySQL>=1.1",
        "cryptography>=41",
        "tomli-w>=1.0",  # `purplegw config check` prints TOML
        # HTTP CONNECT proxy tunnels for outgoing IM connections (asyncio).
        "python-socks>=2.4",
        # PIDF bodies come from untrusted peers: entity-expansion bombs must be refused.
        "defusedxml>=0.7",
        "prometheus_client>=0.20,<1",  # [metrics]: start_http_server returns (server, thread)
        # Matrix adapter (asyncio client, 429 retry, proxy via python-socks)
        "matrix-nio>=0.26,<0.27",
    ],
    extras_require={
        # Only for bench/accounts.py's gevent runtime comparison.
        "bench": ["gevent>=26.9", "asyncio-gevent>=0.2.5"],
        # Coverage-guided long fuzz runs (make fuzz); the CI fuzz test needs only the stdlib.
        # Not in "test": atheris ships wheels for few platforms and builds from source with clang.
        "fuzz": ["atheris>=2.3"],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "pjsua2-python>=2.15",
            "mypy>=1.10",
            # defusedxml ships no annotations; purplegw/sip/presence is checked strictly.
            "types-defusedxml>=0.7",
            # PyMySQL ships no annotations; purplegw/store/mysql.py is checked strictly.
            "types-PyMySQL>=1.1",
            # make lint: pinned, because every ruff release adds rules and the
            # tree is kept at zero findings under select = ["ALL"].
            "ruff==0.17.6",
        ],
    },
    entry_points={
        "console_scripts": ["purplegw=purplegw.cli:main"],
        "purplegw.protocols": [
            "dummy=purplegw.protocols.dummy:Adapter",
            "xmpp=purplegw.protocols.xmpp:Adapter",
            "irc=purplegw.protocols.irc:Adapter",
            "matrix=purplegw.protocols.matrix:Adapter",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Communications :: Internet Phone",
        "Topic :: Communications :: Chat",
    ],
)
