"""One Matrix account: a matrix-nio ``AsyncClient`` and one /sync loop, as a ``Session``.

Threading: the client is created, driven and closed on ``context.loop``
only; the account actor calls the coroutines there.

Login: an access token kept from an earlier run (``on_key_derived``
record ``matrix_session``, checked against the password) or given directly
(secret ``token:<access token>``) is tried first (``/whoami``); else the
password is exchanged for a token, asking the server for the device id
kept in the record, so the account does not grow a device per login.

Sync: one long-poll /sync at a time.  A failed sync makes the session
report ``CONNECTING`` and retry with jittered exponential backoff (the
account actor queues requests meanwhile); the next good sync flushes what
``send_message`` could not deliver, then reports ``CONNECTED``.  After
``reconnect_window`` seconds of failures the session reports
``TRANSIENT_DISCONNECT`` and the actor logs in afresh.  The sync position
(``next_batch``) is reported as ``matrix_since`` every ``since_interval``
seconds, so a restarted gateway continues where it stopped: no replay, and
what arrived meanwhile is delivered.

Delivery: every message is sent with its ``message_id`` as the transaction
id (``PUT /rooms/{room}/send/m.room.message/{txnId}``): the server drops a
repeat from the same device, so a message resent after a lost answer
arrives once.  429 answers are retried by matrix-nio after
``retry_after_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import ssl
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import aiohttp
import aiohttp_socks
import nio
import python_socks

from purplegw.presence import ContactPresence, Presence, Status
from purplegw.protocols.base import (
    AccountCredentials,
    AuthorizationAnswer,
    BadCredentialsError,
    ConnectionState,
    DeliveryError,
    InvalidContactError,
    OutgoingMessage,
    RosterItem,
    Session,
    SessionContext,
    TransientError,
    TypingState,
)
from purplegw.protocols.matrix.ids import contact_from_mxid, mxid_from_contact, server_name
from purplegw.protocols.matrix.presence_map import presence_from_matrix, presence_to_matrix
from purplegw.protocols.text import for_phone

logger = logging.getLogger(__name__)

SESSION_KEY_KIND = "matrix_session"
SINCE_KEY_KIND = "matrix_since"
TOKEN_PREFIX = "token:"  # noqa: S105 - a marker, not a secret
PASSWORD_PREFIX = "password:"  # noqa: S105 - a marker, not a secret

# Error codes that mean "these credentials will not work until someone
# changes them" (client-server API, "Standard error response").
BAD_CREDENTIAL_CODES = frozenset(
    {
        "M_FORBIDDEN",
        "M_UNKNOWN_TOKEN",
        "M_MISSING_TOKEN",
        "M_USER_DEACTIVATED",
        "M_INVALID_USERNAME",
        "M_USER_LOCKED",
        "M_USER_SUSPENDED",
    }
)
# What a request can raise when the network, the proxy or the server fails
# (matrix-nio lets aiohttp's and python-socks' exceptions through).
NETWORK_ERRORS = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    ValueError,
    python_socks.ProxyError,
    aiohttp_socks.ProxyError,
    aiohttp_socks.ProxyConnectionError,
    aiohttp_socks.ProxyTimeoutError,
)

ENCRYPTED_NOTICE = (
    "[purplegw] This Matrix conversation is end-to-end encrypted. The gateway "
    "cannot read or send encrypted messages; use a Matrix client for it."
)
# How many sent event ids per room are kept to match read receipts.
RECEIPT_MEMORY = 256
# Timeline events per room in one sync; more than this between two syncs
# (a long outage) is fetched page by page with /messages.
TIMELINE_LIMIT = 100
TYPING_TIMEOUT_MS = 30_000


def parse_secret(secret: str) -> tuple[str | None, str | None]:
    """``(password, access_token)`` from the account's secret (one of them is None)."""
    if secret.startswith(TOKEN_PREFIX):
        return None, secret[len(TOKEN_PREFIX) :].strip()
    return secret.removeprefix(PASSWORD_PREFIX), None


def _check(password: str, *parts: str) -> str:
    return hmac.new(password.encode(), "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def session_record(
    password: str, user_id: str, homeserver: str, device_id: str, access_token: str
) -> str:
    """What the gateway stores (encrypted) for a password-derived login.

    The HMAC keyed with the password makes a changed password miss (and log
    in again) instead of using a token obtained with the old one.
    """
    return json.dumps(
        {
            "user_id": user_id,
            "homeserver": homeserver,
            "device_id": device_id,
            "access_token": access_token,
            "check": _check(password, user_id, homeserver, device_id, access_token),
        },
        sort_keys=True,
    )


