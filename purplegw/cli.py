"""The ``purplegw`` command line (click).

Exit codes: 0 success, 1 the operation failed (store, daemon...), 2 bad
usage (click's own), 78 invalid configuration (EX_CONFIG).  Every error is
one message on stderr that says what to do; nothing is written on error.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

from purplegw import __version__, logs
from purplegw.actors.state import STATUS_STATES
from purplegw.config import Config, load_config
from purplegw.exceptions import ConfigError, GatewayError, StoreError, UnknownProtocolError

logger = logging.getLogger(__name__)

EXIT_FAILURE = 1
EXIT_CONFIG = 78
CSV_COLUMNS = ("sip_user", "ext_user", "ext_prot", "ext_pass")


class Context:
    """Lazily loaded config and store, shared by the subcommands."""

    def __init__(self, config_path: str | None, verbosity: int) -> None:
        self.config_path = config_path
        self.verbosity = verbosity
        self._config: Config | None = None
        self._registry: Any = None
        self.daemon = False  # set by `run`: log at the configured level

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from purplegw.protocols.loader import load_adapters  # noqa: PLC0415

            self._registry = load_adapters(check_environment=False)
        return self._registry

    @property
    def config(self) -> Config:
        if self._config is None:
            defaults = {
                name: info.adapter.get_default_config()
                for name, info in self.registry.infos.items()
                if info.adapter is not None
            }
            try:
                self._config = load_config(self.config_path, protocol_defaults=defaults)
            except ConfigError as exc:
                fail("invalid configuration:\n  " + "\n  ".join(exc.errors), EXIT_CONFIG)
            logs.setup(self._config, verbosity=self.verbosity, admin=not self.daemon)
        return self._config

    def store(self, *, check: bool = True) -> Any:
        from purplegw.store import open_store  # noqa: PLC0415

        store = open_store(self.config)
        if check:
            pending = store.check()
            if pending:
                logger.warning("%d database upgrade(s) pending: run `purplegw db upgrade`", pending)
        return store

    def canonical_protocol(self, protocol: str) -> str:
        try:
            return self.registry.canonical(protocol)
        except UnknownProtocolError as exc:
            fail(str(exc))


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"purplegw: error: {message}", err=True)
    sys.exit(code)


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="PURPLEGW_CONFIG",
    show_envvar=True,
    help="Config file (TOML); defaults to the built-in etc/purplegw.toml values.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for TRACE).")
@click.version_option(__version__, prog_name="purplegw")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """SIP <-> instant messaging and presence gateway."""
    logs.bootstrap()
    ctx.obj = Context(config_path, verbose)


# --- run / reload / status -------------------------------------------------------------


@main.command()
@pass_ctx
def run(ctx: Context) -> None:
    """Run the gateway in the foreground (SIGHUP reloads accounts, SIGTERM stops)."""
    from purplegw.app import run_gateway  # noqa: PLC0415

    ctx.daemon = True
    config = ctx.config
    try:
        store = ctx.store()
        code = run_gateway(config, store, ctx.registry)
    except GatewayError as exc:
        fail(str(exc))
    sys.exit(code)


@main.command()
@pass_ctx
def reload(ctx: Context) -> None:
    """Make the running gateway re-read the account table (sends SIGHUP)."""
    from purplegw.actors.process import send_reload  # noqa: PLC0415

    try:
        pid = send_reload(ctx.config.pid_file)
    except (GatewayError, OSError) as exc:
        fail(f"cannot signal the gateway ({ctx.config.pid_file}): {exc}")
    click.echo(f"reload requested from pid {pid}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    type=click.Choice(STATUS_STATES, case_sensitive=False),
    help="Only accounts in this state (repeatable): " + ", ".join(STATUS_STATES) + ".",
)
@click.option(
    "--user",
    "sip_user",
    metavar="SIP_USER",
    help="Only this SIP user's accounts (sip:alice@example.org, or alice@example.org).",
)
@pass_ctx
def status(ctx: Context, as_json: bool, states: tuple[str, ...], sip_user: str | None) -> None:
    """Show every account's state, last error and counters (asks the running gateway).

    Every account is listed at all times; one whose worker process is being
    started again shows as worker_restarting with what it last reported.
    """
    from purplegw.actors.control import select_status  # noqa: PLC0415
    from purplegw.actors.process import query_status  # noqa: PLC0415
    from purplegw.store.accounts import normalize_sip_user  # noqa: PLC0415

    try:
        accounts = query_status(ctx.config.control_socket)
    except (GatewayError, OSError) as exc:
        fail(f"cannot reach the gateway at {ctx.config.control_socket}: {exc}")
    user = normalize_sip_user(sip_user) if sip_user else None
    accounts = select_status(accounts, states=states, sip_user=user)
    if as_json:
        # One account per line: indent= would switch json to its pure-Python
        # encoder, most of the command's time at 10,000 accounts.
        lines = ",\n".join(json.dumps(a, sort_keys=True) for a in accounts)
        click.echo(f"[\n{lines}\n]" if accounts else "[]")
        return
    rows = [
        (
            str(a.get("account_id", "")),
            a.get("sip_user", ""),
            a.get("protocol", ""),
            a.get("ext_user", ""),
            a.get("state", ""),
            a.get("last_error") or "",
        )
        for a in accounts
    ]
    _table(("ID", "SIP USER", "PROTOCOL", "EXTERNAL USER", "STATE", "LAST ERROR"), rows)


# --- db ------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Create and upgrade the store."""


