"""Presence through the real Gateway, a real SQLite store and fake ports (tests/gateway/fakes.py).

The fakes stand in for the network and the worker thread only: the SIP front
records the requests it is asked to send (each with a future the test
completes, or not), the worker runs everything inline and fires timers when
the test says so, and account handles record what they are asked.
"""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, Any

import pytest

from purplegw.gateway import Gateway, GatewaySettings, PresenceSettings
from purplegw.gateway.presence import CSEQ_BLOCK
from purplegw.presence import ContactPresence, Presence, Status
from purplegw.protocols.base import AuthorizationAnswer, ConnectionState
from purplegw.sip.message import Request, Response, make_response
from purplegw.sip.presence import parse_pidf, pidf_to_presence
from purplegw.store import (
    AccountRepository,
    Database,
    OutboxRepository,
    PasswordCipher,
    Store,
    Tables,
    UserRepository,
)
from purplegw.store.crypto import generate_key_file
from purplegw.store.upgrades import run_upgrades
from tests.gateway.fakes import Clock, Directory, FakeFront, Handle, InlineWorker
from tests.kit.corpus import corpus_dir
from tests.kit.sipmsg import make_request, udp_source

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Iterator
    from pathlib import Path

    from purplegw.actors.listener import AccountInfo

USER = "alice@sip.test"
BOB = "bob@example.org"


def pidf(basic: str = "open", activity: str | None = None, note: str | None = None) -> bytes:
    person = ""
    if activity or note:
        act = f"<rpid:activities><rpid:{activity}/></rpid:activities>" if activity else ""
        dm_note = f"<dm:note>{note}</dm:note>" if note else ""
        person = f'<dm:person id="p1">{act}{dm_note}</dm:person>'
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@sip.test">'
        f'<tuple id="t1"><status><basic>{basic}</basic></status></tuple>{person}</presence>'
    ).encode()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from open_store(tmp_path)


