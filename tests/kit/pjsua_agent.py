"""A pjsua2 user agent in a child process: a real SIP phone for end-to-end tests.

pjsua2 (pjsip's own stack, not ours) registers with digest authentication,
sends and receives MESSAGE, is-composing, PUBLISH and SUBSCRIBE, exactly as
a softphone does.  pjsua2 is a per-process singleton that aborts on misuse,
so it runs in a child process driven by JSON lines:

    agent = PjsuaAgent.start()
    agent.account("sip:alice@sip.test", registrar="sip:127.0.0.1:5060",
                  username="alice", password="pw", proxy="sip:127.0.0.1:5060;lr")
    agent.wait_for(lambda e: e["event"] == "reg" and e["code"] == 200)
    agent.message("sip:bob@localhost", "hello")
    agent.wait_for(lambda e: e["event"] == "im_status")
    agent.stop()

Events (dicts): ready, reg {code, reason, active, expires}, im {from, to,
body, content_type}, im_status {to, code, reason, body}, typing {from,
composing}, buddy {uri, status, activity, note, status_text, sub_state},
notify {uri, message} (a NOTIFY the buddy's subscription received, whole), error.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Self

EventPredicate = Callable[[dict[str, Any]], bool]


class PjsuaAgent:
    def __init__(self, process: subprocess.Popen[str], transport: str) -> None:
        self.process = process
        self.transport = transport
        self.events: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.wait_for(lambda e: e["event"] == "ready", timeout=30)["port"])

    @classmethod
    def start(cls, transport: str = "udp") -> PjsuaAgent:
        process = subprocess.Popen(  # our own module
            [sys.executable, "-m", "tests.kit.pjsua_agent", transport],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        return cls(process, transport)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(event)
            self._queue.put(event)

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def wait_for(self, predicate: EventPredicate, timeout: float = 30.0) -> dict[str, Any]:
        """The first event (already seen or new) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            with self._lock:
                events = self.events[seen:]
                seen = len(self.events)
            for event in events:
                if predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                with self._lock:
                    recent = self.events[-10:]
                raise TimeoutError(f"no matching pjsua2 event in {timeout}s; last: {recent}")
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=min(remaining, 0.5))

    def matching(self, predicate: EventPredicate) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if predicate(e)]

    # commands

    def account(
        self,
        id_uri: str,
        *,
        registrar: str | None = None,
        username: str = "",
        password: str = "",
        proxy: str | None = None,
        register: bool = True,
        publish: bool = False,
    ) -> None:
        self.send(
            cmd="account",
            id=id_uri,
            registrar=registrar,
            username=username,
            password=password,
            proxy=proxy,
            register=register,
            publish=publish,
        )

    def message(self, to: str, text: str, content_type: str = "text/plain") -> None:
        self.send(cmd="message", to=to, text=text, content_type=content_type)

    def typing(self, to: str, composing: bool) -> None:
        self.send(cmd="typing", to=to, composing=composing)

    def unregister(self) -> None:
        self.send(cmd="unregister")

    def publish(self, online: bool, activity: str = "unknown", note: str = "") -> None:
        self.send(cmd="publish", online=online, activity=activity, note=note)

    def subscribe(self, uri: str) -> None:
        self.send(cmd="subscribe", uri=uri)

    def unsubscribe(self, uri: str) -> None:
        self.send(cmd="unsubscribe", uri=uri)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send(cmd="quit")
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the child process ------------------------------------------------------------