def session_from_record(
    record: str | None, password: str, user_id: str, homeserver: str
) -> tuple[str, str] | None:
    """``(device_id, access_token)`` if ``record`` was made for exactly these inputs."""
    if not record:
        return None
    try:
        fields = json.loads(record)
        device_id, token = str(fields["device_id"]), str(fields["access_token"])
        ok = (
            fields["user_id"] == user_id
            and fields["homeserver"] == homeserver
            and hmac.compare_digest(
                str(fields["check"]), _check(password, user_id, homeserver, device_id, token)
            )
        )
    except (ValueError, KeyError, TypeError):
        return None
    return (device_id, token) if ok else None


def device_from_record(record: str | None, user_id: str, homeserver: str) -> str:
    """The device id a record names for this user and server, checked or not.

    A device id is no secret: a login with a new password still asks for
    the same device, so the account keeps one device whatever happens.
    """
    try:
        fields = json.loads(record or "")
    except ValueError:
        return ""
    if (
        not isinstance(fields, dict)
        or fields.get("user_id") != user_id
        or fields.get("homeserver") != homeserver
    ):
        return ""
    return str(fields.get("device_id") or "")


def since_record(user_id: str, homeserver: str, since: str) -> str:
    return json.dumps(
        {"user_id": user_id, "homeserver": homeserver, "since": since}, sort_keys=True
    )


def since_from_record(record: str | None, user_id: str, homeserver: str) -> str | None:
    if not record:
        return None
    try:
        fields = json.loads(record)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    if fields.get("user_id") != user_id or fields.get("homeserver") != homeserver:
        return None
    since = fields.get("since")
    return since if isinstance(since, str) and since else None


def _errcode(response: Any) -> str:
    return str(getattr(response, "status_code", "") or "")


def _shared_ssl_context(shared: dict[str, Any], ca_file: str) -> ssl.SSLContext:
    key = ("matrix.ssl_context", ca_file)
    context = shared.get(key)
    if context is None:
        context = ssl.create_default_context(cafile=ca_file or None)
        shared[key] = context
    return context


@contextlib.contextmanager
def _network(what: str) -> Any:
    """aiohttp's and the proxy's exceptions as ``TransientError`` (SIP 503), for SIP requests."""
    try:
        yield
    except NETWORK_ERRORS as exc:
        raise TransientError(f"Matrix {what} failed: {exc}") from exc


