"""A pjsua2 user agent driven over stdin/stdout, for the PIDF interoperability tests.

Run as a child process (pjsua2's library is a per-process singleton and
aborts on misuse, so it stays out of the pytest process).  One account,
``sip:alice@127.0.0.1:<gateway port>`` with PUBLISH enabled, no registration.

Commands, one JSON object per line on stdin:
  {"cmd": "subscribe", "uri": "sip:bob@127.0.0.1:5070"}
  {"cmd": "publish", "online": true, "activity": "away"|"busy"|"unknown", "note": "..."}
  {"cmd": "quit"}
Events, one JSON object per line on stdout:
  {"event": "ready", "port": <pjsua2's UDP port>}
  {"event": "buddy", "status": "online"|"offline"|"unknown", "activity": ..., "note": ...,
   "status_text": ..., "sub_state": ...}
  {"event": "error", "message": ...}
"""

from __future__ import annotations

import json
import select
import sys

import pjsua2 as pj

ACTIVITIES = {
    "unknown": pj.PJRPID_ACTIVITY_UNKNOWN,
    "away": pj.PJRPID_ACTIVITY_AWAY,
    "busy": pj.PJRPID_ACTIVITY_BUSY,
}
ACTIVITY_NAMES = {v: k for k, v in ACTIVITIES.items()}
STATUS_NAMES = {
    pj.PJSUA_BUDDY_STATUS_ONLINE: "online",
    pj.PJSUA_BUDDY_STATUS_OFFLINE: "offline",
    pj.PJSUA_BUDDY_STATUS_UNKNOWN: "unknown",
}


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Buddy(pj.Buddy):
    def onBuddyState(self) -> None:  # noqa: N802 - pjsua2's callback name
        info = self.getInfo()
        pres = info.presStatus
        emit(
            event="buddy",
            status=STATUS_NAMES.get(pres.status, str(pres.status)),
            activity=ACTIVITY_NAMES.get(pres.activity, str(pres.activity)),
            note=pres.note,
            status_text=pres.statusText,
            sub_state=info.subStateName,
        )


def start_endpoint() -> tuple[pj.Endpoint, int, int]:
    """The pjsua2 library on 127.0.0.1: (endpoint, transport id, UDP port)."""
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    # Callbacks on this thread only: Python and pjsip worker threads do not mix well.
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.boundAddress = "127.0.0.1"
    tcfg.port = 0
    tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    port = int(ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])
    ep.libStart()
    return ep, tid, port


def run_command(cmd: dict[str, object], acc: pj.Account, buddies: list[Buddy]) -> bool:
    """Carry out one command; False once told to quit."""
    if cmd["cmd"] == "subscribe":
        bcfg = pj.BuddyConfig()
        bcfg.uri = str(cmd["uri"])
        bcfg.subscribe = True
        buddy = Buddy()
        buddy.create(acc, bcfg)
        buddies.append(buddy)
    elif cmd["cmd"] == "publish":
        status = pj.PresenceStatus()
        online = bool(cmd["online"])
        status.status = pj.PJSUA_BUDDY_STATUS_ONLINE if online else pj.PJSUA_BUDDY_STATUS_OFFLINE
        status.activity = ACTIVITIES[str(cmd.get("activity", "unknown"))]
        status.note = str(cmd.get("note", ""))
        acc.setOnlineStatus(status)
    return cmd["cmd"] != "quit"


def main() -> None:
    gateway_port = int(sys.argv[1])
    ep, tid, port = start_endpoint()
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:alice@127.0.0.1:{gateway_port}"
    acfg.presConfig.publishEnabled = True
    acfg.sipConfig.transportId = tid
    acc = pj.Account()
    acc.create(acfg)
    buddies: list[Buddy] = []
    emit(event="ready", port=port)
    running = True
    while running:
        ep.libHandleEvents(20)
        readable, _, _ = select.select([sys.stdin], [], [], 0)
        if not readable:
            continue
        line = sys.stdin.readline()
        if not line:
            break
        try:
            running = run_command(json.loads(line), acc, buddies)
        except pj.Error as exc:
            emit(event="error", message=exc.info())
    buddies.clear()
    acc.shutdown()
    ep.libDestroy()


if __name__ == "__main__":
    main()
