"""The gateway as a SIP contact: its commands, its account lines, its notices (pure).

``sip:gateway@DOMAIN`` (``[gateway] contact_user``) is a contact every SIP
user has.  purplegw.gateway.contact_service runs it on the gateway's
worker (SUBSCRIBE dialogs, MESSAGE in and out); the rules live here, with
no I/O and the clock passed in, so that they are tested on their own.

Rules:

Rule 1. A MESSAGE body is one command: a verb (any case) and its
        arguments, separated by blanks.  ``help``, ``status``, ``relogin
        [ACCOUNT]``, ``add CONTACT [PROTOCOL]``, ``remove CONTACT
        [PROTOCOL]``, ``allow CONTACT [PROTOCOL]``, ``deny CONTACT
        [PROTOCOL]``.  Anything else is answered with the list of commands,
        a verb with the wrong number of arguments with its usage; both point
        to ``help``.
Rule 2. CONTACT is the network's own id (``bob@example.org``, an IRC
        nick) or the SIP URI a phone shows for it
        (``sip:bob@example.org;proto=xmpp``: its ``proto`` names the protocol).
Rule 3. The account a contact goes through: the PROTOCOL named (or the
        URI's ``proto``); else, for ``user@host``, the user's account that
        addresses ``user@host`` contacts (XMPP, Matrix) on the same domain,
        else the only one; for a bare name, the only account that takes bare
        names (IRC).  No such account, or several with nothing to choose
        between them: the reply says so and how to name the protocol.
        ``remove`` first looks among the contacts the gateway knows for the
        user: a contact known on one protocol only is removed there.
Rule 4. ACCOUNT (``relogin``) is a protocol, an account's external id or
        its row id; without it, every account of the user.
Rule 5. An account's line: ``PROTOCOL EXT_USER: STATE``, STATE being
        ``connected``, ``connecting``, ``server unreachable (why), backing
        off until HH:MM UTC``, ``bad credentials (why)``, ``gave up after
        flapping (why)``, ``disabled (why)`` (its protocol is not usable),
        ``logged out`` or ``restarting`` (its worker process is).  Only
        ``connected`` is open; the presence tuple carries the same line.
Rule 6. Trouble notices: an account entering bad credentials, or giving
        up after flapping, is worth one MESSAGE to its user.  Not another
        about that account until it has been connected since, and never two
        within ``min_interval`` seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import unquote

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

# Connection states, as the account events and `purplegw status` spell them
# (purplegw.protocols.base.ConnectionState, purplegw.actors.state).
CONNECTED = "connected"
CONNECTING = "connecting"
TRANSIENT = "transient_disconnect"
BAD_CREDENTIALS = "bad_credentials"
UNKNOWN_ERROR = "unknown_error"
LOGGED_OUT = "logged_out"
WORKER_RESTARTING = "worker_restarting"
# What the supervisor writes for an account whose adapter is disabled or broken.
UNAVAILABLE = "protocol unavailable"

VERBS = ("help", "status", "relogin", "add", "remove", "allow", "deny")

HELP = """Commands (send them to this contact):
help - this text
status - your accounts and their state
relogin [ACCOUNT] - log in again (all accounts, or one: protocol or id)
add CONTACT [PROTOCOL] - add to your contacts and ask to see their presence
remove CONTACT [PROTOCOL] - remove from your contacts
allow CONTACT - let a contact who asked see your presence
deny CONTACT - refuse a contact who asked"""

UNKNOWN = (
    "Unknown command {verb!r}. Commands: help, status, relogin [ACCOUNT], add CONTACT"
    " [PROTOCOL], remove CONTACT, allow CONTACT, deny CONTACT. Send 'help' for more."
)


class AccountView(NamedTuple):
    """One account of the user as the gateway contact shows it."""

    account_id: int
    protocol: str
    ext_user: str
    state: str
    reason: str = ""
    retry_at: float | None = None
    gave_up: bool = False


# --- Rule 1: commands ----------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    verb: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Invalid:
    """Not a command: ``reply`` says why."""

    reply: str


_ARITY = {
    "help": (0, 0),
    "status": (0, 0),
    "relogin": (0, 1),
    "add": (1, 2),
    "remove": (1, 2),
    "allow": (1, 2),
    "deny": (1, 2),
}
_USAGE = {
    "relogin": "relogin [ACCOUNT]",
    "add": "add CONTACT [PROTOCOL]",
    "remove": "remove CONTACT [PROTOCOL]",
    "allow": "allow CONTACT [PROTOCOL]",
    "deny": "deny CONTACT [PROTOCOL]",
}


def parse(text: str) -> Command | Invalid:
    """Rule 1: ``text`` as a command."""
    words = text.split()
    if not words:
        return Invalid(UNKNOWN.format(verb=""))
    verb = words[0].lower().rstrip(".!?")
    if verb not in _ARITY:
        return Invalid(UNKNOWN.format(verb=words[0][:40]))
    args = tuple(words[1:])
    low, high = _ARITY[verb]
    if not low <= len(args) <= high:
        usage = _USAGE.get(verb, verb)
        return Invalid(f"Usage: {usage}. Send 'help' for more.")
    return Command(verb, args)


# --- Rules 2-4: which contact, which account ---------------------------------------------


@dataclass(frozen=True)
class ContactRef:
    """A CONTACT argument: the id as typed (or taken from a SIP URI) and its protocol if named."""

    user: str
    host: str  # "" for a bare name
    protocol: str | None

    def contact(self, *, user_at_host: bool) -> str:
        """The network's id: ``user@host`` where the protocol addresses so, else the name."""
        if user_at_host and self.host:
            return f"{self.user}@{self.host}"
        return self.user


