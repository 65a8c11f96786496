"""Peers that connect and then say nothing.

(a) A SIP user agent that registers and then never answers MESSAGE or
    NOTIFY: its transactions time out (timer F), its messages stay queued
    and arrive once it answers again, and a well-behaved phone of another
    user keeps exchanging messages at normal speed meanwhile.
(b) An XMPP server that accepts TCP and never writes a byte: that account's
    login times out (``[actors] login_timeout``), it backs off and retries,
    and accounts of other users on the real Prosody log in and exchange
    messages normally.
"""

from __future__ import annotations

import contextlib
import queue
import re
import socket
import statistics
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.deployment import SIP_PASSWORD
from tests.kit.gateway import GatewayProcess
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.raw_ua import md5
from tests.kit.tally import Tally, report
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

# The gateway's SIP T1 in the silent UA case: timer F (64*T1) holds each
# transaction to the silent peer 16 s instead of the default's 32 s.  What
# the case shows depends on the ratio of the times below to timer F, not on
# its length.
T1_MS = 250
TIMER_F = 64 * T1_MS / 1000
# Far beyond normal delivery (well under a second), far below the timer F /
# timer B (64*T1) a silent peer holds a transaction: a message that waited
# behind the silent peer's timer could not make it.
NOT_BLOCKED = TIMER_F / 2
LOGIN_TIMEOUT = 3.0
ATTEMPTS = 3  # logins seen on the silent server
# The good phone's rounds spread over most of the silent UA's open transactions.
ROUNDS, ROUND_EVERY = 6, 2.0
assert ROUNDS * ROUND_EVERY < TIMER_F
SILENT_DOMAIN = "silent.test"


