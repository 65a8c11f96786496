"""What a fuzz target is: a function of bytes plus the seeds it starts from."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .mutate import SIP_DICTIONARY

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

__all__ = ["FuzzFailure", "Target", "Trace"]

Trace = list[str] | None


class FuzzFailure(AssertionError):  # noqa: N818 - it is an assertion, and reads as one
    """An invariant the SIP core claims did not hold (the target found a bug)."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise FuzzFailure(message)


@dataclass(frozen=True)
class Target:
    """``run(data, trace)`` returns an outcome signature or raises.

    Raising ``FuzzFailure`` (a broken invariant) or any exception that the SIP
    core does not document (anything but the allowed ``SipError`` cases the
    target itself absorbs) is a crash.  The signature is a short string that
    names what happened (e.g. the rejection reason); the random engine keeps
    inputs that produce a signature it has not seen, a cheap stand-in for
    coverage feedback.  ``trace``, when a list, receives one line per
    operation, so a failing op sequence can be printed readably.
    """

    name: str
    run: Callable[[bytes, Trace], str]
    seeds: Callable[[], list[bytes]]
    max_len: int = 8192
    dictionary: tuple[bytes, ...] = field(default=SIP_DICTIONARY)
