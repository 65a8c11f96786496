"""10 kB UTF-8 bodies both ways with sipp (an independent SIP implementation) over TCP.

pjsip reads at most 4000 bytes per message, so large bodies are checked with
sipp: as a trusted proxy's client sending a 10 kB MESSAGE to an XMPP contact,
and as the outbound proxy receiving the contact's 10 kB answer.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.ports import free_port
from tests.kit.sipp import sipp_binary
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from pathlib import Path

BODY = ("Grüße, 你好, ✓ — " * 400)[:5000].strip()  # about 10 kB of UTF-8

UAC = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="10 kB MESSAGE">
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

{body}
    ]]>
  </send>
  <recv response="202"/>
</scenario>
"""

UAS = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="receive a MESSAGE">
  <recv request="MESSAGE">
    <action>
      <ereg regexp=";proto=xmpp" search_in="hdr" header="From:" check_it="true" assign_to="1"/>
      <log message="From carries [$1]"/>
    </action>
  </recv>
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


def test_ten_kilobytes_both_ways(prosody: Any, tmp_path: Path) -> None:
    if sipp_binary() is None:
        missing_peer("sipp", "sip-tester")
    account = prosody.create_user("bigalice")
    bob = prosody.create_user("bigbob")
    uas_port = free_port("both")
    gateway = GatewayProcess(
        tmp_path,
        extra_config=prosody.gateway_section(),
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
    peer = XmppPeer(bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    uas = None
    try:
        gateway.wait_accounts("connected")
        peer.start()
        # SIP -> XMPP
        (tmp_path / "uac.xml").write_text(UAC.format(contact=bob.jid, body=BODY), "utf-8")
        uac = subprocess.run(
            [
                sipp_binary(),
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
        assert uac.returncode == 0, (uac.stdout[-2000:], gateway.log_text())
        got = peer.wait_for(lambda e: e.kind == "message" and e.body is not None)
        assert got.body.rstrip("\r\n") == BODY  # sipp ends its body with a line break

        # XMPP -> SIP, through the outbound proxy (sipp as the UAS)
        (tmp_path / "uas.xml").write_text(UAS, "utf-8")
        uas = subprocess.Popen(
            [
                sipp_binary(),
                "-sf",
                str(tmp_path / "uas.xml"),
                "-t",
                "t1",
                "-i",
                "127.0.0.1",
                "-p",
                str(uas_port),
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "60s",
                "-timeout_error",
                "-trace_msg",
                "-message_file",
                str(tmp_path / "uas_msgs.log"),
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        peer.send_message(account.jid, BODY)
        assert uas.wait(60) == 0, gateway.log_text()[-1500:]
        trace = (tmp_path / "uas_msgs.log").read_text("utf-8", errors="replace")
        assert BODY in trace
        assert "sip:alice@sip.test;proto=xmpp" in trace
    finally:
        if uas is not None and uas.poll() is None:
            uas.kill()
        peer.stop()
        assert gateway.stop() == 0
