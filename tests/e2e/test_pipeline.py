"""The message pipeline end to end: the `purplegw run` daemon, Prosody, XMPP
clients, and sipp (an independent SIP implementation) as the SIP side.

- A text over ``[messaging] max_text_bytes`` is refused 413 before any 202,
  and the sender's next message arrives.
- A message the SIP side refuses for good (403) goes to the dead letters at
  once, without holding back that conversation or another one; ``purplegw
  messages retry`` then makes the running daemon send it again.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.ports import free_port
from tests.kit.sipp import sipp_binary
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from pathlib import Path

UAC = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="too long, then fine">
  <send>
    <![CDATA[

      MESSAGE sip:{contact} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:alice@sip.test>;tag=[pid]T[call_number]
      To: <sip:{contact}>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Content-Type: text/plain;charset=UTF-8
      Content-Length: [len]

{long}
    ]]>
  </send>
  <recv response="413"/>
  <send>
    <![CDATA[

      MESSAGE sip:{contact} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:alice@sip.test>;tag=[pid]T[call_number]
      To: <sip:{contact}>
      Call-ID: [call_id]
      CSeq: 2 MESSAGE
      Content-Type: text/plain;charset=UTF-8
      Content-Length: [len]

short one after the long one
    ]]>
  </send>
  <recv response="202"/>
</scenario>
"""

