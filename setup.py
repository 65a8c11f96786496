"""purplegw: a SIP <-> instant-messaging and presence gateway."""

import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent

# The SIP core's per-request path (parse, headers, URIs, transactions,
# responses) and the SIP front that drives it, compiled to C with mypyc: the
# same typed source, about 0.6x the CPU per request of the interpreted modules
# (docs/sip-front.md, "The compiled SIP core").  PURPLEGW_COMPILE=auto (the
# default) compiles when mypyc, a C compiler and Python's headers are there and
# installs the pure-Python modules otherwise; 1 requires the compiled build, 0
# skips it.  The modules must stay mypyc-clean: no class of theirs subclassed
# by an interpreted one, no ``cls.__new__``, no attributes their classes do not
# declare, no methods replaced on an instance (tests/test_compiled.py).
COMPILED = [
    "purplegw/sip/_abnf.py",
    "purplegw/sip/actions.py",
    "purplegw/sip/headers.py",
    "purplegw/sip/message.py",
    "purplegw/sip/parser.py",
    "purplegw/sip/rport.py",
    "purplegw/sip/transaction.py",
    "purplegw/sip/uri.py",
    "purplegw/actors/front/front.py",
    "purplegw/actors/front/timers.py",
    "purplegw/actors/front/transport.py",
]
COMPILE = os.environ.get("PURPLEGW_COMPILE", "auto").strip().lower()
REQUIRED = COMPILE in {"1", "yes", "true"}


def compiled_extensions() -> list:
    """mypyc's extensions for ``COMPILED``, or none (a pure-Python install)."""
    if COMPILE in {"0", "no", "false"}:
        return []
    missing = []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 - only when compiling
    except ImportError:
        missing.append("mypyc (pip install mypy)")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        missing.append("Python's C headers (Debian: python3-dev)")
    compiler = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(compiler.split()[0]) is None:
        missing.append(f"a C compiler ({compiler.split()[0]})")
    if missing:
        if REQUIRED:
            sys.exit(f"PURPLEGW_COMPILE=1 but missing: {', '.join(missing)}")
        print(  # noqa: T201 - setup.py talks to the person installing
            f"purplegw: installing the pure-Python SIP core (missing {', '.join(missing)})",
            file=sys.stderr,
        )
        return []
    try:
        # The build environment holds mypy alone, not the package's dependencies
        # (prometheus_client, cryptography, ...) that modules the front imports
        # use: mypyc type-checks only what it compiles, strictly, and takes what
        # it cannot see as Any.  `make lint` checks the whole package with them.
        return mypycify(
            ["--follow-imports=silent", "--ignore-missing-imports", *COMPILED],
            opt_level="3",
            group_name="purplegw_sipcore",
        )
    except (Exception, SystemExit) as exc:  # mypyc's type check failed: install pure in auto
        if REQUIRED:
            raise
        print(  # noqa: T201
            f"purplegw: mypyc refused the SIP core ({exc}); installing pure Python",
            file=sys.stderr,
        )
        return []


class BuildExt(build_ext):
    """In ``auto`` mode a failed compile leaves the pure-Python modules installed."""

    failed = False  # read by BdistWheel: nothing compiled, so the wheel is pure

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler failure means "install pure"
            if REQUIRED:
                raise
            self.failed = True
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            print(  # noqa: T201
                f"purplegw: compiling the SIP core failed ({exc}); installing pure Python",
                file=sys.stderr,
            )


try:  # setuptools >= 70.1 carries bdist_wheel; before, the wheel package did
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:
    from wheel.bdist_wheel import bdist_wheel


class BdistWheel(bdist_wheel):
    """A wheel whose compile failed in ``auto`` mode is tagged pure, as its contents are.

    bdist_wheel decides purity from ``ext_modules`` before anything is built,
    so a machine without a working compiler would otherwise tag a wheel that
    holds no ``.so`` ``cp311-linux_x86_64`` and keep it off every other
    platform.  The tag is taken after the build, so the decision can wait.
    """

    def get_tag(self) -> tuple[str, str, str]:
        if self.distribution.get_command_obj("build_ext").failed:
            self.root_is_pure = True
        return super().get_tag()


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
    ext_modules=compiled_extensions(),
    cmdclass={"build_ext": BuildExt, "bdist_wheel": BdistWheel},
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