def _wait(predicate: Callable[[], Any], timeout: float, what: str, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s\n{log()}")
        time.sleep(0.1)


def _gateway(
    prosody: Any,
    tmp_path: Path,
    users: dict[str, tuple[str, str]],
    *,
    actors: dict[str, Any] | None = None,
    xmpp: dict[str, Any] | None = None,
    sip: dict[str, Any] | None = None,
) -> GatewayProcess:
    """A daemon whose SIP ``users`` (local part -> XMPP JID, password) have one account each."""
    gateway = GatewayProcess(
        tmp_path, sip=sip, actors=actors, extra_config=prosody.gateway_section(**(xmpp or {}))
    )
    gateway.cli("db", "init")
    for user, (jid, password) in users.items():
        gateway.cli(
            "users", "add", f"{user}@sip.test", "--password-stdin", stdin=SIP_PASSWORD + "\n"
        )
        gateway.cli(
            "accounts",
            "add",
            f"{user}@sip.test",
            jid,
            "xmpp",
            "--password-stdin",
            stdin=password + "\n",
        )
    return gateway


def _xmpp_user(prosody: Any, name: str) -> tuple[str, str]:
    user = prosody.create_user(name)
    return user.jid, user.password


def _states(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    return {a["sip_user"]: a for a in gateway.status()}


def _phone(gateway: GatewayProcess, user: str) -> PjsuaAgent:
    agent = PjsuaAgent.start()
    agent.account(
        f"sip:{user}@sip.test",
        registrar=gateway.uri,
        username=user,
        password=SIP_PASSWORD,
        proxy=f"{gateway.uri};lr",
    )
    event = agent.wait_for(lambda e: e["event"] == "reg")
    assert event["code"] == 200, event
    return agent


class Exchange:
    """A phone of one SIP user and the XMPP user bob writing to each other, timed.

    The tallies are the case's, one per direction, shared by its exchanges.
    """

    def __init__(
        self, agent: PjsuaAgent, peer: XmppPeer, account_jid: str, to_sip: Tally, to_xmpp: Tally
    ) -> None:
        self.agent, self.peer, self.account_jid = agent, peer, account_jid
        self.to_sip, self.to_xmpp = to_sip, to_xmpp
        self.latencies: list[float] = []

    def round(self, label: str) -> None:
        body = f"xmpp->sip {label} {uuid.uuid4().hex}"
        self.to_sip.send(body, conversation=self.account_jid)
        start = time.monotonic()
        self.peer.send_message(self.account_jid, body)
        self.to_sip.accept(body)
        self.agent.wait_for(lambda e: e["event"] == "im" and e["body"] == body, timeout=NOT_BLOCKED)
        self.latencies.append(time.monotonic() - start)

        body = f"sip->xmpp {label} {uuid.uuid4().hex}"
        self.to_xmpp.send(body, conversation=self.account_jid)
        start = time.monotonic()
        self.agent.message(f"sip:{self.peer.jid.partition('/')[0]}", body)
        status = self.agent.wait_for(
            lambda e: e["event"] == "im_status" and e["body"] == body, timeout=NOT_BLOCKED
        )
        assert status["code"] == 202, status
        self.to_xmpp.accept(body)
        self.peer.wait_for(lambda e: e.kind == "message" and e.body == body, timeout=NOT_BLOCKED)
        self.latencies.append(time.monotonic() - start)

    def settle(self) -> None:
        """Count deliveries once, from everything both ends received."""
        for event in self.agent.matching(lambda e: e["event"] == "im"):
            if event["body"] in self.to_sip.sent:
                self.to_sip.deliver(event["body"])
        for event in self.peer.snapshot():
            if (
                event.kind == "message"
                and event.bare == self.account_jid
                and event.body in self.to_xmpp.sent
            ):
                self.to_xmpp.deliver(event.body)

    def summary(self) -> str:
        values = sorted(self.latencies)
        return (
            f"{len(values)} messages, latency median {statistics.median(values) * 1000:.0f} ms,"
            f" max {values[-1] * 1000:.0f} ms"
        )


# --- (a) a SIP user agent that never answers ------------------------------------------


class SilentUA:
    """A UDP user agent of our own: registers and subscribes, then answers nothing.

    A reader thread records every request the gateway sends (retransmissions
    included) and, once ``answering`` is set, answers each with 200.
    """

    def __init__(self, gateway: GatewayProcess, user: str) -> None:
        self.user, self.gateway = user, gateway
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answering = False
        self.requests: list[tuple[float, str]] = []
        self.answered: dict[str, str] = {}  # Call-ID -> body of each MESSAGE answered 200
        self._responses: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cseq = 0
        self._thread = threading.Thread(target=self._read, name="silent-ua", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                raw, sender = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            data = raw.decode(errors="replace")
            if data.startswith("SIP/2.0 "):
                self._responses.put(data)
                continue
            with self._lock:
                self.requests.append((time.monotonic(), data))
                if not self.answering:
                    continue
                if data.startswith("MESSAGE "):
                    self.answered.setdefault(_header(data, "call-id", "i"), _body(data))
            self.sock.sendto(_ok(data), sender)

    def answer_from_now_on(self) -> None:
        with self._lock:
            self.answering = True

    def received(self, method: str) -> list[tuple[float, str]]:
        with self._lock:
            return [(t, r) for t, r in self.requests if r.startswith(method + " ")]

    def transaction(
        self, method: str, ruri: str, to: str, extra: list[str] | None = None
    ) -> tuple[int, str]:
        """Send a request, answer one digest challenge; the final response."""
        call_id = uuid.uuid4().hex
        tag = uuid.uuid4().hex[:8]
        response = self._send(
            method, ruri, to, call_id=call_id, tag=tag, extra=extra or [], auth=None
        )
        status = _status(response)
        if status in (401, 407):
            nonce = re.search(r'nonce="([^"]+)"', response)
            assert nonce is not None, response
            ha1 = md5(f"{self.user}:sip.test:{SIP_PASSWORD}")
            ha2 = md5(f"{method}:{ruri}")
            digest = md5(f"{ha1}:{nonce.group(1)}:00000001:0a4f113b:auth:{ha2}")
            header = "Authorization" if status == 401 else "Proxy-Authorization"
            auth = (
                f'{header}: Digest username="{self.user}", realm="sip.test", '
                f'nonce="{nonce.group(1)}", uri="{ruri}", response="{digest}", '
                'algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b"'
            )
            response = self._send(
                method, ruri, to, call_id=call_id, tag=tag, extra=extra or [], auth=auth
            )
            status = _status(response)
        return status, response

    def _send(
        self,
        method: str,
        ruri: str,
        to: str,
        *,
        call_id: str,
        tag: str,
        extra: list[str],
        auth: str | None,
    ) -> str:
        self._cseq += 1
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@sip.test>;tag={tag}",
            f"To: <{to}>",
            f"Call-ID: {call_id}",
            f"CSeq: {self._cseq} {method}",
            f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>",
            *extra,
            *([auth] if auth else []),
            "Content-Length: 0",
            "",
            "",
        ]
        self.sock.sendto("\r\n".join(lines).encode(), ("127.0.0.1", self.gateway.port))
        deadline = time.monotonic() + 20
        while True:
            response = self._responses.get(timeout=max(0.1, deadline - time.monotonic()))
            if _header(response, "call-id", "i") == call_id and _status(response) >= 200:
                return response

    def register(self) -> None:
        status, response = self.transaction(
            "REGISTER", "sip:sip.test", f"sip:{self.user}@sip.test", ["Expires: 600"]
        )
        assert status == 200, response


def _status(response: str) -> int:
    return int(response.split(" ", 2)[1])


def _header(message: str, name: str, compact: str = "") -> str:
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() in (name, compact):
            return value.strip()
    return ""


def _body(message: str) -> str:
    return message.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in message else ""


def _ok(request: str) -> bytes:
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    keep = []
    for line in head:
        key = line.partition(":")[0].strip().lower()
        if key in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            keep.append(line)
        elif key in ("to", "t"):
            keep.append(line if ";tag=" in line else line + ";tag=silentua")
    return "\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0", "", ""]).encode()