# A phone that refuses any MESSAGE containing "poison" (403) and takes the others.
UAS_REFUSING = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="refuse poison">
  <recv request="MESSAGE">
    <action>
      <ereg regexp="poison" search_in="body" check_it="false" assign_to="1"/>
    </action>
  </recv>
  <nop next="refuse" test="1"/>
  <send next="end">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]R[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="refuse"/>
  <send>
    <![CDATA[

      SIP/2.0 403 Forbidden
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]R[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="end"/>
</scenario>
"""

UAS_TAKING = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="take a MESSAGE">
  <recv request="MESSAGE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]R[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


@pytest.fixture
def sipp() -> str:
    binary = sipp_binary()
    if binary is None:
        missing_peer("sipp", "sip-tester")
    return str(binary)


def _deploy(
    prosody: Any,
    tmp_path: Path,
    uas_port: int,
    messaging: str,
) -> tuple[GatewayProcess, Any]:
    tag = tmp_path.name[-8:].replace("_", "").lower()
    account = prosody.create_user(f"pipealice{tag}")
    gateway = GatewayProcess(
        tmp_path,
        extra_config=prosody.gateway_section() + "\n[messaging]\n" + messaging,
        sip={
            "trusted": ["127.0.0.1/32"],
            "outbound_proxy": f"sip:127.0.0.1:{uas_port};transport=tcp",
        },
    )
    gateway.cli("db", "init")
    gateway.cli(
        "accounts",
        "add",
        "alice@sip.test",
        account.jid,
        "xmpp",
        "--password-stdin",
        stdin=account.password + "\n",
    )
    gateway.start()
    return gateway, account


def _peer(prosody: Any, name: str) -> XmppPeer:
    user = prosody.create_user(name)
    return XmppPeer(
        user.jid, user.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file
    ).start()


def _bare(peer: XmppPeer) -> str:
    return peer.jid.partition("/")[0]


def _uas(
    sipp: str, tmp_path: Path, scenario: str, *, port: int, calls: int, name: str
) -> subprocess.Popen[bytes]:
    """sipp as the phone behind the outbound proxy, once it accepts connections."""
    (tmp_path / f"{name}.xml").write_text(scenario, "utf-8")
    process = subprocess.Popen(
        [
            sipp,
            "-sf",
            str(tmp_path / f"{name}.xml"),
            "-t",
            "t1",
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            str(calls),
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
            "-trace_msg",
            "-message_file",
            str(tmp_path / f"{name}.log"),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            assert time.monotonic() < deadline, "sipp does not listen"
            time.sleep(0.05)
        else:
            return process


def _bodies(log: Path) -> list[str]:
    """Bodies of the MESSAGEs a sipp UAS received, in arrival order."""
    out = []
    for block in log.read_text("utf-8", errors="replace").split("MESSAGE sip:")[1:]:
        body = block.split("\n\n", 1)[1] if "\n\n" in block else ""
        out.append(body.split("\n-----", 1)[0].strip())
    return out


def test_a_text_too_long_is_refused_413_and_the_next_one_arrives(
    prosody: Any,
    tmp_path: Path,
    sipp: str,
) -> None:
    gateway, _account = _deploy(prosody, tmp_path, free_port("both"), "max_text_bytes = 200\n")
    bob = None
    try:
        gateway.wait_accounts("connected")
        bob = _peer(prosody, f"pipebob{tmp_path.name[-8:].replace('_', '').lower()}")
        (tmp_path / "uac.xml").write_text(UAC.format(contact=_bare(bob), long="x" * 300), "utf-8")
        started = time.monotonic()
        uac = subprocess.run(
            [
                sipp,
                f"127.0.0.1:{gateway.port}",
                "-sf",
                str(tmp_path / "uac.xml"),
                "-t",
                "t1",
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port("both")),
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "30s",
                "-timeout_error",
            ],
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert uac.returncode == 0, (uac.stderr.decode()[-1500:], gateway.log_text()[-1500:])
        got = bob.wait_for(lambda e: e.kind == "message" and e.body is not None)
        assert got.body.strip() == "short one after the long one"
        assert time.monotonic() - started < 10
        assert not [e for e in bob.snapshot() if e.body and "xxxx" in e.body]
    finally:
        if bob is not None:
            bob.stop()
        assert gateway.stop() == 0


def test_a_refused_message_is_dead_lettered_without_blocking_and_retried_by_the_cli(
    prosody: Any,
    tmp_path: Path,
    sipp: str,
) -> None:
    uas_port = free_port("both")
    gateway, account = _deploy(prosody, tmp_path, uas_port, "retry_attempts = 3\n")
    tag = tmp_path.name[-8:].replace("_", "").lower()
    peers: list[XmppPeer] = []
    uas = None
    try:
        gateway.wait_accounts("connected")
        bob, carol = _peer(prosody, f"pbob{tag}"), _peer(prosody, f"pcarol{tag}")
        peers += [bob, carol]
        uas = _uas(sipp, tmp_path, UAS_REFUSING, port=uas_port, calls=3, name="refusing")
        bob.send_message(account.jid, "poison pill")
        letters = _wait_letters(gateway, 1)
        assert (letters[0]["status"], letters[0]["body"], letters[0]["contact"]) == (
            403,
            "poison pill",
            _bare(bob),
        )
        started = time.monotonic()
        bob.send_message(account.jid, "bob after")
        carol.send_message(account.jid, "carol meanwhile")
        assert uas.wait(30) == 0, gateway.log_text()[-3000:]
        assert time.monotonic() - started < 10
        bodies = _bodies(tmp_path / "refusing.log")
        assert bodies[0] == "poison pill"
        assert sorted(bodies[1:]) == ["bob after", "carol meanwhile"]

        uas = _uas(sipp, tmp_path, UAS_TAKING, port=uas_port, calls=1, name="taking")
        retried = gateway.cli("messages", "retry", str(letters[0]["id"]))
        assert "the running gateway was told to send it" in retried.stdout, retried
        assert uas.wait(30) == 0, gateway.log_text()[-3000:]
        assert _bodies(tmp_path / "taking.log") == ["poison pill"]
        assert _wait_letters(gateway, 0) == []
    finally:
        if uas is not None and uas.poll() is None:
            uas.kill()
        for peer in peers:
            peer.stop()
        assert gateway.stop() == 0


def _wait_letters(gateway: GatewayProcess, count: int, timeout: float = 15.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        letters = json.loads(gateway.cli("messages", "failed", "--json").stdout)
        if len(letters) == count or time.monotonic() > deadline:
            assert len(letters) == count, (letters, gateway.log_text()[-3000:])
            return letters
        time.sleep(0.2)
