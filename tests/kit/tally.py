"""Exact counts of what a fault test sent and what arrived.

Every fault case keeps one :class:`Tally` per direction: each message id is
recorded when it is sent, when the gateway accepted it (202, or the external
server took it), and every time it is delivered.  ``lost`` is what was
accepted and never delivered; ``duplicated`` counts extra deliveries
(at-least-once allows them, the report shows them); ``reordered`` counts
messages first delivered after one that was sent later.  The tallies of a run are
printed in pytest's terminal summary (see tests/conftest.py), so CI logs carry
the numbers, not just a pass.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

#: Lines printed at the end of the pytest run (fault tallies, fuzz counts).
REPORT: list[str] = []
_report_lock = threading.Lock()


def report(line: str) -> None:
    with _report_lock:
        REPORT.append(line)


@dataclass
class Tally:
    """Counts for one direction of one fault case; thread-safe."""

    case: str
    sent: list[str] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    delivered: Counter[str] = field(default_factory=Counter)
    first_deliveries: list[str] = field(default_factory=list)
    conversation: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send(self, msg_id: str, conversation: str = "") -> None:
        """``conversation`` (e.g. the sending user) scopes the order check."""
        with self._lock:
            self.sent.append(msg_id)
            self.conversation[msg_id] = conversation

    def accept(self, msg_id: str) -> None:
        with self._lock:
            self.accepted.add(msg_id)

    def refuse(self, msg_id: str) -> None:
        """The gateway said no (a 4xx/5xx): the sender knows, so it is not lost."""
        with self._lock:
            self.refused.add(msg_id)

    def deliver(self, msg_id: str) -> None:
        with self._lock:
            if msg_id not in self.delivered:
                self.first_deliveries.append(msg_id)
            self.delivered[msg_id] += 1

    @property
    def duplicated(self) -> int:
        with self._lock:
            return sum(n - 1 for n in self.delivered.values() if n > 1)

    @property
    def reordered(self) -> int:
        """Messages first delivered after a message sent later in the same conversation."""
        with self._lock:
            position = {msg_id: n for n, msg_id in enumerate(self.sent)}
            latest: dict[str, int] = {}
            count = 0
            for msg_id in self.first_deliveries:
                n, talk = position.get(msg_id, -1), self.conversation.get(msg_id, "")
                if n < latest.get(talk, -1):
                    count += 1
                latest[talk] = max(latest.get(talk, -1), n)
            return count

    @property
    def lost(self) -> list[str]:
        with self._lock:
            return sorted(self.accepted - set(self.delivered))

    @property
    def unexpected(self) -> list[str]:
        """Delivered but never sent (or delivered though refused): a bug too."""
        with self._lock:
            return sorted(set(self.delivered) - (set(self.sent) - self.refused))

    def missing(self) -> list[str]:
        """Accepted, not yet delivered: what a test waits on."""
        return self.lost

    def line(self) -> str:
        return (
            f"{self.case:<44} sent {len(self.sent):>5}  accepted {len(self.accepted):>5}  "
            f"refused {len(self.refused):>4}  delivered {len(self.delivered):>5}  "
            f"duplicated {self.duplicated:>3}  reordered {self.reordered:>3}  "
            f"lost {len(self.lost):>3}"
        )

    def check(self, *, ordered: bool = False) -> None:
        """Report the counts, then fail on any loss or stray delivery (or reordering)."""
        report(self.line())
        lost, unexpected = self.lost, self.unexpected
        if ordered:
            assert not self.reordered, (
                f"{self.case}: {self.reordered} messages overtaken by later ones: "
                f"sent {self.sent}, first delivered {self.first_deliveries}"
            )
        assert not lost, f"{self.case}: {len(lost)} accepted messages lost: {lost[:10]}"
        assert not unexpected, f"{self.case}: delivered but never sent/accepted: {unexpected[:10]}"