@pytest.fixture
def bob(prosody: Any) -> Iterator[XmppPeer]:
    jid, password = _xmpp_user(prosody, f"bob{uuid.uuid4().hex[:8]}")
    peer = XmppPeer(jid, password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    peer.start()
    yield peer
    peer.stop()


def test_sip_ua_that_never_answers_message_or_notify(  # noqa: PLR0915 - one scenario
    prosody: Any,
    bob: XmppPeer,
    tmp_path: Path,
) -> None:
    peer = bob
    tag = uuid.uuid4().hex[:8]
    silent_account = _xmpp_user(prosody, f"silentsip{tag}")
    good_account = _xmpp_user(prosody, f"goodsip{tag}")
    silent_jid, good_jid = silent_account[0], good_account[0]
    gateway = _gateway(
        prosody,
        tmp_path,
        {"alice": silent_account, "carol": good_account},
        sip={"t1_ms": T1_MS},
    )
    to_sip = Tally("silent SIP UA: XMPP -> SIP")
    to_xmpp = Tally("silent SIP UA: SIP -> XMPP")
    queued: set[str] = set()  # the silent UA's share of to_sip
    gateway.start()
    silent: SilentUA | None = None
    try:
        gateway.wait_accounts("connected")
        with _phone(gateway, "carol") as carol:
            good = Exchange(carol, peer, good_jid, to_sip, to_xmpp)
            silent = SilentUA(gateway, "alice")
            silent.register()
            bob_uri = f"sip:{peer.jid.partition('/')[0]}"
            status, response = silent.transaction(
                "SUBSCRIBE",
                bob_uri,
                bob_uri,
                ["Event: presence", "Accept: application/pidf+xml", "Expires: 600"],
            )
            assert 200 <= status < 300, response
            for n in range(3):
                body = f"for the silent UA {n} {uuid.uuid4().hex}"
                to_sip.send(body)
                peer.send_message(silent_jid, body)
                to_sip.accept(body)
                queued.add(body)
            _wait(
                lambda: silent.received("MESSAGE") and silent.received("NOTIFY"),
                30,
                "MESSAGE and NOTIFY sent to the silent UA",
                gateway.log_text,
            )
            pending_since = time.monotonic()

            # While the silent UA holds a MESSAGE and a NOTIFY transaction open:
            for n in range(ROUNDS):
                time.sleep(max(0.0, pending_since + n * ROUND_EVERY - time.monotonic()))
                good.round(f"round {n}")
            busy = time.monotonic() - pending_since

            # Timer F fired for both (64*T1), nothing was answered.
            log = gateway.log
            timeout = _wait(
                lambda: re.search(
                    r"Message \d+ to alice@sip\.test not delivered "
                    r"\(([^)]*)\)",
                    log.read_text(errors="replace"),
                ),
                60,
                "the MESSAGE transaction to the silent UA timing out",
                gateway.log_text,
            )
            _wait(
                lambda: "timed out; subscription ended" in log.read_text(errors="replace"),
                60,
                "the NOTIFY transaction to the silent UA timing out",
                gateway.log_text,
            )
            timed_out_after = time.monotonic() - pending_since
            assert not silent.answered
            unanswered = (len(silent.received("MESSAGE")), len(silent.received("NOTIFY")))

            # It answers again (and refreshes its registration): the queue drains.
            silent.answer_from_now_on()
            silent.register()
            _wait(
                lambda: set(silent.answered.values()) >= queued,
                60,
                "the silent UA's queued messages after it answers",
                gateway.log_text,
            )
            for body in silent.answered.values():
                if body in to_sip.sent:
                    to_sip.deliver(body)
            good.settle()
            states = _states(gateway)
            assert all(a["state"] == "connected" for a in states.values()), states
            report(
                f"silent SIP UA: {unanswered[0]} MESSAGE and {unanswered[1]} NOTIFY sends "
                f"unanswered, timed out ({timeout.group(1)}) {timed_out_after:.0f}s after the "
                f"first; meanwhile the other phone: {good.summary()} over {busy:.0f}s"
            )
            assert max(good.latencies) < NOT_BLOCKED
    finally:
        if silent is not None:
            silent.close()
        code = gateway.stop()
        assert code == 0, gateway.log_text()
    to_sip.check()
    to_xmpp.check()


# --- (b) an XMPP server that accepts TCP and says nothing ----------------------------------


class SilentDomainFront:
    """The gateway's ``[protocols.xmpp] server``: a loopback listener of our own.

    ``server`` is one address for every XMPP account, so the silent server
    and the real one share it: a stream opened to ``silent_domain`` is
    accepted and then gets nothing, ever; any other stream is relayed byte
    for byte (TLS included) to Prosody.
    """

    def __init__(self, upstream: tuple[str, int], silent_domain: str) -> None:
        self.upstream, self.silent_domain = upstream, silent_domain
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.silent_opened: list[float] = []
        self.silent_closed: list[float] = []
        self.relayed = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="silent-front", daemon=True).start()

    def attempts(self) -> tuple[list[float], list[float]]:
        """When silent connections were opened, and when the gateway closed them."""
        with self._lock:
            return list(self.silent_opened), list(self.silent_closed)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        head = b""
        try:
            while not (match := re.search(rb"<stream:stream[^>]*\sto=['\"]([^'\"]+)['\"]", head)):
                chunk = conn.recv(4096)
                if not chunk or len(head) > 16384:
                    return
                head += chunk
            if match.group(1).decode() == self.silent_domain:
                with self._lock:
                    self.silent_opened.append(time.monotonic())
                while conn.recv(4096):  # read on, never write
                    pass
                with self._lock:
                    self.silent_closed.append(time.monotonic())
                return
            server = socket.create_connection(self.upstream, timeout=10)
            server.settimeout(None)
            with self._lock:
                self._sockets.append(server)
                self.relayed += 1
            server.sendall(head)
            threading.Thread(target=_pump, args=(server, conn), daemon=True).start()
            _pump(conn, server)
        except OSError:
            return


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_xmpp_server_that_accepts_and_says_nothing(  # noqa: C901, PLR0915 - one scenario
    prosody: Any,
    bob: XmppPeer,
    tmp_path: Path,
) -> None:
    peer = bob
    tag = uuid.uuid4().hex[:8]
    front = SilentDomainFront(("127.0.0.1", prosody.port), SILENT_DOMAIN)
    silent_jid = f"mute{tag}@{SILENT_DOMAIN}"
    others = {
        f"dan{tag}": _xmpp_user(prosody, f"dan{tag}"),
        f"erin{tag}": _xmpp_user(prosody, f"erin{tag}"),
    }
    gateway = _gateway(
        prosody,
        tmp_path,
        {"mute": (silent_jid, "never-checked"), **others},
        # a backoff long enough for `purplegw status` to catch it
        actors={"login_timeout": LOGIN_TIMEOUT, "backoff_initial": 1.0, "backoff_max": 4.0},
        xmpp={"server": front.address},
    )
    to_sip = Tally("silent XMPP server: XMPP -> SIP (other users)")
    to_xmpp = Tally("silent XMPP server: SIP -> XMPP (other users)")
    gateway.start()
    phones: list[PjsuaAgent] = []
    try:

        def others_connected() -> bool:
            try:
                states = _states(gateway)
            except RuntimeError:  # control socket not up yet
                return False
            return all(states.get(f"{u}@sip.test", {}).get("state") == "connected" for u in others)

        _wait(others_connected, 60, "the other accounts logging in", gateway.log_text)
        exchanges = []
        for user, (jid, _password) in others.items():
            phones.append(_phone(gateway, user))
            exchanges.append(Exchange(phones[-1], peer, jid, to_sip, to_xmpp))

        # The others keep talking while the silent account's logins are cut by
        # login_timeout, back off and are retried.
        # Rounds for as long as the attempts take, not a count of them: a round
        # is as quick as the machine (ATTEMPTS logins take ~10 s).
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        n = 0
        while time.monotonic() < deadline:
            for exchange in exchanges:
                exchange.round(f"round {n}")
            n += 1
            seen.append(_states(gateway))
            if len(front.silent_opened) >= ATTEMPTS and any(
                s["mute@sip.test"]["state"] == "transient_disconnect" for s in seen
            ):
                break
        assert len(front.silent_opened) >= ATTEMPTS, (front.silent_opened, gateway.log_text())
        _wait(
            lambda: len(front.silent_closed) >= ATTEMPTS - 1,
            30,
            "the gateway closing timed-out connections",
            gateway.log_text,
        )
        backing_off = [
            s["mute@sip.test"]
            for s in seen
            if s["mute@sip.test"]["state"] == "transient_disconnect"
        ]
        assert backing_off, [s["mute@sip.test"] for s in seen]
        for mute in backing_off:
            assert f"timed out after {LOGIN_TIMEOUT:g}s" in mute["last_error"], mute
            assert mute["next_retry_in"] is not None, mute
        assert max(s["mute@sip.test"]["reconnects"] for s in seen) >= 1, seen[-1]
        for states in seen:
            for user in others:
                assert states[f"{user}@sip.test"]["state"] == "connected", states
                assert states[f"{user}@sip.test"]["reconnects"] == 0, states
        opened, closed = front.attempts()
        held = [round(c - o, 1) for o, c in zip(opened, closed, strict=False)]
        waits = [round(b - c, 2) for c, b in zip(closed, opened[1:], strict=False)]
        for exchange in exchanges:
            exchange.settle()
        report(
            f"silent XMPP server: {len(opened)} logins accepted, never answered, cut after "
            f"{held} s (login_timeout {LOGIN_TIMEOUT:g}s), retried {waits} s later; "
            "other users: " + "; ".join(e.summary() for e in exchanges)
        )
        assert all(h >= LOGIN_TIMEOUT - 0.5 for h in held), held
    finally:
        for agent in phones:
            agent.stop()
        code = gateway.stop()
        front.close()
        assert code == 0, gateway.log_text()
    to_sip.check()
    to_xmpp.check()
