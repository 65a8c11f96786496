"""The fuzz harness itself: it finds planted bugs, saves and replays them, and is deterministic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from purplegw.sip import dialog as dialog_module
from purplegw.sip import digest as digest_module
from purplegw.sip import registrar as registrar_module
from purplegw.sip import subscription as subscription_module
from purplegw.sip import transaction as transaction_module
from purplegw.sip.errors import SipError
from purplegw.sip.parser import parse_datagram
from purplegw.sip.publication import PublicationStore
from tests.kit.fuzz import TARGETS, Target, fuzz, parser_targets
from tests.kit.fuzz.__main__ import main
from tests.kit.fuzz.draw import Draw
from tests.kit.fuzz.mutate import mutate

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from purplegw.sip.message import Message

# a planted bug must be found well within this; the run stops at the first crash
BUDGET = 20.0


def find_crash(target: Target, tmp_path: Path) -> str:
    result = fuzz(target, seconds=BUDGET, seed=1, crash_dir=tmp_path, max_crashes=1)
    assert result.crashes, f"planted bug not found in {result.inputs} inputs"
    crash = result.crashes[0]
    assert crash.path is not None
    assert crash.path.read_bytes() == crash.data
    assert crash.path.with_suffix(".txt").exists()
    return crash.message()


def test_every_target_passes_its_seeds() -> None:
    for target in TARGETS.values():
        for seed in target.seeds():
            target.run(seed, None)


def test_draw_reads_past_the_end_as_zero() -> None:
    d = Draw(b"\x05")
    assert d.int(0, 9) == 5
    assert d.exhausted
    assert (d.int(3, 9), d.bool(), d.choice("xyz"), d.bytes(4)) == (3, False, "x", b"")


def test_mutation_is_a_function_of_the_seed() -> None:
    import random

    seed = parser_targets.corpus_messages()[0]
    a = [mutate(random.Random(7), seed, [seed]) for _ in range(20)]  # noqa: S311
    b = [mutate(random.Random(7), seed, [seed]) for _ in range(20)]  # noqa: S311
    assert a == b
    assert any(m != seed for m in a)


def test_parser_crash_other_than_sip_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(data: bytes, **limits: int) -> Message:
        head = data.split(b"\r\n\r\n", 1)[0]
        if b"\x00" in head and b"CSeq" in head:
            raise IndexError("planted")
        return parse_datagram(data, **limits)

    monkeypatch.setattr(parser_targets, "parse_datagram", buggy)
    message = find_crash(TARGETS["parser-datagram"], tmp_path)
    assert "IndexError: planted" in message


def test_parser_round_trip_break(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = parser_targets.serialize

    def lossy(msg: Message) -> bytes:  # drops a folded continuation's worth of header
        return real(msg).replace(b"Subject", b"Subjec", 1)

    monkeypatch.setattr(parser_targets, "serialize", lossy)
    assert "headers changed" in find_crash(TARGETS["parser-datagram"], tmp_path)


def test_second_final_response(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = transaction_module.COMPLETED
    monkeypatch.setitem(transaction_module.SERVER_TRANSITIONS, (done, "send_final"), done)
    message = find_crash(TARGETS["transaction-layer"], tmp_path)
    assert "send_response" in message  # the op trace names the operations


def test_notify_after_termination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = subscription_module.TERMINATED
    monkeypatch.setitem(subscription_module.TRANSITIONS, (gone, "notify"), gone)
    # the dialog underneath refuses to build it, which the model did not allow either
    assert "notify refused in terminated" in find_crash(TARGETS["subscription"], tmp_path)


def test_expiry_not_clamped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = subscription_module.Subscription._granted

    def unclamped(self: subscription_module.Subscription, request: object) -> object:
        granted = real(self, request)  # type: ignore[arg-type]
        return granted * 2 if isinstance(granted, int) else granted

    monkeypatch.setattr(subscription_module.Subscription, "_granted", unclamped)
    assert "granted Expires" in find_crash(TARGETS["subscription"], tmp_path)


def test_terminated_dialog_accepting_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = dialog_module.DialogState.TERMINATED
    monkeypatch.setitem(dialog_module.TRANSITIONS, (state, "request"), state)
    assert "terminated dialog" in find_crash(TARGETS["dialog"], tmp_path)


def test_reused_entity_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PublicationStore, "_new_etag", lambda _self: "same")
    assert "reused" in find_crash(TARGETS["publication"], tmp_path)


def test_replay_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = subscription_module.TERMINATED
    monkeypatch.setitem(subscription_module.TRANSITIONS, (gone, "notify"), gone)
    result = fuzz(
        TARGETS["subscription"], seconds=BUDGET, seed=1, crash_dir=tmp_path, max_crashes=1
    )
    path = result.crashes[0].path
    assert path is not None
    assert main(["--replay", str(path)]) == 1
    out = capsys.readouterr().out
    assert "SUBSCRIBE" in out
    assert "FuzzFailure" in out
    monkeypatch.undo()
    assert main(["--replay", str(path)]) == 0


def test_cli_random_engine_prints_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "--engine",
                "random",
                "--seconds",
                "0.5",
                "--seed",
                "3",
                "--work-dir",
                str(tmp_path),
                "publication",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "seed 3" in out
    assert "fuzz publication" in out
    assert "crashes 0" in out


def test_lenient_expires_parameter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the registrar as it was before fuzzing found it: int() on the parameter
    monkeypatch.setattr(registrar_module, "parse_delta_seconds", _int_or_sip_error)
    assert "registrar crashed" in find_crash(TARGETS["registrar"], tmp_path)


def _int_or_sip_error(value: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise SipError("not a number") from exc


def test_strict_utf8_in_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the digest server as it was before fuzzing found it: a strict encode before hashing
    monkeypatch.setattr(
        digest_module,
        "_h",
        lambda algorithm, text: digest_module.ALGORITHMS[algorithm](text.encode()),
    )
    assert "UnicodeEncodeError" in find_crash(TARGETS["digest"], tmp_path)
