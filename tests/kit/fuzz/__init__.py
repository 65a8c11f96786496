"""Fuzz targets for the sans-IO SIP core, and the engines that drive them.

The same targets serve the bounded CI run (tests/fuzz/test_fuzz_run.py, the
seeded random engine in ``runner``) and the long run (``make fuzz``, through
``python -m tests.kit.fuzz``, coverage-guided with atheris when it is
installed).  ``TARGETS`` maps each target's name to its ``Target``.
"""

from __future__ import annotations

import logging

from .digest_targets import DIGEST
from .parser_targets import DATAGRAM, STREAM
from .registrar_targets import REGISTRAR
from .runner import Crash, RunResult, fuzz, replay
from .subscription_targets import DIALOG, PUBLICATION, SUBSCRIPTION
from .target import FuzzFailure, Target
from .transaction_targets import TRANSACTIONS

logger = logging.getLogger(__name__)

__all__ = ["TARGETS", "Crash", "FuzzFailure", "RunResult", "Target", "fuzz", "replay"]

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (DATAGRAM, STREAM, TRANSACTIONS, DIALOG, SUBSCRIPTION, PUBLICATION, REGISTRAR, DIGEST)
}
