"""Two-way message traffic for the fault cases, counted exactly in Tallies.

Every message carries its id in the body (``[fault-id]``) so a delivery is
matched to its send whatever the transport did to it.  What counts as
*accepted*:

* SIP -> XMPP: the gateway answered the phone's MESSAGE with 202 (any other
  final answer is a refusal the phone saw);
* XMPP -> SIP: the XMPP server acknowledged bob's stanza (XEP-0198 ``<a/>``):
  from then on the message is the server's, routed to the gateway's
  connection or stored offline for it.  A stanza bob wrote just before the
  server went away is sent, not accepted; an error the server bounced back
  for it is a refusal.
"""

from __future__ import annotations

import itertools
import re
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Self

from tests.kit.gateway import GatewayProcess
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from tests.kit.tally import Tally

ID_PATTERN = re.compile(r"\[(fault-[0-9a-z-]+)\]")
SM_ACK_REQUEST = "<r xmlns='urn:xmpp:sm:3'/>"
QUIET = 1.5  # seconds with nothing missing before the counts are final


def body_for(msg_id: str) -> str:
    return f"fault traffic [{msg_id}] ✓"


def ids_in(text: str | None) -> list[str]:
    return ID_PATTERN.findall(text or "")


class Ids:
    """fault-<case>-<direction>-<n>, unique within a run."""

    def __init__(self, case: str, direction: str) -> None:
        self.prefix = f"fault-{case}-{direction}"
        self._n = itertools.count(1)
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            return f"{self.prefix}-{next(self._n):04d}"


class CountingPeer(XmppPeer):
    """bob, who knows which of his messages the server acknowledged.

    The message id is the stanza id too, so an error the server bounces
    back (``recipient-unavailable``) names the message it refuses.
    """

    def __init__(self, *args: Any, tally: Tally, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tally = tally

    async def _start(self) -> None:
        await super()._start()
        self._client.add_event_handler("stanza_acked", self._on_acked)
        self._client.add_event_handler("message_error", self._on_bounce)

    def _on_acked(self, stanza: Any) -> None:
        if stanza.name == "message":
            for msg_id in ids_in(stanza["body"]):
                self.tally.accept(msg_id)

    def _on_bounce(self, msg: Any) -> None:
        msg_id = msg["id"] or ""
        if msg_id.startswith("fault-"):
            self.tally.refuse(msg_id)

    @property
    def online(self) -> bool:
        return (
            self._online is not None
            and self._online.is_set()
            and self._client is not None
            and self._client.transport is not None
        )

    def send_counted(self, to: str, msg_id: str) -> bool:
        """Send one message while connected (False, and nothing sent, otherwise)."""

        def send() -> bool:
            if not self.online:
                return False
            self.tally.send(msg_id, conversation=to)
            msg = self._client.make_message(mto=to, mbody=body_for(msg_id), mtype="chat")
            msg["id"] = msg_id
            msg.send()
            # Behind the stanza: slixmpp's own requests go out before it.
            self._client.send(SM_ACK_REQUEST)
            return True

        try:
            return bool(self._call(send))
        except Exception:  # noqa: BLE001 - the loop is busy reconnecting: no send this tick
            return False

    def request_ack(self) -> None:
        """Ask the server for an ack of everything so far (it may still be pending)."""

        def ask() -> None:
            if self.online:
                self._client.send(SM_ACK_REQUEST)

        try:
            self._call(ask)
        except Exception:  # noqa: BLE001
            return


class Cursor:
    """Feeds the new items of a growing event list to a handler, once each."""

    def __init__(self, source: Callable[[], list[Any]], handle: Callable[[Any], None]) -> None:
        self._source = source
        self._handle = handle
        self._seen = 0
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self._lock:
            items = self._source()
            for item in items[self._seen :]:
                self._handle(item)
            self._seen = len(items)


def phone_cursor(agent: PjsuaAgent, sent: Tally | None, received: Tally | None) -> Cursor:
    """im_status answers -> ``sent`` (202 accepted, else refused); im -> ``received``."""

    def handle(event: dict[str, Any]) -> None:
        if event["event"] == "im_status" and sent is not None:
            for msg_id in ids_in(event.get("body")):
                if event["code"] == 202:
                    sent.accept(msg_id)
                elif event["code"] >= 200:
                    sent.refuse(msg_id)
        elif event["event"] == "im" and received is not None:
            for msg_id in ids_in(event.get("body")):
                received.deliver(msg_id)

    return Cursor(lambda: agent.matching(lambda _e: True), handle)


def peer_cursor(peer: XmppPeer, received: Tally) -> Cursor:
    """Messages bob received -> deliveries."""

    def handle(event: Any) -> None:
        if event.kind == "message":
            for msg_id in ids_in(event.body):
                received.deliver(msg_id)

    return Cursor(peer.snapshot, handle)


class Ticker:
    """Calls ``tick()`` every ``interval`` seconds on a thread until stopped."""

    def __init__(self, tick: Callable[[], None], interval: float = 0.1) -> None:
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-traffic", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                self._tick()
        except BaseException as exc:  # noqa: BLE001 - re-raised by stop()
            self.error = exc

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error


def wait_delivered(
    tallies: Iterable[Tally],
    cursors: Iterable[Cursor],
    *,
    timeout: float = 60.0,
    settle: Callable[[], None] | None = None,
) -> None:
    """Poll until every accepted message of every tally was delivered (or time runs out).

    ``settle`` runs on every round (e.g. asking the XMPP server for its
    last acks).  The caller's ``check()`` then reports and judges.
    """
    tallies, cursors = list(tallies), list(cursors)
    deadline = time.monotonic() + timeout
    complete_since: float | None = None
    while time.monotonic() < deadline:
        if settle is not None:
            settle()
        for cursor in cursors:
            cursor.poll()
        now = time.monotonic()
        if any(t.missing() for t in tallies):
            complete_since = None
        elif complete_since is None:
            complete_since = now
        elif now - complete_since >= QUIET:
            return  # complete, and no late ack or answer added work meanwhile
        time.sleep(0.2)


def kill_gateway(gateway: GatewayProcess) -> None:
    """SIGKILL: the daemon gets no chance to save anything; start() runs it again."""
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGKILL)
    assert gateway.process.wait(10) == -signal.SIGKILL
    gateway.process = None