def contact_ref(text: str, protocol: str | None = None) -> ContactRef:
    """Rule 2: ``text`` (an id or a SIP URI) with ``protocol`` (the command's, if any)."""
    value = text.strip().strip("<>")
    proto = protocol
    if value.lower().startswith(("sip:", "sips:")):
        value = value.split(":", 1)[1]
        value, _, params = value.partition(";")
        for param in params.split(";"):
            name, _, param_value = param.partition("=")
            if name.strip().lower() == "proto" and param_value and proto is None:
                proto = param_value.strip()
        value = unquote(value)
    user, at, host = value.rpartition("@")
    if not at:
        return ContactRef(value, "", proto)
    return ContactRef(user, host.lower(), proto)


def _domain(ext_user: str) -> str:
    return ext_user.rpartition("@")[2].lower() if "@" in ext_user else ""


def account_for(  # noqa: PLR0911 - one answer per case of Rule 3
    accounts: Sequence[AccountView],
    ref: ContactRef,
    *,
    canonical: Callable[[str], str],
    user_at_host: Callable[[str], bool],
    known_on: Iterable[str] = (),
) -> AccountView | str:
    """Rule 3: the account ``ref`` goes through, or the reply saying why there is none."""
    if not accounts:
        return "You have no accounts on this gateway."
    if ref.protocol:
        try:
            protocol = canonical(ref.protocol)
        except Exception:  # noqa: BLE001 - any refusal means "unknown id"
            return f"Unknown protocol {ref.protocol!r}."
        on = [a for a in accounts if a.protocol == protocol]
        return on[0] if on else f"You have no {protocol} account."
    known = sorted(set(known_on) & {a.protocol for a in accounts})
    if len(known) == 1:
        return next(a for a in accounts if a.protocol == known[0])
    if ref.host:
        candidates = [a for a in accounts if user_at_host(a.protocol)]
        same = [a for a in candidates if _domain(a.ext_user) == ref.host]
        if len(same) == 1:
            return same[0]
        if len(candidates) == 1:
            return candidates[0]
    else:
        candidates = [a for a in accounts if not user_at_host(a.protocol)]
        if len(candidates) == 1:
            return candidates[0]
    name = f"{ref.user}@{ref.host}" if ref.host else ref.user
    if not candidates:
        protocols = ", ".join(sorted({a.protocol for a in accounts}))
        return f"None of your accounts takes {name!r} as it is; name the protocol ({protocols})."
    protocols = ", ".join(sorted({a.protocol for a in candidates}))
    return f"Several of your accounts could take {name!r} ({protocols}); name the protocol."


