"""The message pipeline's rules (purplegw.gateway.messaging): edge checks, failure
classes, dead letters and reports, per-conversation delivery, group commits.

Fake ports and no threads, as in test_messaging: the worker is the test
thread (or a queue the test runs), the store a real SQLite database.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from purplegw.actors.front.transport import Address
from purplegw.actors.state import Outcome
from purplegw.gateway.addressing import AddressBook
from purplegw.gateway.bodies import read_cpim
from purplegw.gateway.identity import Identity
from purplegw.gateway.messaging import RETRY_DELAYS, TRAIN_REPORT_DELAY, Messaging
from purplegw.gateway.registrar import Registrar
from purplegw.gateway.settings import GatewaySettings, MessagingSettings
from purplegw.store.dead_letters import Direction
from purplegw.store.outbox import NewIncoming
from tests.gateway.fakes import Clock, Directory, FakeFront, Handle, InlineWorker
from tests.gateway.test_core import QueuedWorker
from tests.gateway.test_messaging import source
from tests.kit.sipmsg import make_request

if TYPE_CHECKING:
    from purplegw.actors.account import OutcomeFuture
    from purplegw.sip.message import Request, Response
    from purplegw.store import Store

USER = "alice@sip.test"
BOB = "bob@example.org"
CAROL = "carol@example.org"


class ReportingHandle(Handle):
    """A handle with the account requests of the pipeline contract (bounce, receipts)."""

    def bounce(self, contact: str, message_id: str, status: int, reason: str) -> None:
        self.calls.append(("bounce", contact, message_id, status, reason))

    def send_receipt(
        self, contact: str, message_id: str, kind: str, receipts: str = ""
    ) -> OutcomeFuture:
        return self._op(
            "send_receipt", contact, message_id, kind, *([receipts] if receipts else [])
        )


class Pipeline:
    def __init__(
        self,
        store: Store,
        worker: InlineWorker | None = None,
        unsendable: Any = None,
        **settings: Any,
    ) -> None:
        gateway = GatewaySettings(domain="sip.test", trusted=["127.0.0.0/8"])
        self.store = store
        self.clock = Clock()
        self.worker = worker or InlineWorker()
        self.front = FakeFront()
        self.handle = ReportingHandle(USER, "xmpp", "alice@example.org")
        directory = Directory(self.handle)
        identity = Identity(gateway, store.users, self.clock)
        self.registrar = Registrar(gateway, identity, self.clock)
        self.messaging = Messaging(
            domain="sip.test",
            identity=identity,
            registrar=self.registrar,
            addresses=AddressBook(
                directory,
                canonical=str.lower,
                user_at_host=lambda p: p == "xmpp",
                gateway_domain="sip.test",
            ),
            store=store,
            directory=directory,
            worker=self.worker,
            settings=MessagingSettings(**settings),
            clock=self.clock,
            unsendable=unsendable or (lambda _p, _t: None),
        )
        self.registrar.on_registered = self.messaging.registered
        self.messaging.front = self.front

    def register(self, port: int = 5070) -> None:
        request = make_request(
            "REGISTER",
            "sip:sip.test",
            from_=f"<sip:{USER}>",
            to=f"<sip:{USER}>",
            extra=[("Contact", f"<sip:alice@127.0.0.1:{port}>"), ("Expires", "600")],
        )
        assert self.registrar.register(request, source(port)).status == 200

    def message(
        self, body: bytes, content_type: str = "text/plain", ruri: str = f"sip:{BOB}"
    ) -> list[Response]:
        replies: list[Response] = []
        request = make_request(
            "MESSAGE",
            ruri,
            from_=f"<sip:{USER}>",
            to=f"<{ruri}>",
            body=body,
            content_type=content_type,
        )
        self.messaging.message(request, source(), replies.append)
        return replies

    def sent(self) -> list[tuple[Request, Any]]:
        return [(r, d) for r, d, _f in self.front.sent]

    def answer(self, request: Request, status: int) -> None:
        for sent, _destination, future in self.front.sent:
            if sent is request:
                future.set_result(make_response(sent, status))

    def bounces(self) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.handle.calls if c[0] == "bounce"]


def make_response(request: Request, status: int) -> Response:
    from purplegw.sip.message import make_response as make

    return make(request, status)


# --- 1. edge validation ---------------------------------------------------------------


def test_text_a_network_cannot_carry_is_refused_before_any_202(store: Store) -> None:
    def xmpp_check(protocol: str, text: str) -> tuple[int, str] | None:
        assert protocol == "xmpp"
        return (488, "XML-invalid character U+001B") if "\x1b" in text else None

    rig = Pipeline(store, unsendable=xmpp_check, max_text_bytes=16)
    answers = [rig.message(body)[0] for body in (b"a\x00b", b"x" * 17, b"esc \x1b[0m")]
    assert [(r.status, r.reason) for r in answers] == [
        (488, "Not Acceptable Here: text contains a NUL character"),
        (413, "Request Entity Too Large: text longer than 16 bytes"),
        (488, "Not Acceptable Here: XML-invalid character U+001B"),
    ]
    assert store.sendq.pending() == []
    assert rig.handle.calls == []  # nothing reached the account

    (fine,) = rig.message(b"x" * 16)
    assert fine.status == 202


# --- 2. failure classes towards SIP ------------------------------------------------------


def test_a_permanent_refusal_is_dead_lettered_and_the_sender_bounced(store: Store) -> None:
    rig = Pipeline(store)
    rig.register()
    rig.messaging.incoming(rig.handle.info, BOB, "first", "xmpp-1")
    rig.messaging.incoming(rig.handle.info, BOB, "second", "xmpp-2")
    ((first, _d),) = rig.sent()
    rig.answer(first, 403)
    (letter,) = store.dead_letters.list()
    assert (letter.direction, letter.contact, letter.text, letter.status, letter.message_id) == (
        Direction.TO_SIP,
        BOB,
        "first",
        403,
        "xmpp-1",
    )
    assert rig.bounces() == [(BOB, "xmpp-1", 403, "403 Forbidden")]
    # The conversation goes on at once: the next message is not held behind it.
    second = rig.sent()[-1][0]
    assert second.body == b"second"
    rig.answer(second, 200)
    rig.worker.delete_settled()
    assert store.outbox.pending(USER) == []
    assert rig.worker.pending() == []  # no retry timer for a permanent failure


def test_transient_failures_are_retried_a_bounded_number_of_times(store: Store) -> None:
    rig = Pipeline(store, retry_attempts=3)
    rig.register()
    rig.messaging.incoming(rig.handle.info, BOB, "hello", "m1")
    delays = []
    for _attempt in range(3):
        request = rig.sent()[-1][0]
        assert request.body == b"hello"
        rig.answer(request, 480)
        delays += [t.delay for t in rig.worker.pending()]
        rig.worker.fire()
    assert delays == list(RETRY_DELAYS[:2])  # the third failure is the last
    (letter,) = store.dead_letters.list()
    assert letter.status == 480
    assert letter.reason == "3 attempts, last 480 Temporarily Unavailable"
    assert rig.bounces() == [(BOB, "m1", 480, letter.reason)]


def test_a_transport_error_is_transient(store: Store) -> None:
    rig = Pipeline(store)
    rig.register()
    rig.messaging.incoming(rig.handle.info, BOB, "hello")
    rig.front.sent[0][2].set_exception(ConnectionResetError("reset"))
    (kept,) = store.outbox.pending(USER)
    assert kept.attempts == 1
    assert len(rig.worker.pending()) == 1
    assert store.dead_letters.list() == []


def test_an_old_message_is_given_up_instead_of_sent(store: Store) -> None:
    rig = Pipeline(store, retry_max_age=60.0)
    rig.messaging.incoming(rig.handle.info, BOB, "stale", "m1")
    rig.clock.now = time.time() + 61  # rows carry the real clock's time
    rig.register()
    assert rig.sent() == []
    (letter,) = store.dead_letters.list()
    assert letter.status == 408
    assert letter.reason.startswith("not delivered within")


def test_too_large_over_udp_goes_again_over_tcp_and_fails_over_tcp(store: Store) -> None:
    rig = Pipeline(store)
    rig.register()
    rig.messaging.incoming(rig.handle.info, BOB, "short but refused", "m1")
    request, destination = rig.sent()[-1]
    assert destination.transport == "udp"
    rig.answer(request, 413)
    assert store.dead_letters.list() == []
    rig.worker.fire()
    request, destination = rig.sent()[-1]
    assert destination == Address("tcp", "127.0.0.1", 5070)
    rig.answer(request, 513)
    (letter,) = store.dead_letters.list()
    assert letter.status == 513
    rig.worker.fire()
    assert len(rig.sent()) == 2  # never a third try


# --- 4. no head-of-line blocking, forking -----------------------------------------------


def test_one_stuck_conversation_does_not_hold_back_another(store: Store) -> None:
    rig = Pipeline(store)
    rig.register()
    rig.messaging.incoming(rig.handle.info, BOB, "bob 1")
    rig.messaging.incoming(rig.handle.info, BOB, "bob 2")
    rig.messaging.incoming(rig.handle.info, CAROL, "carol 1")
    assert sorted(r.body for r, _d in rig.sent()) == [b"bob 1", b"carol 1"]
    carol = next(r for r, _d in rig.sent() if r.body == b"carol 1")
    rig.answer(carol, 200)
    rig.worker.delete_settled()
    assert [m.body for m in store.outbox.pending(USER)] == [b"bob 1", b"bob 2"]
    bob = next(r for r, _d in rig.sent() if r.body == b"bob 1")
    rig.answer(bob, 200)
    assert rig.sent()[-1][0].body == b"bob 2"  # order kept within the conversation


def test_a_train_sends_the_next_message_on_the_2xx_of_the_last_and_stops_at_a_failure(
    store: Store,
) -> None:
    worker = QueuedWorker()
    rig = Pipeline(store, worker=worker)
    for n in range(4):
        worker.submit(rig.messaging.incoming, rig.handle.info, BOB, f"bob {n}")
    worker.run()
    assert rig.sent() == []  # not registered yet: all four wait
    rig.register()
    worker.run()

    def bodies() -> list[bytes]:
        return [r.body for r, _d in rig.sent()]

    assert bodies() == [b"bob 0"]  # one message of the conversation in flight
    rig.answer(rig.sent()[0][0], 200)
    assert bodies() == [b"bob 0", b"bob 1"]  # left on the 2xx, the worker not run yet
    rig.answer(rig.sent()[1][0], 480)
    assert len(rig.sent()) == 2  # a failure stops the train: nothing overtakes "bob 1"
    worker.run()
    rig.worker.delete_settled()
    worker.run()
    assert [m.body for m in store.outbox.pending(USER)] == [b"bob 1", b"bob 2", b"bob 3"]
    rig.worker.fire()  # the retry
    worker.run()
    for _ in range(3):
        rig.answer(rig.sent()[-1][0], 200)
    assert bodies()[2:] == [b"bob 1", b"bob 2", b"bob 3"]  # in order
    worker.run()
    rig.worker.delete_settled()
    worker.run()
    assert store.outbox.pending(USER) == []


def test_a_running_train_reports_its_answers_to_the_worker_in_batches(store: Store) -> None:
    worker = QueuedWorker()
    rig = Pipeline(store, worker=worker)
    for n in range(4):
        worker.submit(rig.messaging.incoming, rig.handle.info, BOB, f"bob {n}")
    rig.register()
    worker.run()

    def report_timers() -> list[Any]:
        return rig.worker.pending(lambda t: getattr(t.fn, "__name__", "") == "_train_report")

    rig.answer(rig.sent()[0][0], 200)
    rig.answer(rig.sent()[1][0], 200)
    assert len(rig.sent()) == 3  # the train moves on without the worker
    assert worker.run() == 0  # no hop per answer...
    (timer,) = report_timers()  # ...one timer for both
    assert timer.delay == TRAIN_REPORT_DELAY
    rig.worker.fire(lambda t: t is timer)
    worker.run()
    rig.worker.delete_settled()
    worker.run()
    assert [m.body for m in store.outbox.pending(USER)] == [b"bob 2", b"bob 3"]
    rig.answer(rig.sent()[2][0], 200)
    assert len(report_timers()) == 1  # the next answer not taken yet has its own
    rig.answer(rig.sent()[3][0], 200)  # the last: the train stopped, reported at once
    assert worker.run() == 1
    rig.worker.delete_settled()
    worker.run()
    assert store.outbox.pending(USER) == []
    assert rig.messaging.in_flight == set()


def test_a_train_that_cannot_send_its_next_message_leaves_it_to_the_worker(
    store: Store,
) -> None:
    rig = Pipeline(store)
    calls = []
    send = rig.front.send_request

    def flaky(request: Request, destination: Any) -> Any:
        calls.append(request.body)
        if len(calls) == 2:
            raise OSError("front stopping")
        return send(request, destination)

    rig.front.send_request = flaky  # type: ignore[method-assign]
    for text in ("one", "two"):
        rig.messaging.incoming(rig.handle.info, BOB, text)
    rig.register()
    rig.answer(rig.sent()[0][0], 200)  # the train's send of "two" fails
    assert calls == [b"one", b"two", b"two"]  # the worker sent it again
    rig.answer(rig.sent()[-1][0], 200)
    rig.worker.delete_settled()
    assert store.outbox.pending(USER) == []


def test_a_train_goes_to_one_destination_only_forks_send_one_at_a_time(store: Store) -> None:
    rig = Pipeline(store)
    rig.register(5070)
    rig.register(5072)
    rig.messaging.incoming(rig.handle.info, BOB, "one")
    rig.messaging.incoming(rig.handle.info, BOB, "two")
    assert sorted(d.port for _r, d in rig.sent()) == [5070, 5072]  # "one", to both
    first = rig.sent()[0][0]
    rig.answer(first, 200)  # the first 2xx delivers it; "two" follows through the worker
    assert [r.body for r, _d in rig.sent()[2:]] == [b"two", b"two"]


def test_the_first_2xx_of_a_fork_delivers_and_a_silent_contact_is_skipped(store: Store) -> None:
    rig = Pipeline(store, dead_binding_timeouts=2)
    rig.register(5070)
    rig.register(5071)

    def deliver(text: str, *, silent_answers: bool) -> list[int]:
        before = len(rig.sent())
        rig.messaging.incoming(rig.handle.info, BOB, text)
        new = rig.sent()[before:]
        for request, destination in new:
            if destination.port == 5070:
                rig.answer(request, 200)
        rig.worker.delete_settled()
        assert store.outbox.pending(USER) == []  # delivered without waiting for 5071
        for request, destination in new:
            if destination.port == 5071 and silent_answers:
                rig.answer(request, 408)
        return sorted(d.port for _r, d in new)

    assert deliver("one", silent_answers=True) == [5070, 5071]
    assert deliver("two", silent_answers=True) == [5070, 5071]
    assert deliver("three", silent_answers=False) == [5070]  # 5071 timed out twice
    rig.register(5071)  # it registers again: used again
    assert deliver("four", silent_answers=False) == [5070, 5071]


def test_a_lone_silent_contact_is_still_tried(store: Store) -> None:
    rig = Pipeline(store, dead_binding_timeouts=1)
    rig.register()
    rig.messaging.incoming(rig.handle.info, BOB, "one")
    rig.answer(rig.sent()[-1][0], 408)
    rig.worker.fire()
    assert [r.body for r, _d in rig.sent()] == [b"one", b"one"]  # retried, not parked


# --- 2b. a queued message the network refuses: the SIP sender is told -------------------


IMDN_REQUEST = (
    b"From: <sip:alice@sip.test>\r\nTo: <sip:bob@example.org>\r\n"
    b"NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: Xs7Tf3\r\n"
    b"imdn.Disposition-Notification: positive-delivery, negative-delivery\r\n\r\n"
    b"Content-Type: text/plain\r\n\r\nhello bob"
)


def test_a_queued_message_refused_later_gives_an_imdn_when_asked(store: Store) -> None:
    rig = Pipeline(store)
    rig.handle.outcome = Outcome(202, "queued")
    (accepted,) = rig.message(IMDN_REQUEST, "message/cpim")
    assert accepted.status == 202
    message_id = rig.handle.calls[-1][3]
    rig.messaging.send_result(rig.handle.info, message_id, Outcome(488, "stream error"))
    assert store.sendq.pending() == []
    (letter,) = store.dead_letters.list()
    assert (letter.direction, letter.text, letter.status) == (
        Direction.TO_NETWORK,
        "hello bob",
        488,
    )
    (report,) = store.outbox.pending(USER)
    assert report.content_type == "message/cpim"
    assert b"<message-id>Xs7Tf3</message-id>" in report.body
    assert b"<delivery-notification><status><failed/></status>" in report.body
    rig.register()
    ((sent, _d),) = rig.sent()
    assert (sent.headers.get("From") or "").startswith(f"<sip:{BOB};proto=xmpp>")
    rig.answer(sent, 415)  # the phone does not take it: no bounce for our own report
    assert rig.bounces() == []


def test_a_queued_message_refused_later_gives_a_short_text_otherwise(store: Store) -> None:
    rig = Pipeline(store)
    rig.handle.outcome = Outcome(202, "queued")
    rig.message(b"hi there")
    message_id = rig.handle.calls[-1][3]
    rig.messaging.send_result(rig.handle.info, message_id, Outcome(406, "not acceptable"))
    (report,) = store.outbox.pending(USER)
    assert report.body.decode() == f'Not delivered to {BOB}: "hi there" (406 not acceptable)'

    rig = Pipeline(store, notify_failures=False)
    rig.handle.outcome = Outcome(202, "queued")
    rig.message(b"quiet")
    rig.messaging.send_result(rig.handle.info, rig.handle.calls[-1][3], Outcome(403, "no"))
    assert len(store.outbox.pending(USER)) == 1  # only the first report
    assert len(store.dead_letters.list()) == 2


def test_a_transient_result_keeps_the_row(store: Store) -> None:
    rig = Pipeline(store)
    rig.handle.outcome = Outcome(202, "queued")
    rig.message(b"later")
    rig.messaging.send_result(rig.handle.info, rig.handle.calls[-1][3], Outcome(480, "off"))
    assert len(store.sendq.pending()) == 1
    assert store.dead_letters.list() == []


# --- 6. group commit ---------------------------------------------------------------------


def test_messages_of_one_worker_turn_share_one_commit_and_202_follows_it(store: Store) -> None:
    worker = QueuedWorker()
    rig = Pipeline(store, worker=worker)
    rig.handle.outcome = Outcome(202, "queued")  # rows stay until the network takes them
    replies = [rig.message(f"m{n}".encode()) for n in range(5)]
    assert store.sendq.pending() == []  # nothing written yet
    assert rig.handle.calls == []  # nor handed to the account
    worker.run()
    assert rig.messaging.writer.commits == 1
    assert len(store.sendq.pending()) == 5
    assert [r[0].status for r in replies] == [202] * 5
    assert [c[2] for c in rig.handle.calls] == [f"m{n}" for n in range(5)]  # in order

    for n in range(4):
        worker.submit(rig.messaging.incoming, rig.handle.info, BOB, f"in {n}")
    worker.run()
    assert [m.body for m in store.outbox.pending(USER)] == [f"in {n}".encode() for n in range(4)]


def test_a_failed_commit_answers_503_and_hands_nothing_over(store: Store) -> None:
    worker = QueuedWorker()
    rig = Pipeline(store, worker=worker)
    (replies,) = [rig.message(b"dup")]
    rig.store.db.execute("DROP TABLE purplegw_sendq")
    worker.run()
    assert [(r.status, r.headers.get("Retry-After")) for r in replies] == [(503, "10")]
    assert rig.handle.calls == []


# --- 3. requeued ---------------------------------------------------------------------------


def test_requeued_dead_letters_are_sent_by_the_running_gateway(store: Store) -> None:
    rig = Pipeline(store)
    rig.messaging.start()
    rig.register()
    rig.handle.outcome = Outcome(202, "queued")
    rig.message(b"to bob")
    sent_id = rig.handle.calls[-1][3]
    rig.messaging.send_result(rig.handle.info, sent_id, Outcome(403, "refused"))
    [seq] = store.outbox.put_many([NewIncoming(USER, 1, "xmpp", CAROL, b"to alice")])
    store.dead_letters.bury_incoming(store.outbox, seq, status=403, reason="refused")
    network, sip = sorted(store.dead_letters.list(), key=lambda d: d.direction)
    assert network.direction is Direction.TO_NETWORK
    rig.handle.outcome = Outcome(200, "sent")
    for letter in (network, sip):
        store.dead_letters.take_for_retry(letter.id, sendq=store.sendq, outbox=store.outbox)
    calls = len(rig.handle.calls)
    rig.messaging.requeued()
    assert rig.handle.calls[calls:] == [("send_message", BOB, "to bob", sent_id)]
    rig.worker.delete_settled()
    assert store.sendq.pending() == []
    assert b"to alice" in [r.body for r, _d in rig.sent()]
    rig.messaging.requeued()  # nothing new: nothing sent twice
    assert len(rig.handle.calls) == calls + 1


# --- 5. caps -------------------------------------------------------------------------------


def test_a_full_outbox_and_a_fast_sender_are_refused_with_a_bounce(store: Store) -> None:
    rig = Pipeline(store, outbox_max_messages=2, sender_rate=1.0, sender_burst=3)
    for n in range(3):
        rig.messaging.incoming(rig.handle.info, BOB, f"bob {n}", f"b{n}")
    assert rig.bounces() == [(BOB, "b2", 503, "outbox full")]
    assert len(store.outbox.pending(USER)) == 2
    rig.messaging.incoming(rig.handle.info, BOB, "too fast", "b3")
    assert rig.bounces()[-1] == (BOB, "b3", 403, "too many messages")

    rig = Pipeline(store, outbox_max_messages=0, outbox_max_bytes=0)
    rig.register()
    rig.messaging.incoming(rig.handle.info, CAROL, "no limits")
    assert rig.bounces() == []


# --- 7. receipts and timestamps ---------------------------------------------------------


def test_receipts_both_ways_and_sent_at_as_cpim_datetime(store: Store) -> None:
    rig = Pipeline(store)
    rig.message(IMDN_REQUEST, "message/cpim")
    message_id = rig.handle.calls[-1][3]
    assert rig.handle.calls[-1][4:] == (True,)  # the contact is asked for a receipt
    rig.messaging.receipt(rig.handle.info, BOB, message_id)
    (report,) = store.outbox.pending(USER)
    assert b"<delivered/>" in report.body
    assert b"<message-id>Xs7Tf3</message-id>" in report.body
    rig.messaging.receipt(rig.handle.info, BOB, message_id)  # a duplicate receipt
    assert len(store.outbox.pending(USER)) == 1

    displayed = (
        b"From: <sip:alice@sip.test>\r\nNS: imdn <urn:ietf:params:imdn>\r\n"
        b"imdn.Message-ID: n1\r\n\r\nContent-Type: message/imdn+xml\r\n\r\n"
        b'<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>xmpp-7</message-id>'
        b"<display-notification><status><displayed/></status>"
        b"</display-notification></imdn>"
    )
    (answer,) = rig.message(displayed, "message/cpim")
    assert answer.status == 200
    assert rig.handle.calls[-1] == ("send_receipt", BOB, "xmpp-7", "displayed")

    rig.clock.now = 1_700_000_000.0 + 3600  # an hour after the contact wrote it
    rig.messaging.incoming(rig.handle.info, CAROL, "written earlier", "c1", sent_at=1_700_000_000.0)
    stamped = store.outbox.pending(USER)[-1]
    assert stamped.content_type == "message/cpim"
    assert b"DateTime: 2023-11-14T22:13:20Z" in stamped.body
    assert read_cpim(stamped.body).text == "written earlier"


def test_a_message_the_phone_took_is_reported_delivered_to_its_sender(store: Store) -> None:
    rig = Pipeline(store)
    rig.register()
    rig.messaging.incoming(rig.handle.info, BOB, "hello", "xmpp-9", receipts="receipt")
    ((request, _d),) = rig.sent()
    assert not [c for c in rig.handle.calls if c[0] == "send_receipt"]  # not before the 2xx
    rig.answer(request, 200)
    receipts = [c[1:] for c in rig.handle.calls if c[0] == "send_receipt"]
    assert receipts == [(BOB, "xmpp-9", "delivered", "receipt")]
    # A sender that asked for nothing costs its account no request.
    rig.messaging.incoming(rig.handle.info, BOB, "quiet", "xmpp-10")
    rig.answer(rig.sent()[-1][0], 200)
    assert len([c for c in rig.handle.calls if c[0] == "send_receipt"]) == 1


# --- 8. what a queued message owes its sender survives a restart ---------------------------


def test_a_receipt_request_is_kept_with_the_outbox_row_across_a_restart(store: Store) -> None:
    before = Pipeline(store)  # the phone is not registered: the message waits
    before.messaging.incoming(
        before.handle.info, BOB, "hello", "xmpp-11", receipts="markable,receipt"
    )
    (row,) = store.outbox.pending(USER)
    assert (row.message_id, row.receipts) == ("xmpp-11", "markable,receipt")

    after = Pipeline(store)  # a new run on the same database
    after.messaging.start()
    after.register()
    ((request, _d),) = after.sent()
    after.answer(request, 200)
    receipts = [c[1:] for c in after.handle.calls if c[0] == "send_receipt"]
    assert receipts == [(BOB, "xmpp-11", "delivered", "markable,receipt")]


def test_an_imdn_request_is_kept_with_the_send_queue_row_across_restarts(store: Store) -> None:
    before = Pipeline(store)
    before.handle.outcome = Outcome(202, "queued")  # account offline: the message waits
    (accepted,) = before.message(IMDN_REQUEST, "message/cpim")
    assert accepted.status == 202
    message_id = before.handle.calls[-1][3]
    (row,) = store.sendq.pending()
    assert (row.imdn_id, row.notify) == ("Xs7Tf3", "negative-delivery,positive-delivery")

    # Restart 1: the new run hands it to the account, the network takes it.
    middle = Pipeline(store)
    middle.messaging.start()
    middle.messaging.resend_unsent(middle.handle.info)
    # Still with the wish for the contact's receipt (XEP-0184 asked of the contact).
    assert middle.handle.calls[-1] == ("send_message", BOB, "hello bob", message_id, True)
    middle.messaging.send_result(middle.handle.info, message_id, Outcome(200, "acked"))
    middle.worker.delete_settled()
    assert store.sendq.pending() == []  # never sent again...
    (waiting,) = store.sendq.awaiting_receipt(0.0)  # ...but the receipt is still owed
    assert waiting.message_id == message_id

    # Restart 2, then the contact's receipt: the phone gets its IMDN "delivered".
    after = Pipeline(store)
    after.messaging.start()
    after.messaging.receipt(after.handle.info, BOB, message_id)
    (report,) = store.outbox.pending(USER)
    assert report.content_type == "message/cpim"
    assert b"<message-id>Xs7Tf3</message-id>" in report.body
    assert b"<delivered/>" in report.body
    after.worker.delete_settled()
    assert store.sendq.awaiting_receipt(0.0) == []  # nothing more is owed


def test_an_imdn_failure_is_owed_after_a_restart_too(store: Store) -> None:
    before = Pipeline(store)
    before.handle.outcome = Outcome(202, "queued")
    before.message(IMDN_REQUEST, "message/cpim")
    message_id = before.handle.calls[-1][3]

    after = Pipeline(store)
    after.messaging.start()
    after.messaging.send_result(after.handle.info, message_id, Outcome(488, "stream error"))
    (report,) = store.outbox.pending(USER)
    assert report.content_type == "message/cpim"
    assert b"<message-id>Xs7Tf3</message-id>" in report.body
    assert b"<failed/>" in report.body


def test_a_message_stamped_just_now_stays_plain_text(store: Store) -> None:
    # Matrix stamps every event; only a delayed one is worth message/cpim
    rig = Pipeline(store)
    rig.clock.now = 1_700_000_000.0
    rig.messaging.incoming(rig.handle.info, CAROL, "live", "c2", sent_at=1_700_000_000.0 - 2)
    (row,) = store.outbox.pending(USER)
    assert row.content_type.startswith("text/plain")
    assert row.body == b"live"
