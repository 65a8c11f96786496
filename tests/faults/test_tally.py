"""The fault suite's counting: a wrong count would hide a loss."""

from __future__ import annotations

import pytest

from tests.kit import tally as tally_module
from tests.kit.tally import Tally


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """These made-up cases stay out of the run's summary of real tallies."""
    monkeypatch.setattr(tally_module, "report", lambda line: None)


def tally_of(sent: str, accepted: str, delivered: str, refused: str = "") -> Tally:
    tally = Tally("case")
    for msg_id in sent:
        tally.send(msg_id)
    for msg_id in accepted:
        tally.accept(msg_id)
    for msg_id in refused:
        tally.refuse(msg_id)
    for msg_id in delivered:
        tally.deliver(msg_id)
    return tally


def test_counts_duplicates_reordering_and_losses() -> None:
    tally = tally_of("abcde", "abcd", "bacdd", refused="e")
    assert (tally.duplicated, tally.reordered, tally.lost, tally.unexpected) == (1, 1, [], [])
    tally.check()  # nothing lost: passes although reordered and duplicated
    with pytest.raises(AssertionError, match="overtaken"):
        tally.check(ordered=True)


def test_order_is_judged_within_a_conversation_only() -> None:
    tally = Tally("case")
    for msg_id, talk in (("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")):
        tally.send(msg_id, conversation=talk)
        tally.accept(msg_id)
    for msg_id in ("b1", "b2", "a1", "a2"):  # b overtakes a: another conversation
        tally.deliver(msg_id)
    assert tally.reordered == 0
    tally.deliver("a2")  # a duplicate is not a reordering
    assert tally.reordered == 0


def test_an_accepted_message_never_delivered_is_lost() -> None:
    tally = tally_of("abc", "abc", "ac")
    assert tally.lost == ["b"]
    with pytest.raises(AssertionError, match="1 accepted messages lost"):
        tally.check()


def test_a_delivery_of_a_refused_or_unknown_message_is_a_failure() -> None:
    tally = tally_of("ab", "a", "abz", refused="b")
    assert tally.unexpected == ["b", "z"]
    with pytest.raises(AssertionError, match="never sent/accepted"):
        tally.check()