def accounts_named(accounts: Sequence[AccountView], name: str | None) -> list[AccountView] | str:
    """Rule 4: the accounts ``relogin`` means, or the reply saying why there are none."""
    if not accounts:
        return "You have no accounts on this gateway."
    if not name:
        return list(accounts)
    key = name.strip().lstrip("#").lower()
    found = [
        a for a in accounts if key in (a.protocol.lower(), a.ext_user.lower(), str(a.account_id))
    ]
    if not found:
        names = ", ".join(f"{a.protocol} {a.ext_user}" for a in accounts)
        return f"No account {name!r}; yours: {names}."
    return found


# --- Rule 5: account lines ------------------------------------------------------------


def describe(account: AccountView) -> tuple[bool, str]:  # noqa: C901, PLR0911 - one answer per state
    """Rule 5: (open, the state in words) of ``account``."""
    state, reason = account.state, account.reason.strip()
    why = f" ({reason})" if reason else ""
    if state == CONNECTED:
        return True, "connected"
    if state == CONNECTING:
        return False, "connecting"
    if state == BAD_CREDENTIALS:
        return False, f"bad credentials{why}"
    if account.gave_up and state != LOGGED_OUT:
        return False, f"gave up after flapping{why}"
    if state == TRANSIENT:
        until = ""
        if account.retry_at is not None:
            until = f", backing off until {clock_time(account.retry_at)}"
        return False, f"server unreachable{why}{until}"
    if state == UNKNOWN_ERROR and reason.startswith(UNAVAILABLE):
        detail = reason.partition(":")[2].strip()
        return False, f"disabled ({detail})" if detail else "disabled"
    if state == UNKNOWN_ERROR:
        return False, f"error{why}"
    if state == LOGGED_OUT:
        return False, f"logged out{why}"
    if state == WORKER_RESTARTING:
        return False, "restarting"
    return False, state.replace("_", " ")


def line(account: AccountView) -> str:
    return f"{account.protocol} {account.ext_user}: {describe(account)[1]}"


def status_text(accounts: Sequence[AccountView]) -> str:
    if not accounts:
        return "You have no accounts on this gateway."
    return "\n".join(line(a) for a in accounts)


def clock_time(when: float) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(when))


# --- Rule 6: trouble notices ------------------------------------------------------------


def trouble(account: AccountView) -> str | None:
    """What makes ``account`` worth a notice (Rule 6), or None."""
    if account.state == BAD_CREDENTIALS:
        return "bad credentials"
    if account.gave_up and account.state not in (CONNECTED, CONNECTING, LOGGED_OUT):
        return "gave up after flapping"
    return None


def trouble_text(account: AccountView) -> str:
    what = describe(account)[1]
    if account.state == BAD_CREDENTIALS:
        advice = "Ask your administrator to update the password, then send 'relogin'."
    else:
        advice = "Send 'relogin' to try again."
    return f"Your {account.protocol} account {account.ext_user} stopped: {what}. {advice}"


class TroubleNotices:
    """Rule 6: which state changes are worth a MESSAGE (clock passed in)."""

    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self._told: dict[int, float] = {}  # account id -> when its last notice went
        self._armed: dict[int, bool] = {}  # False: told, not connected since

    def observe(self, account: AccountView, now: float) -> str | None:
        """The notice to send for ``account``'s new state, or None."""
        key = account.account_id
        if account.state == CONNECTED:
            self._armed[key] = True
            return None
        if trouble(account) is None or not self._armed.get(key, True):
            return None
        last = self._told.get(key)
        if last is not None and now - last < self.min_interval:
            return None
        self._armed[key] = False
        self._told[key] = now
        return trouble_text(account)


__all__ = [
    "HELP",
    "VERBS",
    "AccountView",
    "Command",
    "ContactRef",
    "Invalid",
    "TroubleNotices",
    "account_for",
    "accounts_named",
    "contact_ref",
    "describe",
    "line",
    "parse",
    "status_text",
    "trouble",
]