@db.command("init")
@pass_ctx
def db_init(ctx: Context) -> None:
    """Create the data directory, the password key file and the tables (idempotent)."""
    from purplegw.store.crypto import generate_key_file  # noqa: PLC0415

    config = ctx.config
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        store = ctx.store(check=False)
        done = store.upgrade()
        created = generate_key_file(config.key_file)
    except (GatewayError, OSError) as exc:
        fail(str(exc))
    from purplegw.store.database import redact_url  # noqa: PLC0415

    click.echo(
        f"store: {redact_url(config.db_url)} table {store.tables.accounts}"
        + (f" (applied {len(done)} upgrade(s))" if done else " (up to date)")
    )
    click.echo(f"key file: {config.key_file} ({'created' if created else 'kept'})")


@db.command("upgrade")
@click.option("--no-encrypt", is_flag=True, help="Leave plaintext passwords as they are.")
@pass_ctx
def db_upgrade(ctx: Context, no_encrypt: bool) -> None:
    """Apply schema upgrades, then encrypt legacy plaintext passwords."""
    try:
        store = ctx.store(check=False)
        done = store.upgrade()
        encrypted = 0 if no_encrypt else store.accounts.encrypt_plaintext()
    except GatewayError as exc:
        fail(str(exc))
    for line in done:
        click.echo(f"applied upgrade {line}")
    if not done:
        click.echo("schema up to date")
    if not no_encrypt:
        click.echo(f"encrypted {encrypted} plaintext password(s)")


# --- accounts ----------------------------------------------------------------------


@main.group()
def accounts() -> None:
    """Manage the external accounts of SIP users (the purplemap table)."""


@accounts.command("add")
@click.argument("sip_user")
@click.argument("ext_user")
@click.argument("protocol")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (first line)."
)
@pass_ctx
def accounts_add(
    ctx: Context, sip_user: str, ext_user: str, protocol: str, password_stdin: bool
) -> None:
    """Give SIP_USER the EXT_USER account on PROTOCOL (xmpp, irc, or an alias).

    Without --password-stdin the password is read from standard input when
    it is not a terminal, and prompted for (hidden) when it is.
    """
    from purplegw.store import NewAccount  # noqa: PLC0415

    ctx.canonical_protocol(protocol)
    password = _read_password(password_stdin)
    try:
        account_id = ctx.store().accounts.add(
            NewAccount(sip_user, ext_user, protocol.lower(), password)
        )
    except GatewayError as exc:
        fail(str(exc))
    click.echo(f"added account {account_id}: {sip_user} -> {ext_user} ({protocol.lower()})")


@accounts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def accounts_list(ctx: Context, as_json: bool) -> None:
    """List accounts (passwords are never shown)."""
    try:
        rows = ctx.store().accounts.list()
    except GatewayError as exc:
        fail(str(exc))
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "sip_user": r.sip_user,
                        "ext_user": r.ext_user,
                        "protocol": r.ext_prot,
                        "password": _password_state(r),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    _table(
        ("ID", "SIP USER", "EXTERNAL USER", "PROTOCOL", "PASSWORD"),
        [(str(r.id), r.sip_user, r.ext_user, r.ext_prot, _password_state(r)) for r in rows],
    )


@accounts.command("remove")
@click.argument("account_id", type=int)
@pass_ctx
def accounts_remove(ctx: Context, account_id: int) -> None:
    """Remove the account with id ACCOUNT_ID."""
    try:
        removed = ctx.store().accounts.remove(account_id)
    except GatewayError as exc:
        fail(str(exc))
    if not removed:
        fail(f"no account with id {account_id}")
    click.echo(f"removed account {account_id}")