def open_store(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite store in ``tmp_path``, closed when the generator ends."""
    db = Database.create(f"sqlite://{tmp_path / 'gw.db'}")
    tables = Tables()
    run_upgrades(db, tables)
    key = tmp_path / "key"
    generate_key_file(key)
    yield Store(
        db=db,
        tables=tables,
        accounts=AccountRepository(db, tables.accounts, PasswordCipher(key)),
        users=UserRepository(db, tables.subscribers),
        outbox=OutboxRepository(db),
    )
    db.close()


class Rig:
    """A gateway whose worker is the test thread."""

    def __init__(
        self,
        store: Store,
        settings: PresenceSettings | None = None,
        clock: Clock | None = None,
        handles: list[Handle] | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.handle = Handle(USER, "xmpp", "alice@example.org")
        self.directory = Directory(*(handles or [self.handle]))
        self.worker = InlineWorker()
        self.gateway = Gateway(
            settings=GatewaySettings(domain="sip.test", trusted=["127.0.0.0/8"]),
            store=store,
            directory=self.directory,
            worker=self.worker,
            canonical=str.lower,
            user_at_host=lambda p: p == "xmpp",
            clock=self.clock,
            presence=settings or PresenceSettings(publish_default_expires=1800),
        )
        # The worker thread is the test's own: every step runs inline, in order.
        self.front = FakeFront()
        self.gateway.attach(self.front)  # restores the stored subscriptions
        self.presence = self.gateway.presence

    def request(self, request: Request, port: int = 5070) -> Response:
        replies: list[Response] = []
        source = udp_source(port=port)
        self.gateway.handle(request, source, replies.append)
        assert len(replies) == 1, replies
        return replies[0]

    def publish(
        self,
        body: bytes = b"",
        *,
        etag: str | None = None,
        expires: int | None = None,
        content_type: str = "application/pidf+xml",
        user: str = USER,
    ) -> Response:
        extra = [("Event", "presence")]
        if etag:
            extra.append(("SIP-If-Match", etag))
        if expires is not None:
            extra.append(("Expires", str(expires)))
        return self.request(
            make_request(
                "PUBLISH",
                f"sip:{user}",
                from_=f"<sip:{USER}>",
                to=f"<sip:{user}>",
                body=body,
                content_type=content_type if body else None,
                extra=extra,
            )
        )

    def subscribe(
        self,
        port: int,
        *,
        expires: int | None = 600,
        to_tag: str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        event: str = "presence",
    ) -> Response:
        extra = [("Event", event), ("Contact", f"<sip:alice@127.0.0.1:{port}>")]
        if expires is not None:
            extra.append(("Expires", str(expires)))
        return self.request(
            make_request(
                "SUBSCRIBE",
                f"sip:{BOB}",
                from_=f"<sip:{USER}>",
                from_tag=f"ft{port}",
                to=f"<sip:{BOB}>",
                to_tag=to_tag,
                call_id=call_id or f"sub-{port}",
                cseq=cseq,
                extra=extra,
            ),
            port=port,
        )

    def account(self) -> AccountInfo:
        return self.handle.info

    def calls(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.handle.calls if c[0] == name]

    def fire(self, match: Any) -> None:
        """Fire the pending presence timers whose key ``match`` picks."""
        # A keyed timer (purplegw.gateway.timers) is call_later(delay, fired, key, fn, args).
        self.worker.fire(lambda timer: bool(timer.args) and match(timer.args[0]))


def contact_as(status: Status) -> ContactPresence:
    return ContactPresence(BOB, {"": Presence(status)})


def notified(request: Request) -> tuple[str, Presence | None]:
    state = request.headers.get("Subscription-State") or ""
    if not request.body:
        return state, None
    return state, pidf_to_presence(parse_pidf(request.body, request.content_type))


# --- PUBLISH ----------------------------------------------------------------------


def test_publish_follows_rfc3903_etags_refresh_modify_and_remove(store: Store) -> None:
    rig = Rig(store)
    created = rig.publish(pidf("open", "away", "in a meeting"), expires=3600)
    assert created.status == 200
    etag = created.headers.get("SIP-ETag")
    assert etag
    assert created.headers.get("Expires") == "3600"
    assert rig.handle.calls == [("set_presence", Presence(Status.AWAY, "in a meeting", ("away",)))]

    refreshed = rig.publish(etag=etag, expires=3600)  # body-less refresh: nothing changes
    assert refreshed.status == 200
    new_etag = refreshed.headers.get("SIP-ETag")
    assert new_etag
    assert new_etag != etag
    assert len(rig.handle.calls) == 1
    assert rig.publish(etag=etag).status == 412  # the old tag is gone

    modified = rig.publish(pidf("open", "busy", "on a call"), etag=new_etag)
    assert modified.status == 200
    assert modified.headers.get("Expires") == "1800"  # [presence] default
    assert rig.handle.calls[-1] == ("set_presence", Presence(Status.BUSY, "on a call", ("busy",)))

    brief = rig.publish(pidf(), expires=30)
    assert (brief.status, brief.headers.get("Min-Expires")) == (423, "60")
    assert rig.publish(expires=3600).status == 400  # no body, no tag

    removed = rig.publish(etag=modified.headers.get("SIP-ETag"), expires=0)
    assert removed.status == 200
    assert rig.handle.calls[-1] == ("logout",)  # nothing published any more
    rig.publish(pidf("open"))
    assert rig.handle.calls[-2:] == [("login",), ("set_presence", Presence(Status.AVAILABLE))]


def test_closed_logs_out_open_logs_in_and_expiry_logs_out(store: Store) -> None:
    rig = Rig(store)
    first = rig.publish(pidf("closed"))
    assert first.status == 200
    assert rig.handle.calls == [("logout",)]
    etag = rig.publish(pidf("open", note="back"), etag=first.headers.get("SIP-ETag"))
    assert rig.handle.calls[1:] == [
        ("login",),
        ("set_presence", Presence(Status.AVAILABLE, "back")),
    ]
    rig.fire(lambda k: k == ("presence", f"publication:{etag.headers.get('SIP-ETag')}"))
    assert rig.handle.calls[-1] == ("logout",)
    assert rig.presence.publications.states(USER) == []


def test_keep_online_shows_offline_instead_of_logging_out(store: Store) -> None:
    rig = Rig(store, PresenceSettings(keep_online=True))
    rig.publish(pidf("closed"))
    assert rig.handle.calls == [("set_presence", Presence(Status.OFFLINE))]


def test_two_phones_the_most_available_publication_wins(store: Store) -> None:
    rig = Rig(store)
    rig.publish(pidf("open", "away", "desk phone idle"))
    mobile = rig.publish(pidf("open", note="on my mobile"))
    assert rig.handle.calls[-1] == ("set_presence", Presence(Status.AVAILABLE, "on my mobile"))
    rig.publish(etag=mobile.headers.get("SIP-ETag"), expires=0)
    assert rig.handle.calls[-1][1].status is Status.AWAY


def test_publish_refusals_change_nothing(store: Store) -> None:
    rig = Rig(store)
    wrong_event = rig.request(
        make_request(
            "PUBLISH",
            f"sip:{USER}",
            from_=f"<sip:{USER}>",
            to=f"<sip:{USER}>",
            body=pidf(),
            content_type="application/pidf+xml",
            extra=[("Event", "dialog")],
        )
    )
    assert wrong_event.status == 489
    assert wrong_event.headers.get("Allow-Events") == "presence"
    assert rig.publish(pidf(), user="carol@sip.test").status == 403
    assert rig.publish(b"<presence", content_type="application/pidf+xml").status == 400
    unsupported = rig.publish(b"hello", content_type="text/plain")
    assert unsupported.status == 415
    assert rig.handle.calls == []


def _corpus_documents() -> list[tuple[str, str, str]]:
    manifest = corpus_dir() / "pidf" / "manifest.tsv"
    with manifest.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        (r["file"], r["basic_status"], r["well_formed_xml"])
        for r in rows
        if r["file"].endswith(".xml")
    ]


@pytest.mark.parametrize(("name", "basic", "well_formed"), _corpus_documents())
def test_every_corpus_document_is_read_or_refused_with_a_clear_4xx(
    store: Store,
    name: str,
    basic: str,
    well_formed: str,
) -> None:
    rig = Rig(store)
    body = (corpus_dir() / "pidf" / name).read_bytes()
    content_type = "application/xpidf+xml" if basic.startswith("xpidf") else "application/pidf+xml"
    response = rig.publish(body, content_type=content_type)
    if response.status != 200:
        assert response.status in (400, 415), (response.status, response.reason)
        assert well_formed != "yes", f"{name}: well-formed document refused: {response.reason}"
        assert rig.handle.calls == []
        return
    expected = pidf_to_presence(parse_pidf(body, content_type))
    states = [s.removeprefix("xpidf:") for s in basic.split(",")]
    if all(s == "closed" for s in states):
        assert rig.handle.calls == [("logout",)]
        assert not expected.is_open
    else:
        assert rig.handle.calls == [("set_presence", expected)]
        assert expected.is_open


# --- SUBSCRIBE / NOTIFY ---------------------------------------------------------------


def test_pending_until_authorized_then_every_dialog_gets_every_change(store: Store) -> None:
    rig = Rig(store)
    for port in (5071, 5072):
        response = rig.subscribe(port)
        assert response.status == 200, response.reason  # RFC 6665 8.3.1: no 202
        assert response.headers.get("Expires") == "600"
        assert response.headers.get("Contact")
    assert rig.calls("add_contact") == [("add_contact", BOB)] * 2
    for port in (5071, 5072):
        (pending,) = rig.front.notifies(port)
        assert notified(pending) == ("pending;expires=600", None)
        assert pending.headers.get("Event") == "presence"
    assert store.subscriptions.count() == 2

    rig.gateway.on_authorization_answer(rig.account(), BOB, AuthorizationAnswer.ALLOW)
    for port in (5071, 5072):
        state, presence = notified(rig.front.notifies(port)[-1])
        assert state == "active;expires=600"
        assert presence is not None
        assert presence.status is Status.OFFLINE

    rig.gateway.on_contact_presence(
        rig.account(),
        ContactPresence(
            BOB,
            {
                "laptop": Presence(Status.BUSY, "deep in code"),
                "phone": Presence(Status.EXTENDED_AWAY),
            },
        ),
    )
    for port in (5071, 5072):
        notify = rig.front.notifies(port)[-1]
        state, presence = notified(notify)
        assert presence == Presence(Status.BUSY, "deep in code", ("busy",))
        document = parse_pidf(notify.body, notify.content_type)
        assert len(document.tuples) == 2  # one per resource
        assert document.entity == f"sip:{BOB}"
        cseqs = [n.cseq.number for n in rig.front.notifies(port)]
        assert cseqs == sorted(set(cseqs))  # strictly increasing in each dialog
    # A third device: active at once, with the current state.
    assert rig.subscribe(5073).status == 200
    assert notified(rig.front.notifies(5073)[-1])[1].note == "deep in code"


def test_a_dead_subscriber_delays_nobody_and_only_ends_its_own_subscription(store: Store) -> None:
    rig = Rig(store)
    rig.gateway.on_authorization_answer(rig.account(), BOB, AuthorizationAnswer.ALLOW)
    rig.subscribe(5071)
    rig.subscribe(5072)
    alive = [(r, f) for r, d, f in rig.front.sent if d.port == 5071]
    for request, future in alive:
        future.set_result(make_response(request, 200))
    # 5072 never answers: the next change still goes to both at once.
    rig.gateway.on_contact_presence(rig.account(), contact_as(Status.AWAY))
    assert len(rig.front.notifies(5071)) == 2
    assert len(rig.front.notifies(5072)) == 2
    for request, destination, future in rig.front.sent:  # timer F for the dead one
        if destination.port == 5072:
            future.set_result(make_response(request, 408, "Request Timeout"))
        elif not future.done():
            future.set_result(make_response(request, 200))
    assert store.subscriptions.count() == 1
    rig.gateway.on_contact_presence(rig.account(), contact_as(Status.CHAT))
    assert len(rig.front.notifies(5071)) == 3
    assert len(rig.front.notifies(5072)) == 2


def test_refresh_expiry_unsubscribe_and_errors(store: Store) -> None:
    rig = Rig(store)
    rig.gateway.on_authorization_answer(rig.account(), BOB, AuthorizationAnswer.ALLOW)
    first = rig.subscribe(5071, expires=None)  # default lifetime
    assert first.headers.get("Expires") == "3600"
    tag = first.to.tag
    assert rig.subscribe(5072, expires=10).status == 423
    assert rig.subscribe(5071, to_tag="nope", call_id="sub-5071", cseq=2).status == 481
    assert rig.subscribe(5071, event="dialog").status == 489

    refreshed = rig.subscribe(5071, expires=120, to_tag=tag, call_id="sub-5071", cseq=2)
    assert (refreshed.status, refreshed.headers.get("Expires")) == (200, "120")
    assert notified(rig.front.notifies(5071)[-1])[0] == "active;expires=120"
    assert store.subscriptions.live(rig.clock.now)[0].expires_at == rig.clock.now + 120

    rig.clock.now += 121
    rig.fire(lambda k: k[0] == "presence" and not isinstance(k[1], str))
    assert notified(rig.front.notifies(5071)[-1])[0] == "terminated;reason=timeout"
    assert store.subscriptions.count() == 0

    second = rig.subscribe(5073)
    gone = rig.subscribe(5073, expires=0, to_tag=second.to.tag, call_id="sub-5073", cseq=2)
    assert gone.status == 200
    assert notified(rig.front.notifies(5073)[-1])[0] == "terminated;reason=timeout"
    assert store.subscriptions.count() == 0
    rig.gateway.on_contact_presence(rig.account(), contact_as(Status.AWAY))
    assert len(rig.front.notifies(5073)) == 2  # nothing after the end


def test_refusal_terminates_with_reason_rejected(store: Store) -> None:
    rig = Rig(store)
    rig.subscribe(5071)
    rig.gateway.on_authorization_answer(rig.account(), BOB, AuthorizationAnswer.DENY)
    assert notified(rig.front.notifies(5071)[-1])[0] == "terminated;reason=rejected"
    assert store.subscriptions.count() == 0


def test_account_going_offline_tells_watchers_the_contact_is_offline(store: Store) -> None:
    rig = Rig(store)
    rig.subscribe(5071)
    rig.gateway.on_contact_presence(rig.account(), contact_as(Status.AWAY))
    assert notified(rig.front.notifies(5071)[-1])[1].status is Status.AWAY
    rig.gateway.on_connection_state(rig.account(), ConnectionState.TRANSIENT_DISCONNECT, "")
    assert notified(rig.front.notifies(5071)[-1])[1].status is Status.OFFLINE


def test_subscriptions_survive_a_restart(store: Store) -> None:
    rig = Rig(store)
    response = rig.subscribe(5071)
    rig.gateway.on_contact_presence(rig.account(), contact_as(Status.AWAY))
    before = rig.front.notifies(5071)[-1]
    rig.gateway.stop()

    again = Rig(store, clock=rig.clock)  # a new process: the same store
    assert len(again.worker.pending()) == 1  # expiry re-armed
    again.gateway.on_contact_presence(
        again.account(), ContactPresence(BOB, {"": Presence(Status.BUSY, "back")})
    )
    (after,) = again.front.notifies(5071)
    assert after.call_id == before.call_id
    assert after.to.tag == "ft5071"
    assert after.from_.tag == response.to.tag
    assert after.cseq.number > before.cseq.number
    assert notified(after) == ("active;expires=600", Presence(Status.BUSY, "back", ("busy",)))
    again.gateway.stop()


def test_cseq_stays_increasing_across_a_restart_after_many_notifies(store: Store) -> None:
    """CSeqs are reserved in blocks; a restart past a block boundary still goes up."""
    rig = Rig(store)
    rig.subscribe(5071)
    for n in range(CSEQ_BLOCK + 20):
        status = Status.AWAY if n % 2 else Status.BUSY
        rig.gateway.on_contact_presence(
            rig.account(), ContactPresence(BOB, {"": Presence(status, f"n{n}")})
        )
    sent = [n.cseq.number for n in rig.front.notifies(5071)]
    assert sent == sorted(set(sent))
    assert max(sent) > CSEQ_BLOCK  # the store's first reservation was used up
    rig.gateway.stop()

    again = Rig(store, clock=rig.clock)
    again.gateway.on_contact_presence(
        again.account(), ContactPresence(BOB, {"": Presence(Status.AVAILABLE, "after")})
    )
    (after,) = again.front.notifies(5071)
    assert after.cseq.number > max(sent)
    again.gateway.stop()


# --- authorization requests ----------------------------------------------------------


def test_ask_policy_sends_a_message_and_the_reply_answers_it(store: Store) -> None:
    rig = Rig(store)
    rig.gateway.on_authorization_request(rig.account(), BOB, "")
    (queued,) = store.outbox.pending(USER)
    assert queued.contact == BOB
    assert queued.body.decode() == f"{BOB} asks to see your presence. Reply 'allow' or 'deny'."

    reply = rig.request(
        make_request(
            "MESSAGE",
            f"sip:{BOB};proto=xmpp",
            from_=f"<sip:{USER}>",
            to=f"<sip:{BOB}>",
            body=b" ALLOW ",
            content_type="text/plain",
        )
    )
    assert reply.status == 200
    assert rig.handle.calls == [("answer_authorization", BOB, AuthorizationAnswer.ALLOW)]
    # No request open any more: the same word is an ordinary message now.
    rig.request(
        make_request(
            "MESSAGE",
            f"sip:{BOB}",
            from_=f"<sip:{USER}>",
            to=f"<sip:{BOB}>",
            body=b"allow",
            content_type="text/plain",
        )
    )
    assert rig.handle.calls[-1][:3] == ("send_message", BOB, "allow")


def test_deny_and_allow_roster_policies(store: Store) -> None:
    deny = Rig(store, PresenceSettings(authorization="deny"))
    deny.gateway.on_authorization_request(deny.account(), BOB, "hi")
    assert deny.handle.calls == [("answer_authorization", BOB, AuthorizationAnswer.DENY)]
    assert store.outbox.pending(USER) == []

    roster = Rig(store, PresenceSettings(authorization="allow_roster"))
    roster.subscribe(5071)
    roster.gateway.on_authorization_request(roster.account(), BOB, "")
    assert roster.calls("answer_authorization") == [
        ("answer_authorization", BOB, AuthorizationAnswer.ALLOW)
    ]
    roster.gateway.on_authorization_request(roster.account(), "carol@example.org", "")
    assert [m.contact for m in store.outbox.pending(USER)] == ["carol@example.org"]
    with pytest.raises(ValueError, match="authorization"):
        PresenceSettings.from_section({"authorization": "maybe"})


def test_a_local_send_failure_keeps_the_subscription(store: Store) -> None:
    rig = Rig(store)
    rig.subscribe(5071)
    for _request, _destination, future in rig.front.sent:  # e.g. the front stopping
        future.set_exception(ConnectionAbortedError("SIP front stopped"))
    assert store.subscriptions.count() == 1
    rig.gateway.on_authorization_answer(rig.account(), BOB, AuthorizationAnswer.ALLOW)
    assert notified(rig.front.notifies(5071)[-1])[0] == "active;expires=600"


def _fuzz_seeds() -> list[Path]:
    base = corpus_dir() / "fuzz"
    return sorted(
        [*base.glob("pjproject-fuzz-pidf/*.xml"), *base.glob("pjproject-fuzz-presence/*.xml")]
    )


@pytest.mark.parametrize("seed", _fuzz_seeds(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_mangled_presence_bodies_get_200_or_a_clear_4xx_never_an_error(
    store: Store, seed: Path
) -> None:
    import random

    rng = random.Random(seed.name)  # noqa: S311 - reproducible mutations, not crypto
    original = seed.read_bytes()
    content_type = "application/xpidf+xml" if "xpidf" in seed.name else "application/pidf+xml"
    bodies = [original] + [original[: rng.randrange(1, len(original))] for _ in range(10)]
    for _ in range(20):
        mangled = bytearray(original)
        for _ in range(rng.randrange(1, 4)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        bodies.append(bytes(mangled))
    rig = Rig(store)
    for body in bodies:
        response = rig.publish(body, content_type=content_type)
        assert response.status in (200, 400, 415), (body, response.status, response.reason)
        if response.status != 200:
            assert response.reason
    rig.gateway.stop()


def test_upstream_publications_follow_rfc3903(store: Store) -> None:
    rig = Rig(store, PresenceSettings(upstream="sip:127.0.0.1:5070", upstream_expires=600))

    def publishes() -> list[tuple[Request, Any, concurrent.futures.Future[Response]]]:
        return [(r, d, f) for r, d, f in rig.front.sent if r.method == "PUBLISH"]

    def answer(index: int, status: int = 200, etag: str = "") -> None:
        request, _d, future = publishes()[index]
        headers = [("SIP-ETag", etag), ("Expires", "600")] if status == 200 else []
        future.set_result(make_response(request, status, headers=headers))

    away = ContactPresence(BOB, {"": Presence(Status.AWAY, "out")})
    rig.gateway.on_contact_presence(rig.account(), away)
    (first, destination, _f) = publishes()[0]
    assert (destination.host, destination.port) == ("127.0.0.1", 5070)
    assert str(first.ruri) == f"sip:{BOB}"
    assert first.headers.get("Event") == "presence"
    assert "SIP-If-Match" not in first.headers
    assert pidf_to_presence(parse_pidf(first.body, first.content_type)).note == "out"
    # Two changes while the first is in flight: only the newest goes out, after it.
    rig.gateway.on_contact_presence(rig.account(), contact_as(Status.BUSY))
    rig.gateway.on_contact_presence(rig.account(), contact_as(Status.CHAT))
    assert len(publishes()) == 1
    answer(0, etag="e1")
    second = publishes()[1][0]
    assert second.headers.get("SIP-If-Match") == "e1"
    assert pidf_to_presence(parse_pidf(second.body, second.content_type)).status is Status.CHAT
    answer(1, etag="e2")
    # Refresh before expiry: no body, the current tag.
    rig.fire(lambda k: k == ("presence", ("upstream", f"sip:{BOB}")))
    refresh = publishes()[2][0]
    assert (refresh.body, refresh.headers.get("SIP-If-Match")) == (b"", "e2")
    # The server forgot it (412): publish the whole state afresh.
    answer(2, status=412)
    fresh = publishes()[3][0]
    assert "SIP-If-Match" not in fresh.headers
    assert pidf_to_presence(parse_pidf(fresh.body, fresh.content_type)).status is Status.CHAT