def kill_server(server: Any) -> None:
    """SIGKILL a test server (Prosody) that may be stopped; what it never read dies with it."""
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    server.proc = None


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


# --- the deployment: the real daemon, SIP users with one XMPP account each ----------

SIP_PASSWORD = "sippw"


def gateway_for(prosody: Any, base: Any, users: dict[str, Any], **options: Any) -> GatewayProcess:
    """A configured (not started) daemon; ``users`` maps SIP user names to XMPP accounts."""
    gateway = GatewayProcess(base, extra_config=prosody.gateway_section(), **options)
    gateway.cli("db", "init")
    for name, account in users.items():
        aor = f"{name}@{gateway.domain}"
        gateway.cli("users", "add", aor, "--password-stdin", stdin=SIP_PASSWORD + "\n")
        gateway.cli(
            "accounts",
            "add",
            aor,
            account.jid,
            "xmpp",
            "--password-stdin",
            stdin=account.password + "\n",
        )
    return gateway


def registered_phone(gateway: GatewayProcess, name: str) -> PjsuaAgent:
    """A pjsua2 phone registered as ``name`` with the gateway (also its proxy)."""
    agent = PjsuaAgent.start()
    try:
        agent.account(
            f"sip:{name}@{gateway.domain}",
            registrar=gateway.uri,
            username=name,
            password=SIP_PASSWORD,
            proxy=f"{gateway.uri};lr",
        )
        event = agent.wait_for(lambda e: e["event"] == "reg")
        assert event["code"] == 200, event
    except BaseException:
        agent.stop()
        raise
    return agent