@accounts.command("import")
@click.argument("csv_file", type=click.File("r", encoding="utf-8"))
@pass_ctx
def accounts_import(ctx: Context, csv_file: Any) -> None:
    """Add every row of CSV_FILE, or none if any row is bad.

    The first line names the columns: sip_user,ext_user,ext_prot,ext_pass
    (the original module's column names; ext_pass may be empty).
    """
    from purplegw.store import NewAccount  # noqa: PLC0415

    reader = csv.DictReader(csv_file)
    missing = [c for c in CSV_COLUMNS[:3] if c not in (reader.fieldnames or [])]
    if missing:
        fail(f"{csv_file.name}: header must name {','.join(CSV_COLUMNS)}; missing {missing}")
    new, errors = [], []
    for row in reader:
        line = reader.line_num
        try:
            ctx.registry.canonical(row.get("ext_prot") or "")
        except UnknownProtocolError as exc:
            errors.append(f"{csv_file.name}:{line}: ext_prot: {exc}")
            continue
        if any(v is None for v in row.values()) or None in row:
            errors.append(
                f"{csv_file.name}:{line}: expected {len(reader.fieldnames or [])} columns"
            )
            continue
        new.append(
            NewAccount(
                row["sip_user"], row["ext_user"], row["ext_prot"].lower(), row.get("ext_pass") or ""
            )
        )
    if errors:
        fail("nothing imported:\n  " + "\n  ".join(errors))
    try:
        repo = ctx.store().accounts
        with click.progressbar(length=len(new), label="importing", file=sys.stderr) as bar:
            ids = repo.add_many(new, progress=bar.update)
    except StoreError as exc:
        fail(f"nothing imported: {exc}")
    click.echo(f"imported {len(ids)} account(s)")


def _read_password(from_stdin: bool) -> str:
    """The first line of stdin when asked for or piped; a hidden prompt on a terminal."""
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _password_state(row: Any) -> str:
    if not row.has_password:
        return "none"
    return "encrypted" if row.password_encrypted else "plaintext"


# --- users ---------------------------------------------------------------------------


@main.group()
def users() -> None:
    """Manage the gateway's own SIP users (standalone mode; Kamailio subscriber table)."""


def _split_aor(ctx: Context, user: str) -> tuple[str, str]:
    user = user.removeprefix("sip:")
    name, sep, domain = user.partition("@")
    return name, (domain if sep else ctx.config["sip"]["domain"]).lower()


@users.command("add")
@click.argument("user")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option(
    "--keep-plaintext",
    is_flag=True,
    help="Also store the plaintext password (needed for SHA-256 digest).",
)
@pass_ctx
def users_add(ctx: Context, user: str, password_stdin: bool, keep_plaintext: bool) -> None:
    """Add SIP user USER (name@domain; the domain defaults to [sip] domain)."""
    username, domain = _split_aor(ctx, user)
    password = _read_password(password_stdin)
    try:
        ctx.store().users.add(username, domain, password, keep_plaintext=keep_plaintext)
    except GatewayError as exc:
        fail(str(exc))
    click.echo(f"added SIP user {username}@{domain}")


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def users_list(ctx: Context, as_json: bool) -> None:
    """List SIP users (credentials are never shown)."""
    try:
        rows = ctx.store().users.list()
    except GatewayError as exc:
        fail(str(exc))
    if as_json:
        click.echo(
            json.dumps(
                [{"id": u.id, "username": u.username, "domain": u.domain} for u in rows], indent=2
            )
        )
        return
    _table(("ID", "USER", "DOMAIN"), [(str(u.id), u.username, u.domain) for u in rows])


@users.command("remove")
@click.argument("user")
@pass_ctx
def users_remove(ctx: Context, user: str) -> None:
    """Remove SIP user USER (name@domain)."""
    username, domain = _split_aor(ctx, user)
    try:
        removed = ctx.store().users.remove(username, domain)
    except GatewayError as exc:
        fail(str(exc))
    if not removed:
        fail(f"no SIP user {username}@{domain}")
    click.echo(f"removed SIP user {username}@{domain}")


# --- messages ----------------------------------------------------------------------

REQUEUED_COMMAND = "messages.requeued"  # control-socket command: "look at the queues again"


@main.group()
def messages() -> None:
    """Messages the gateway gave up on (dead letters): list, send again, drop."""


@messages.command("failed")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--user", "sip_user", help="Only this SIP user's messages.")
@click.option(
    "--direction",
    type=click.Choice(["to_network", "to_sip"]),
    help="to_network: from a SIP user; to_sip: from an external contact.",
)
@click.option("--limit", type=int, default=1000, show_default=True)
@pass_ctx
def messages_failed(
    ctx: Context, as_json: bool, sip_user: str | None, direction: str | None, limit: int
) -> None:
    """List failed messages, oldest first, with why they failed."""
    try:
        letters = ctx.store().dead_letters.list(sip_user=sip_user, direction=direction, limit=limit)
    except GatewayError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps([d.as_dict() for d in letters], indent=2, ensure_ascii=False))
        return
    _table(
        ("ID", "DIRECTION", "SIP USER", "PROTOCOL", "CONTACT", "FAILED", "TRIES", "REASON", "TEXT"),
        [
            (
                str(d.id),
                str(d.direction),
                d.sip_user,
                d.protocol,
                d.contact,
                _when(d.failed),
                str(d.attempts),
                f"{d.status} {d.reason}".strip(),
                _preview(d.text),
            )
            for d in letters
        ],
    )


