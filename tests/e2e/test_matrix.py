"""Messages end to end: a pjsua2 phone <-> purplegw daemon <-> Synapse <-> a Matrix user.

The gateway runs as the `purplegw run` daemon with one Matrix account;
the contact is an independent matrix-nio client logged in to the same
Synapse; the phone is pjsip's SIP stack.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.deployment import SIP_PASSWORD, phone
from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.synapse import MatrixPeer, Synapse, shared_synapse, synapse_python

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(180)

_names = itertools.count()


@pytest.fixture(scope="module")
def synapse() -> Synapse:
    if synapse_python() is None:
        missing_peer("Synapse", "matrix-synapse (PyPI, in .venv-synapse)")
    return shared_synapse()


@pytest.fixture
def setup(synapse: Synapse, tmp_path: Path) -> Iterator[dict[str, Any]]:
    n = next(_names)
    alice = synapse.create_user(f"e2ealice{n}")
    bob = synapse.create_user(f"e2ebob{n}")
    gateway = GatewayProcess(
        tmp_path,
        extra_config=(f'[protocols.matrix]\nhomeserver = "{synapse.base_url}"\nsync_timeout = 5\n'),
    )
    gateway.cli("db", "init")
    gateway.cli("users", "add", "alice@sip.test", "--password-stdin", stdin=SIP_PASSWORD + "\n")
    # The alias, as an account table written for the original module would have it.
    gateway.cli(
        "accounts",
        "add",
        "alice@sip.test",
        alice.user_id,
        "prpl-matrix",
        "--password-stdin",
        stdin=alice.password + "\n",
    )
    gateway.start()
    peer = MatrixPeer(synapse, bob)
    try:
        gateway.wait_accounts("connected")
        peer.start()
        yield {"gateway": gateway, "alice": alice, "bob": bob, "peer": peer}
    finally:
        peer.stop()
        code = gateway.stop()
        assert code == 0, gateway.log_text()


def test_phone_to_matrix_and_back(setup: dict[str, Any]) -> None:
    gateway, alice, bob, peer = (setup[k] for k in ("gateway", "alice", "bob", "peer"))
    with phone(gateway) as agent:
        text = "héllo ✓ from a SIP phone"
        agent.message(f"sip:{bob.localpart}@matrix.test;proto=matrix", text)
        status = agent.wait_for(lambda e: e["event"] == "im_status")
        assert status["code"] in (200, 202), (status, gateway.log_text()[-3000:])
        got = peer.wait_for(lambda e: e.kind == "message" and e.body == text, timeout=30)
        assert got.sender == alice.user_id

        reply = "ünïcödé reply ✓"
        peer.send(got.room_id, reply)
        im = agent.wait_for(lambda e: e["event"] == "im" and e["body"] == reply, timeout=30)
        assert f"sip:{bob.localpart}@matrix.test;proto=matrix" in im["from"]

        # The phone answers the URI it was given: same room.
        mark = peer.mark()
        agent.message(im["from"].strip("<>"), "answer ✓")
        again = peer.wait_for(
            lambda e: e.kind == "message" and e.body == "answer ✓", since=mark, timeout=30
        )
        assert again.room_id == got.room_id


def test_gateway_restart_keeps_the_device_and_replays_nothing(
    synapse: Synapse, setup: dict[str, Any]
) -> None:
    """The token, device and sync position are kept in the store across a restart."""
    gateway, alice, bob, peer = (setup[k] for k in ("gateway", "alice", "bob", "peer"))
    uri = f"sip:{bob.localpart}@matrix.test;proto=matrix"
    with phone(gateway) as agent:
        agent.message(uri, "first ✓")
        room_id = peer.wait_for(
            lambda e: e.kind == "message" and e.body == "first ✓", timeout=30
        ).room_id
        peer.send(room_id, "before the restart")
        agent.wait_for(
            lambda e: e["event"] == "im" and e["body"] == "before the restart", timeout=30
        )
    devices = synapse.user_devices(alice.user_id)
    assert gateway.stop() == 0
    peer.send(room_id, "while the gateway was down")
    gateway.start()
    gateway.wait_accounts("connected")
    with phone(gateway) as agent:
        agent.wait_for(
            lambda e: e["event"] == "im" and e["body"] == "while the gateway was down", timeout=60
        )
        agent.message(uri, "after the restart")
        peer.wait_for(lambda e: e.body == "after the restart", timeout=30)
        bodies = [e["body"] for e in agent.matching(lambda e: e["event"] == "im")]
    assert bodies == ["while the gateway was down"]
    assert synapse.user_devices(alice.user_id) == devices