class MatrixSession(Session):
    """A Matrix account logged in through matrix-nio (see the module docstring)."""

    def __init__(self, credentials: AccountCredentials, context: SessionContext) -> None:
        super().__init__(credentials, context)
        self.config = context.config
        self.client: Any = None
        self.user_id = ""
        self.homeserver = ""
        self.state = ConnectionState.LOGGED_OUT
        self._logged_in = False
        self._closing = False
        self._healthy = True
        self._failing_since = 0.0
        self._initial = False
        self._sync_task: asyncio.Task[None] | None = None
        self._since_reported = ""
        self._since_reported_at = 0.0
        self._presence = Presence(Status.AVAILABLE)
        self._ledger: OrderedDict[str, OutgoingMessage] = OrderedDict()
        self._direct: dict[str, list[str]] = {}  # contact mxid -> direct room ids (m.direct)
        self._room_contact: dict[str, str] = {}  # direct room id -> contact mxid
        self._invites: dict[str, set[str]] = {}  # inviter mxid -> rooms awaiting an answer
        self._awaiting_join: dict[str, str] = {}  # room we created -> invited contact
        self._typing: dict[str, bool] = {}
        self._sent: dict[str, OrderedDict[str, str]] = {}  # room -> event id -> message id
        self._locks: dict[str, asyncio.Lock] = {}
        self._watched: set[str] = set()
        self._roster: set[str] | None = None  # direct-room peers reported (None: not yet)
        self._told_encrypted: set[str] = context.shared.setdefault(
            ("matrix.told_encrypted", credentials.account_id), set()
        )

    # --- helpers ------------------------------------------------------------------------

    @property
    def events(self) -> Any:
        return self.context.events

    def _report(self, state: ConnectionState, reason: str = "") -> None:
        self.state = state
        self._call("on_connection_state", state, reason)

    def _call(self, name: str, *args: Any) -> None:
        """Invoke one ``SessionEvents`` callback; a bad callback never stops the sync loop."""
        try:
            getattr(self.events, name)(*args)
        except Exception:
            logger.exception("%s callback failed", name)

    def _mxid(self, contact: str) -> str:
        try:
            return mxid_from_contact(contact)
        except ValueError as exc:
            raise InvalidContactError from exc

    def _require_connected(self) -> Any:
        if self.client is None or not self._logged_in:
            raise DeliveryError(f"{self.credentials.ext_user} is not connected to Matrix", 503)
        return self.client

    def _float(self, key: str, default: float) -> float:
        return float(self.config.get(key, default) or default)

    # --- login / logout -----------------------------------------------------------------

    async def _discover(self, server: str) -> str:
        """The client-server API base URL for ``server`` (config, .well-known, or https)."""
        configured = str(self.config.get("homeserver", "") or "").rstrip("/")
        if configured:
            return configured
        cache = self.context.shared.setdefault("matrix.homeservers", {})
        if server in cache:
            return cache[server]
        probe = self._build_client(f"https://{server}", "")
        try:
            answer = await probe.discovery_info()
        except NETWORK_ERRORS as exc:
            logger.info(
                "Matrix discovery for %s failed (%s); using https://%s", server, exc, server
            )
            answer = None
        finally:
            await probe.close()
        url = (
            answer.homeserver_url.rstrip("/")
            if isinstance(answer, nio.DiscoveryInfoResponse)
            else f"https://{server}"
        )
        cache[server] = url
        return url

    def _proxy_url(self) -> str | None:
        proxy = self.context.proxy
        if proxy is None:
            return None
        auth = ""
        if proxy.username:
            auth = f"{quote(proxy.username, safe='')}:{quote(proxy.password or '', safe='')}@"
        return f"http://{auth}{proxy.host}:{proxy.port}"

    def _build_client(self, homeserver: str, device_id: str) -> Any:
        config = nio.AsyncClientConfig(
            # 429: matrix-nio sleeps retry_after_ms and tries again, unbounded
            # (send_timeout of the account actor bounds a request as a whole).
            max_limit_exceeded=None,
            # Network errors: ours to handle (backoff, ledger, state reports).
            max_timeouts=0,
            request_timeout=self._float("request_timeout", 30),
            encryption_enabled=False,
            store_sync_tokens=False,
        )
        tls = None
        if homeserver.startswith("https:"):
            tls = _shared_ssl_context(self.context.shared, str(self.config.get("ca_file") or ""))
        return nio.AsyncClient(
            homeserver,
            self.user_id,
            device_id=device_id or None,
            config=config,
            ssl=tls,
            proxy=self._proxy_url(),
        )

    async def login(self) -> None:
        if self._logged_in:
            return
        self._closing = False
        self._report(ConnectionState.CONNECTING)
        try:
            await self._login()
        except BadCredentialsError as exc:
            await self._close_client()
            self._report(ConnectionState.BAD_CREDENTIALS, str(exc))
            raise
        except TransientError as exc:
            await self._close_client()
            self._report(ConnectionState.TRANSIENT_DISCONNECT, str(exc))
            raise
        except NETWORK_ERRORS as exc:
            await self._close_client()
            error = TransientError(f"cannot reach Matrix homeserver {self.homeserver}: {exc}")
            self._report(ConnectionState.TRANSIENT_DISCONNECT, str(error))
            raise error from exc
        except BaseException:
            await self._close_client()
            raise
        self._logged_in = True
        self._healthy = True
        self._report(ConnectionState.CONNECTED)
        self._sync_task = self.context.loop.create_task(self._run_sync())

    async def _login(self) -> None:
        try:
            self.user_id = mxid_from_contact(self.credentials.ext_user)
        except ValueError as exc:
            raise BadCredentialsError(
                f"{self.credentials.ext_user!r} is not a Matrix user id (@user:server)"
            ) from exc
        self.homeserver = await self._discover(server_name(self.user_id))
        password, token = parse_secret(self.credentials.password)
        record = self.credentials.derived_keys.get(SESSION_KEY_KIND)
        stored = None
        if password is not None:
            stored = session_from_record(record, password, self.user_id, self.homeserver)
        device_id = device_from_record(record, self.user_id, self.homeserver)
        self.client = self._build_client(self.homeserver, device_id)
        if token is not None:
            await self._use_token(token, device_id, given=True)
        elif stored is None or not await self._use_token(stored[1], device_id, given=False):
            await self._password_login(password or "", device_id)
        await self._first_sync()

    async def _use_token(self, token: str, device_id: str, *, given: bool) -> bool:
        """Log in with ``token``; False if a stored token is no longer valid."""
        client = self.client
        client.restore_login(self.user_id, device_id, token)
        answer = await client.whoami()
        if isinstance(answer, nio.WhoamiResponse):
            if answer.user_id != self.user_id:
                raise BadCredentialsError(
                    f"the access token belongs to {answer.user_id}, not {self.user_id}"
                )
            client.device_id = answer.device_id or device_id
            return True
        code = _errcode(answer)
        if code in BAD_CREDENTIAL_CODES:
            if given:
                raise BadCredentialsError(f"{self.homeserver} rejected the access token: {code}")
            client.access_token = ""
            return False
        raise TransientError(f"{self.homeserver} answered whoami with {code} {answer.message}")

    async def _password_login(self, password: str, device_id: str) -> None:
        # matrix-nio asks for the client's device_id: the kept one, if any.
        self.client.device_id = device_id or None
        answer = await self.client.login(
            password, device_name=str(self.config.get("device_name", "purplegw"))
        )
        if isinstance(answer, nio.LoginResponse):
            self._call(
                "on_key_derived",
                SESSION_KEY_KIND,
                session_record(
                    password, self.user_id, self.homeserver, answer.device_id, answer.access_token
                ),
            )
            return
        code = _errcode(answer)
        if code in BAD_CREDENTIAL_CODES:
            raise BadCredentialsError(
                f"{self.homeserver} rejected the credentials of {self.user_id}: {code}"
            )
        raise TransientError(f"{self.homeserver} refused the login: {code} {answer.message}")

    def _sync_filter(self) -> dict[str, Any]:
        return {
            "room": {"timeline": {"limit": TIMELINE_LIMIT}, "state": {"lazy_load_members": False}}
        }

    async def _first_sync(self) -> None:
        since = since_from_record(
            self.credentials.derived_keys.get(SINCE_KEY_KIND), self.user_id, self.homeserver
        )
        direct = await self.client.list_direct_rooms()
        if isinstance(direct, nio.DirectRoomsResponse):
            self._set_direct(direct.rooms)
        # Without a stored position the timeline is history: shown to nobody.
        self._initial = since is None
        answer = await self.client.sync(
            timeout=0,
            since=since,
            full_state=True,
            sync_filter=self._sync_filter(),
            set_presence=presence_to_matrix(self._presence).presence,
        )
        if not isinstance(answer, nio.SyncResponse):
            code = _errcode(answer)
            if code in BAD_CREDENTIAL_CODES:
                raise BadCredentialsError(f"{self.homeserver} refused the sync: {code}")
            raise TransientError(f"first sync with {self.homeserver} failed: {code}")
        await self._process(answer, since)
        self._report_roster()
        self._initial = False
        self._store_since(force=True)
        await self._send_presence()

    async def logout(self) -> None:
        self._closing = True
        was_in = self._logged_in
        self._logged_in = False
        await self._stop_sync()
        if was_in and self.client is not None:
            self._store_since(force=True)
            if self._presence.is_open:
                # No /logout: that would delete the device and its token.
                with contextlib.suppress(*NETWORK_ERRORS):
                    await asyncio.wait_for(self.client.set_presence("offline"), 5)
        await self._close_client()
        if self.state is not ConnectionState.LOGGED_OUT:
            self._report(ConnectionState.LOGGED_OUT)

    async def _stop_sync(self) -> None:
        task, self._sync_task = self._sync_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    def _lost(self, reason: str) -> None:
        """Give up this session: the actor logs in afresh and resends the ledger."""
        if self._closing:
            return
        self._closing = True
        self._logged_in = False
        if self._ledger:
            reason = f"{reason}; {len(self._ledger)} message(s) not delivered"
        logger.info("%s: %s", self.user_id, reason)
        self._store_since(force=True)
        self._report(ConnectionState.TRANSIENT_DISCONNECT, reason)
        self.context.loop.create_task(self._close_client())

    # --- the sync loop ------------------------------------------------------------------

    async def _run_sync(self) -> None:
        """The sync loop; a bug in it ends the session visibly instead of freezing it."""
        try:
            await self._sync_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("%s: sync loop failed", self.user_id)
            self._lost(f"internal error in the sync loop: {exc!r}")

    async def _sync_loop(self) -> None:
        initial, ceiling = self._float("backoff_initial", 0.5), self._float("backoff_max", 30)
        window = self._float("reconnect_window", 300)
        long_poll = int(self._float("sync_timeout", 30) * 1000)
        delay = initial
        while not self._closing:
            since = self.client.next_batch
            try:
                answer = await self.client.sync(
                    timeout=long_poll,
                    sync_filter=self._sync_filter(),
                    set_presence=presence_to_matrix(self._presence).presence,
                )
            except NETWORK_ERRORS as exc:
                answer = exc
            if isinstance(answer, nio.SyncResponse):
                await self._process(answer, since)
                if not self._healthy and await self._flush_ledger():
                    self._healthy = True
                    delay = initial
                    self._report(ConnectionState.CONNECTED, "sync resumed")
                self._store_since()
                if self._healthy:
                    continue
                reason = "messages could not be delivered after the sync resumed"
            else:
                code = _errcode(answer)
                if code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN", "M_USER_DEACTIVATED"):
                    self._token_revoked(code)
                    return
                reason = f"sync with {self.homeserver} failed: {code or answer}"
            if self._healthy:
                self._degrade(reason)
            elif time.monotonic() - self._failing_since > window:
                self._lost(f"{reason} (for {time.monotonic() - self._failing_since:.0f}s)")
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            delay = min(delay * 2, ceiling)

    def _degrade(self, reason: str) -> None:
        """The server stopped answering: queue requests until a sync gets through."""
        self._healthy = False
        self._failing_since = time.monotonic()
        logger.info("%s: %s; retrying", self.user_id, reason)
        self._report(ConnectionState.CONNECTING, reason)

    def _token_revoked(self, code: str) -> None:
        password, _token = parse_secret(self.credentials.password)
        if password is None:
            self._closing = True
            self._logged_in = False
            self._report(
                ConnectionState.BAD_CREDENTIALS,
                f"{self.homeserver} no longer accepts the access token: {code}",
            )
            return
        # A password account logs in again; the stored token is now useless.
        self._call("on_key_derived", SESSION_KEY_KIND, "")
        self._lost(f"{self.homeserver} revoked the access token ({code})")

    def _store_since(self, *, force: bool = False) -> None:
        client = self.client
        since = client.next_batch if client is not None else ""
        if not since or since == self._since_reported:
            return
        now = time.monotonic()
        if not force and now - self._since_reported_at < self._float("since_interval", 5):
            return
        self._since_reported, self._since_reported_at = since, now
        self._call(
            "on_key_derived", SINCE_KEY_KIND, since_record(self.user_id, self.homeserver, since)
        )

    # --- what a sync brings -------------------------------------------------------------

    async def _process(self, answer: Any, since: str | None) -> None:
        for event in answer.account_data_events:
            if getattr(event, "type", "") == "m.direct":
                self._set_direct(event.content)
        self._on_invites(answer.rooms.invite)
        await self._on_joined(answer.rooms.join, since)
        self._on_left(answer.rooms.leave)
        self._on_presence_events(answer.presence_events)

    def _on_invites(self, invites: dict[str, Any]) -> None:
        for room_id, info in invites.items():
            self._on_invite(room_id, info)

    async def _on_joined(self, joined: dict[str, Any], since: str | None) -> None:
        for room_id, info in joined.items():
            events = list(info.timeline.events)
            if info.timeline.limited and since and not self._initial:
                events = await self._missed(room_id, info.timeline.prev_batch, since) + events
            for event in info.state:
                self._on_room_event(room_id, event, history=True)
            for event in events:
                self._on_room_event(room_id, event, history=self._initial)
            for event in info.ephemeral:
                self._on_ephemeral(room_id, event)

    def _on_left(self, left: dict[str, Any]) -> None:
        for room_id in left:
            contact = self._room_contact.get(room_id)
            if contact and self._awaiting_join.pop(room_id, None):
                self._call(
                    "on_authorization_answer", contact_from_mxid(contact), AuthorizationAnswer.DENY
                )

    def _on_presence_events(self, events: list[Any]) -> None:
        for event in events:
            if event.user_id != self.user_id:
                presence = presence_from_matrix(
                    event.presence,
                    event.status_msg,
                    currently_active=event.currently_active,
                    last_active_ago=event.last_active_ago,
                )
                self._call(
                    "on_contact_presence",
                    ContactPresence(contact_from_mxid(event.user_id), {"": presence}),
                )

    async def _missed(self, room_id: str, prev_batch: str | None, since: str) -> list[Any]:
        """Timeline events between ``since`` and a truncated sync's first event, oldest first."""
        if not prev_batch or room_id not in self._room_contact:
            return []
        older: list[Any] = []
        start = prev_batch
        for _page in range(20):
            answer = await self.client.room_messages(
                room_id, start, end=since, direction=nio.MessageDirection.back, limit=TIMELINE_LIMIT
            )
            if not isinstance(answer, nio.RoomMessagesResponse) or not answer.chunk:
                break
            older.extend(answer.chunk)
            if not answer.end or answer.end == start:
                break
            start = answer.end
        older.reverse()
        return older

    def _set_direct(self, content: Any) -> None:
        if not isinstance(content, dict):
            return
        self._direct = {
            user: [r for r in rooms if isinstance(r, str)]
            for user, rooms in content.items()
            if isinstance(rooms, list)
        }
        for user, rooms in self._direct.items():
            for room_id in rooms:
                self._room_contact[room_id] = user
        if self._roster is not None:
            self._report_roster()

    def _report_roster(self) -> None:
        """The peers of the direct rooms (``m.direct``) as the roster: whole once, then changes.

        Matrix has no contact list; a direct room is what a client shows as
        one.  No names: the peers' display names are room state not read here.
        """
        peers = {contact_from_mxid(user) for user, rooms in self._direct.items() if rooms}
        reported, self._roster = self._roster, peers
        callback = getattr(self.events, "on_roster", None)
        if callback is None:
            return  # events written before rosters
        try:
            if reported is None:
                callback([RosterItem(peer, "", "both") for peer in sorted(peers)])
                return
            for peer in sorted(peers - reported):
                self.events.on_roster_item(RosterItem(peer, "", "both"))
            for peer in sorted(reported - peers):
                self.events.on_roster_removed(peer)
        except Exception:
            logger.exception("roster callback failed")

    def _on_invite(self, room_id: str, info: Any) -> None:
        for event in info.invite_state:
            if (
                getattr(event, "state_key", None) == self.user_id
                and getattr(event, "membership", None) == "invite"
            ):
                inviter = event.sender
                if not event.content.get("is_direct"):
                    logger.info(
                        "%s: invite to non-direct room %s from %s ignored",
                        self.user_id,
                        room_id,
                        inviter,
                    )
                    return
                rooms = self._invites.setdefault(inviter, set())
                if room_id in rooms:
                    return
                rooms.add(room_id)
                reason = str(event.content.get("reason") or "")
                self._call(
                    "on_authorization_request", contact_from_mxid(inviter), for_phone(reason)
                )
                return

    def _on_room_event(self, room_id: str, event: Any, *, history: bool) -> None:
        contact = self._room_contact.get(room_id)
        if contact is None:
            return  # not a direct room: group chats are not carried
        if isinstance(event, nio.RoomEncryptionEvent):
            if not history:
                self._tell_encrypted(room_id, contact)
            return
        if isinstance(event, nio.RoomMemberEvent):
            self._on_member(room_id, contact, event, history=history)
            return
        if history or event.sender != contact:
            return
        if isinstance(event, nio.MegolmEvent | nio.UnknownEncryptedEvent):
            self._tell_encrypted(room_id, contact)
            return
        text = self._text_of(event)
        if text is None:
            return
        if self._typing.pop(room_id, False):
            self._call("on_typing", contact_from_mxid(contact), TypingState.ACTIVE)
        # origin_server_ts: when the sender's homeserver took it (ms).
        sent_at = event.server_timestamp / 1000 if event.server_timestamp else None
        self._call(
            "on_message", contact_from_mxid(contact), for_phone(text), event.event_id, sent_at
        )

    @staticmethod
    def _text_of(event: Any) -> str | None:
        if isinstance(event, nio.RoomMessageEmote):
            return f"* {event.sender.removeprefix('@').partition(':')[0]} {event.body}"
        if isinstance(event, nio.RoomMessageText | nio.RoomMessageNotice):
            return event.body
        if isinstance(event, nio.RoomMessageMedia):
            return f"{event.body} ({event.url})"
        return None

    def _on_member(self, room_id: str, contact: str, event: Any, *, history: bool) -> None:
        if event.state_key != contact or room_id not in self._awaiting_join:
            return
        if event.membership == "join":
            del self._awaiting_join[room_id]
            if not history:
                self._call(
                    "on_authorization_answer", contact_from_mxid(contact), AuthorizationAnswer.ALLOW
                )
        elif event.membership in ("leave", "ban") and event.prev_membership == "invite":
            del self._awaiting_join[room_id]
            if not history:
                self._call(
                    "on_authorization_answer", contact_from_mxid(contact), AuthorizationAnswer.DENY
                )

    def _on_ephemeral(self, room_id: str, event: Any) -> None:
        contact = self._room_contact.get(room_id)
        if contact is None:
            return
        if isinstance(event, nio.TypingNoticeEvent):
            typing = contact in event.users
            if typing != self._typing.get(room_id, False):
                self._typing[room_id] = typing
                state = TypingState.COMPOSING if typing else TypingState.PAUSED
                self._call("on_typing", contact_from_mxid(contact), state)
        elif isinstance(event, nio.ReceiptEvent):
            for receipt in event.receipts:
                if receipt.user_id == contact and receipt.receipt_type == "m.read":
                    self._read_up_to(room_id, contact, receipt.event_id)

    def _read_up_to(self, room_id: str, contact: str, event_id: str) -> None:
        """A read receipt covers the event and every earlier one we sent there."""
        sent = self._sent.get(room_id)
        if not sent or event_id not in sent:
            return
        while sent:
            sent_event, message_id = sent.popitem(last=False)
            self._call("on_receipt", contact_from_mxid(contact), message_id)
            if sent_event == event_id:
                return

    def _tell_encrypted(self, room_id: str, contact: str) -> None:
        """Say once per room (per process) that the gateway cannot take part in it."""
        if room_id in self._told_encrypted:
            return
        self._told_encrypted.add(room_id)
        logger.info("%s: direct room %s with %s is encrypted", self.user_id, room_id, contact)
        self._call("on_message", contact_from_mxid(contact), ENCRYPTED_NOTICE, None)

    def _encrypted(self, room_id: str) -> bool:
        room = self.client.rooms.get(room_id) if self.client is not None else None
        return bool(room is not None and room.encrypted)

    # --- requests from the SIP side -----------------------------------------------------

    def unacked_messages(self) -> list[OutgoingMessage]:
        """Messages ``send_message`` took (returned True for) that never reached the server."""
        return list(self._ledger.values())

    async def send_message(
        self,
        contact: str,
        text: str,
        message_id: str,
        receipt: bool = False,  # noqa: FBT001, FBT002 - positional: requests carry args as a tuple
    ) -> bool | None:
        mxid = self._mxid(contact)
        self._require_connected()
        message = OutgoingMessage(contact_from_mxid(mxid), text, message_id, receipt)
        if self._ledger or not self._healthy:
            self._ledger[message_id] = message  # behind the ones waiting: order kept
            return True
        try:
            await self._deliver(mxid, text, message_id)
        except (TransientError, *NETWORK_ERRORS) as exc:
            logger.info(
                "%s: message %s to %s kept for retry: %s", self.user_id, message_id, mxid, exc
            )
            self._ledger[message_id] = message
            if self._healthy:
                self._degrade(f"sending failed: {exc}")
            return True
        return None

    async def _flush_ledger(self) -> bool:
        """Send what waits, in order; True when all went (each one reports ``on_message_acked``)."""
        while self._ledger:
            message_id, message = next(iter(self._ledger.items()))
            try:
                await self._deliver(mxid_from_contact(message.contact), message.text, message_id)
            except (TransientError, *NETWORK_ERRORS) as exc:
                logger.info("%s: resend of %s failed: %s", self.user_id, message_id, exc)
                return False
            except DeliveryError as exc:
                logger.warning("%s: message %s dropped: %s", self.user_id, message_id, exc)
            del self._ledger[message_id]
            self._call("on_message_acked", message_id)
        return True

    async def _deliver(self, mxid: str, text: str, message_id: str) -> None:
        room_id = await self._direct_room(mxid, create=True)
        if self._encrypted(room_id):
            self._tell_encrypted(room_id, mxid)
            raise DeliveryError(
                "the Matrix room is end-to-end encrypted; the gateway "
                "does not post plaintext into it",
                488,
            )
        answer = await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": text}, tx_id=message_id
        )
        if isinstance(answer, nio.RoomSendResponse):
            sent = self._sent.setdefault(room_id, OrderedDict())
            sent[answer.event_id] = message_id
            while len(sent) > RECEIPT_MEMORY:
                sent.popitem(last=False)
            return
        self._raise_for(answer, "send")

    def _raise_for(self, answer: Any, what: str) -> None:
        code = _errcode(answer)
        if code in ("M_FORBIDDEN", "M_NOT_FOUND", "M_UNKNOWN"):
            raise DeliveryError(f"Matrix {what} refused: {code} {answer.message}", 403)
        raise TransientError(f"Matrix {what} failed: {code} {answer.message}")

    async def _direct_room(self, mxid: str, *, create: bool) -> str:
        """The direct room with ``mxid``: an accepted invite, a joined room, or a new one."""
        lock = self._locks.setdefault(mxid, asyncio.Lock())
        async with lock:
            for room_id in self._invites.pop(mxid, set()):
                # Writing to someone whose invite waits: the user accepts it.
                await self._join(mxid, room_id)
            joined = [r for r in self._direct.get(mxid, []) if r in self.client.rooms]
            if joined:
                room_id = joined[-1]
                room = self.client.rooms[room_id]
                if mxid not in room.users and mxid not in room.invited_users:
                    answer = await self.client.room_invite(room_id, mxid)
                    if isinstance(answer, nio.RoomInviteError):
                        self._raise_for(answer, "invite")
                return room_id
            if not create:
                raise DeliveryError("no direct room with this contact", 404)
            answer = await self.client.room_create(
                is_direct=True, invite=[mxid], preset=nio.RoomPreset.trusted_private_chat
            )
            if not isinstance(answer, nio.RoomCreateResponse):
                self._raise_for(answer, "room creation")
            room_id = answer.room_id
            self._awaiting_join[room_id] = mxid
            await self._mark_direct(mxid, room_id)
            # The client learns the room from the next sync; until then
            # this is enough for _direct_room and room_send.
            self.client.rooms.setdefault(room_id, nio.MatrixRoom(room_id, self.user_id))
            self.client.rooms[room_id].add_member(mxid, None, None, invited=True)
            return room_id

    async def _join(self, mxid: str, room_id: str) -> None:
        # Known as a direct room before the join: the sync that brings the
        # room's timeline (what the contact wrote with the invite) may be
        # handled before this coroutine resumes.
        known = self._room_contact.get(room_id)
        self._room_contact[room_id] = mxid
        answer = await self.client.join(room_id)
        if isinstance(answer, nio.JoinResponse):
            self.client.rooms.setdefault(room_id, nio.MatrixRoom(room_id, self.user_id))
            await self._mark_direct(mxid, room_id)
        else:
            if known is None:
                self._room_contact.pop(room_id, None)
            logger.info("%s: joining %s failed: %s", self.user_id, room_id, answer)

    async def _mark_direct(self, mxid: str, room_id: str) -> None:
        """Add ``room_id`` to our m.direct account data (merged with the server's copy)."""
        current = await self.client.list_direct_rooms()
        content = dict(current.rooms) if isinstance(current, nio.DirectRoomsResponse) else {}
        content = {**self._direct, **content}
        rooms = list(content.get(mxid, []))
        if room_id not in rooms:
            rooms.append(room_id)
        content[mxid] = rooms
        self._set_direct(content)
        path = f"/_matrix/client/v3/user/{quote(self.user_id, safe='')}/account_data/m.direct"
        response = await self.client.send(
            "PUT",
            path,
            json.dumps(content),
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.client.access_token}",
            },
        )
        async with response:
            if response.status >= 400:
                logger.info("%s: m.direct update failed: HTTP %d", self.user_id, response.status)

    async def send_typing(self, contact: str, state: TypingState) -> None:
        mxid = self._mxid(contact)
        client = self._require_connected()
        rooms = [r for r in self._direct.get(mxid, []) if r in client.rooms]
        if not rooms:
            return  # nobody to show it to yet: no room is created for a typing notice
        typing = state is TypingState.COMPOSING
        with _network("typing notice"):
            answer = await client.room_typing(
                rooms[-1], typing_state=typing, timeout=TYPING_TIMEOUT_MS
            )
        if isinstance(answer, nio.RoomTypingError):
            self._raise_for(answer, "typing notice")

    async def _send_presence(self) -> None:
        wanted = presence_to_matrix(self._presence)
        answer = await self.client.set_presence(wanted.presence, wanted.status_msg)
        if isinstance(answer, nio.PresenceSetError):
            logger.info("%s: presence not set: %s", self.user_id, answer)

    async def set_presence(self, presence: Presence) -> None:
        self._presence = presence
        if self.client is None or not self._logged_in:
            return  # sent by the next login
        with _network("presence"):
            await self._send_presence()

    async def add_contact(self, contact: str) -> None:
        """Watch ``contact``: current presence now, a direct room (and invite) if none yet.

        Matrix shows presence only to users who share a room: the invite is
        Matrix's form of a subscription request, and the contact's join is
        reported as ``on_authorization_answer(ALLOW)``.
        """
        mxid = self._mxid(contact)
        client = self._require_connected()
        self._watched.add(mxid)
        with _network("contact"):
            await self._direct_room(mxid, create=True)
            answer = await client.get_presence(mxid)
        if isinstance(answer, nio.PresenceGetResponse):
            presence = presence_from_matrix(
                answer.presence,
                answer.status_msg,
                currently_active=answer.currently_active,
                last_active_ago=answer.last_active_ago,
            )
            self._call(
                "on_contact_presence", ContactPresence(contact_from_mxid(mxid), {"": presence})
            )

    async def remove_contact(self, contact: str) -> None:
        self._watched.discard(self._mxid(contact))

    async def answer_authorization(self, contact: str, answer: AuthorizationAnswer) -> None:
        mxid = self._mxid(contact)
        client = self._require_connected()
        rooms = self._invites.pop(mxid, set())
        with _network("invite answer"):
            for room_id in rooms:
                if answer is AuthorizationAnswer.ALLOW:
                    await self._join(mxid, room_id)
                else:
                    await client.room_leave(room_id)