@messages.command("retry")
@click.argument("letter_id", metavar="ID", type=int)
@pass_ctx
def messages_retry(ctx: Context, letter_id: int) -> None:
    """Put failed message ID back into its queue; the gateway sends it again."""
    from purplegw.actors.control import ControlError, call  # noqa: PLC0415

    try:
        store = ctx.store()
        requeued = store.dead_letters.take_for_retry(
            letter_id, sendq=store.sendq, outbox=store.outbox
        )
    except GatewayError as exc:
        fail(str(exc))
    if requeued is None:
        fail(f"no failed message with id {letter_id}")
    letter = requeued.letter
    queue = "send queue" if letter.direction == "to_network" else "outbox"
    click.echo(
        f"message {letter_id} ({letter.sip_user} <-> {letter.contact}) is back in the {queue}"
    )
    # The row is durable already; telling the daemon only saves it the wait.
    try:
        call(ctx.config.control_socket, REQUEUED_COMMAND, timeout=10)
    except ControlError as exc:
        if "bad request" in str(exc):
            click.echo(
                "the running gateway sends it at its next delivery attempt for "
                f"{letter.sip_user} or its next start"
            )
        else:
            click.echo("the gateway is not running: it sends it when it starts")
        return
    click.echo("the running gateway was told to send it")


@messages.command("drop")
@click.argument("letter_id", metavar="ID", type=int)
@pass_ctx
def messages_drop(ctx: Context, letter_id: int) -> None:
    """Delete failed message ID for good."""
    try:
        dropped = ctx.store().dead_letters.drop(letter_id)
    except GatewayError as exc:
        fail(str(exc))
    if not dropped:
        fail(f"no failed message with id {letter_id}")
    click.echo(f"dropped message {letter_id}")


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _preview(text: str, width: int = 40) -> str:
    flat = " ".join(text.split())
    flat = "".join(c if c.isprintable() else "\ufffd" for c in flat)
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"


# --- cluster -----------------------------------------------------------------------


@main.group()
def cluster() -> None:
    """The nodes sharing this database (docs/cluster.md)."""


@cluster.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def cluster_status(ctx: Context, as_json: bool) -> None:
    """List the nodes: address, last heartbeat, users and accounts owned, state.

    Read from the database, so it works on any node, running or not.  A
    node marked live whose heartbeat is older than lease_seconds shows as
    "lost": it has stopped, or cannot reach the database.
    """
    from collections import Counter  # noqa: PLC0415

    from purplegw.gateway.cluster import Timing  # noqa: PLC0415

    timing = Timing.from_lease(ctx.config["cluster"]["lease_seconds"])
    try:
        store = ctx.store()
        nodes = store.cluster.nodes()
        per_user = Counter(row.sip_user for row in store.accounts.list())
        accounts: Counter[str] = Counter()
        for lease in store.cluster.leases(unexpired=True):
            accounts[lease.node] += per_user[lease.sip_user]
    except GatewayError as exc:
        fail(str(exc))
    listed = []
    for node in nodes:
        entry = node.as_dict()
        entry["accounts"] = accounts[node.name]
        entry["users"] = entry.pop("leases")
        if node.state == "live" and node.age > timing.node_timeout:
            entry["state"] = "lost"
        listed.append(entry)
    if as_json:
        click.echo(json.dumps(listed, indent=2, sort_keys=True))
        return
    _table(
        ("NODE", "ADDRESS", "LAST HEARTBEAT", "AGE", "USERS", "ACCOUNTS", "STATE"),
        [
            (
                e["name"],
                e["advertise"],
                _when(e["heartbeat"]),
                f"{e['age']:.1f}s",
                str(e["users"]),
                str(e["accounts"]),
                e["state"],
            )
            for e in listed
        ],
    )


# --- config ------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@pass_ctx
def config_check(ctx: Context, as_json: bool) -> None:
    """Validate the config and print the effective values, secrets masked."""
    import tomli_w  # noqa: PLC0415

    config = ctx.config
    masked = config.masked()
    source = str(config.path) if config.path else "built-in defaults"
    if as_json:
        click.echo(json.dumps(masked, indent=2, sort_keys=True))
    else:
        click.echo(f"# effective configuration from {source}; secrets masked")
        click.echo(tomli_w.dumps(masked))
    click.echo("configuration OK", err=True)


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