def _child(transport_name: str) -> None:  # noqa: C901, PLR0915 - one event loop
    import pjsua2 as pj

    def emit(**event: object) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    activities = {
        "unknown": pj.PJRPID_ACTIVITY_UNKNOWN,
        "away": pj.PJRPID_ACTIVITY_AWAY,
        "busy": pj.PJRPID_ACTIVITY_BUSY,
    }
    activity_names = {v: k for k, v in activities.items()}
    status_names = {
        pj.PJSUA_BUDDY_STATUS_ONLINE: "online",
        pj.PJSUA_BUDDY_STATUS_OFFLINE: "offline",
        pj.PJSUA_BUDDY_STATUS_UNKNOWN: "unknown",
    }

    class Buddy(pj.Buddy):
        def onBuddyState(self) -> None:  # noqa: N802 - pjsua2's callback name
            info = self.getInfo()
            pres = info.presStatus
            emit(
                event="buddy",
                uri=info.uri,
                status=status_names.get(pres.status, str(pres.status)),
                activity=activity_names.get(pres.activity, str(pres.activity)),
                note=pres.note,
                status_text=pres.statusText,
                sub_state=info.subStateName,
                sub_term_reason=info.subTermReason,
            )

        def onBuddyEvSubState(self, prm: Any) -> None:  # noqa: N802
            # The whole NOTIFY body: pjsua2's buddy state shows the first tuple only.
            try:
                tsx = prm.e.body.tsxState
                if tsx.type != pj.PJSIP_EVENT_RX_MSG:
                    return
                whole = tsx.src.rdata.wholeMsg
            except (AttributeError, pj.Error):
                return
            if whole.startswith("NOTIFY "):
                emit(event="notify", uri=self.getInfo().uri, message=whole)

    class Account(pj.Account):
        def onRegState(self, prm: Any) -> None:  # noqa: N802
            info = self.getInfo()
            emit(
                event="reg",
                code=prm.code,
                reason=prm.reason,
                active=info.regIsActive,
                expires=prm.expiration,
            )

        def onInstantMessage(self, prm: Any) -> None:  # noqa: N802
            emit(
                event="im",
                **{"from": prm.fromUri},
                to=prm.toUri,
                body=prm.msgBody,
                content_type=prm.contentType,
            )

        def onInstantMessageStatus(self, prm: Any) -> None:  # noqa: N802
            emit(
                event="im_status", to=prm.toUri, code=prm.code, reason=prm.reason, body=prm.msgBody
            )

        def onTypingIndication(self, prm: Any) -> None:  # noqa: N802
            emit(event="typing", **{"from": prm.fromUri}, composing=prm.isTyping)

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0  # callbacks on this thread only
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    # UDP and TCP on one port, as phones do: pjsip (like RFC 3261 18.1.1)
    # moves requests over 1300 bytes to TCP, and so does the gateway.
    from tests.kit.ports import free_port

    port = free_port("both")
    tcfg = pj.TransportConfig()
    tcfg.boundAddress = "127.0.0.1"
    tcfg.port = port
    udp = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    tcp = ep.transportCreate(pj.PJSIP_TRANSPORT_TCP, tcfg)
    tid = tcp if transport_name == "tcp" else udp
    ep.libStart()
    emit(event="ready", port=port)

    account: Account | None = None
    buddies: dict[str, Buddy] = {}

    def buddy(uri: str, subscribe: bool = False) -> Buddy:
        if uri not in buddies:
            bcfg = pj.BuddyConfig()
            bcfg.uri = uri
            bcfg.subscribe = subscribe
            created = Buddy()
            created.create(account, bcfg)
            buddies[uri] = created
        return buddies[uri]

    def run(cmd: dict[str, Any]) -> bool:  # noqa: C901 - one branch per command
        nonlocal account
        name = cmd["cmd"]
        if name == "account":
            acfg = pj.AccountConfig()
            acfg.idUri = cmd["id"]
            acfg.sipConfig.transportId = tid
            if cmd.get("registrar"):
                acfg.regConfig.registrarUri = cmd["registrar"]
            acfg.regConfig.registerOnAdd = bool(cmd.get("register", True) and cmd.get("registrar"))
            acfg.regConfig.timeoutSec = 300
            if cmd.get("username"):
                acfg.sipConfig.authCreds.append(
                    pj.AuthCredInfo("digest", "*", cmd["username"], 0, cmd["password"])
                )
            if cmd.get("proxy"):
                acfg.sipConfig.proxies.append(cmd["proxy"])
            acfg.presConfig.publishEnabled = bool(cmd.get("publish"))
            account = Account()
            account.create(acfg)
        elif name == "message":
            prm = pj.SendInstantMessageParam()
            prm.content = cmd["text"]
            prm.contentType = cmd.get("content_type", "text/plain")
            buddy(cmd["to"]).sendInstantMessage(prm)
        elif name == "typing":
            prm = pj.SendTypingIndicationParam()
            prm.isTyping = bool(cmd["composing"])
            buddy(cmd["to"]).sendTypingIndication(prm)
        elif name == "unregister":
            assert account is not None
            account.setRegistration(False)
        elif name == "publish":
            assert account is not None
            status = pj.PresenceStatus()
            status.status = (
                pj.PJSUA_BUDDY_STATUS_ONLINE if cmd["online"] else pj.PJSUA_BUDDY_STATUS_OFFLINE
            )
            status.activity = activities[cmd.get("activity", "unknown")]
            status.note = cmd.get("note", "")
            account.setOnlineStatus(status)
        elif name == "subscribe":
            buddy(cmd["uri"], subscribe=True).subscribePresence(True)
        elif name == "unsubscribe" and cmd["uri"] in buddies:
            buddies[cmd["uri"]].subscribePresence(False)
        return name != "quit"

    # stdin is read by a thread (several commands may arrive in one read);
    # every pjsua2 call stays on this thread.
    commands: queue.Queue[str | None] = queue.Queue()

    def read_commands() -> None:
        for line in sys.stdin:
            commands.put(line)
        commands.put(None)

    threading.Thread(target=read_commands, daemon=True).start()
    running = True
    while running:
        ep.libHandleEvents(10)
        try:
            line = commands.get_nowait()
        except queue.Empty:
            continue
        if line is None:
            break
        try:
            running = run(json.loads(line))
        except pj.Error as exc:
            emit(event="error", message=exc.info())
    buddies.clear()
    if account is not None:
        account.shutdown()
    ep.libDestroy()


if __name__ == "__main__":
    _child(sys.argv[1] if len(sys.argv) > 1 else "udp")
