"""External account passwords never leak: not in logs, CLI output, status, or the store.

One real daemon logs in through an authenticating HTTP proxy (tinyproxy) to
Prosody and to ngIRCd over TLS, with a right and a wrong password on each,
at DEBUG with the SIP wire log on, its store on MariaDB (a db_url with a
password).  Then everything an operator can see is collected and searched for
every secret, as written and in the base64 forms SASL PLAIN, SCRAM and HTTP
Basic carry them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import pymysql
import pytest

from purplegw.protocols.base import AccountCredentials, SessionContext
from purplegw.protocols.irc import Adapter as IrcAdapter
from tests.kit.gateway import GatewayProcess
from tests.kit.ngircd import Ngircd, RecordingEvents
from tests.kit.raw_ua import RawUA
from tests.kit.tinyproxy import Tinyproxy
from tests.security.conftest import IRC_SERVER_PASSWORD, require_tinyproxy, set_config, wait_states

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.kit.mariadb import MariaDB
    from tests.kit.prosody import Prosody

SIP_PASSWORD = "sip-Digest-pw-4d2a91"
XMPP_PASSWORD = "xmpp-Right-pw-83f0c5"
XMPP_WRONG = "xmpp-Wrong-pw-1b7e2d"
IRC_WRONG = "irc-Wrong-pw-5a9c40"
PROXY_USER, PROXY_PASSWORD = "gwproxy", "proxy-Basic-pw-6e31f8"
NICKSERV_PASSWORD = "nickserv-pw-0d84b3"


def encoded_forms(secret: str) -> list[str]:
    """The secret, and the base64 text it becomes inside any base64 blob.

    A secret at byte offset 0, 1 or 2 of an encoded payload (e.g. after
    "\\0user\\0" in SASL PLAIN, "user:" in HTTP Basic) yields these
    characters whatever surrounds it; the edges that depend on the
    neighbours are cut off.
    """
    raw = secret.encode()
    forms = [secret]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = 4 * -(-offset // 3)
        end = 4 * ((offset + len(raw)) // 3)
        forms.append(encoded[start:end])
    return forms


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    found = []
    for name, secret in secrets.items():
        for form in encoded_forms(secret):
            if form in text:
                index = text.index(form)
                found.append(f"{name} as {form!r}: ...{text[max(0, index - 120) : index + 40]}...")
    return found


def test_encoded_forms_find_sasl_plain_and_basic() -> None:
    # The search itself must catch what the wire carries.
    plain = base64.b64encode(b"\0alice\0" + XMPP_PASSWORD.encode()).decode()
    basic = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    assert leaks(f"<auth mechanism='PLAIN'>{plain}</auth>", {"x": XMPP_PASSWORD})
    assert leaks(f"Proxy-Authorization: Basic {basic}", {"p": PROXY_PASSWORD})
    assert not leaks(plain.replace(plain[12:20], "AAAAAAAA"), {"x": XMPP_PASSWORD})


@pytest.fixture(scope="module")
def run(
    prosody: Prosody, ngircd_tls: Ngircd, mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Run the whole scenario once; yields every output, the log and the secrets."""
    require_tinyproxy()
    assert ngircd_tls.tls_port is not None
    assert ngircd_tls.ca_file is not None
    base = tmp_path_factory.mktemp("secrets")
    db_url = mariadb.create_database("purplegw_security_secrets")
    good = prosody.create_user("secgood", XMPP_PASSWORD)
    bad = prosody.create_user("secbad", "the-real-one-differs")
    irc_good = f"secgood@127.0.0.1:{ngircd_tls.tls_port}"
    irc_bad = f"secbad@127.0.0.1:{ngircd_tls.tls_port}"
    db_password = db_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    secrets = {
        "sip": SIP_PASSWORD,
        "xmpp": XMPP_PASSWORD,
        "xmpp-wrong": XMPP_WRONG,
        "irc": IRC_SERVER_PASSWORD,
        "irc-wrong": IRC_WRONG,
        "proxy": PROXY_PASSWORD,
        "db": db_password,
    }
    outputs: dict[str, str] = {}
    with Tinyproxy(
        connect_ports=[prosody.port, ngircd_tls.tls_port], auth=(PROXY_USER, PROXY_PASSWORD)
    ) as proxy:
        gateway = GatewayProcess(base, extra_config=prosody.gateway_section())
        set_config(
            gateway,
            store={"db_url": db_url},
            proxy={
                "http_host": "127.0.0.1",
                "http_port": proxy.port,
                "username": PROXY_USER,
                "password": PROXY_PASSWORD,
            },
            logging={"sip_wire": True},
        )
        config = gateway.config.read_text()
        gateway.config.write_text(config + f'\n[protocols.irc]\nca_file = "{ngircd_tls.ca_file}"\n')

        def cli(name: str, *args: str, stdin: str = "") -> None:
            result = gateway.cli(*args, stdin=stdin)
            outputs[name] = result.stdout + result.stderr

        cli("db init", "-vv", "db", "init")
        cli(
            "users add",
            "-vv",
            "users",
            "add",
            "alice@sip.test",
            "--password-stdin",
            stdin=SIP_PASSWORD + "\n",
        )
        # One account per (SIP user, protocol): the wrong passwords belong to carol.
        for sip_user, ext_user, protocol, password in (
            ("alice@sip.test", good.jid, "xmpp", XMPP_PASSWORD),
            ("carol@sip.test", bad.jid, "xmpp", XMPP_WRONG),
            ("alice@sip.test", irc_good, "irc", IRC_SERVER_PASSWORD),
            ("carol@sip.test", irc_bad, "irc", IRC_WRONG),
        ):
            cli(
                f"accounts add {ext_user}",
                "-vv",
                "accounts",
                "add",
                sip_user,
                ext_user,
                protocol,
                "--password-stdin",
                stdin=password + "\n",
            )
        gateway.start()
        try:
            states = wait_states(
                gateway,
                {
                    good.jid: "connected",
                    irc_good: "connected",
                    bad.jid: "bad_credentials",
                    irc_bad: "bad_credentials",
                },
            )
            ua = RawUA(gateway)
            message = ua.authorized(
                "MESSAGE", f"sip:{bob_of(prosody)}", "alice@sip.test", "alice", SIP_PASSWORD
            )
            assert gateway.process is not None
            os.kill(gateway.process.pid, signal.SIGUSR1)
            wait_for_log(gateway, "Current state of control-socket")  # pykka's stack dump
            for name, args in (
                ("accounts list", ("accounts", "list")),
                ("accounts list --json", ("accounts", "list", "--json")),
                ("users list", ("users", "list")),
                ("config check", ("config", "check")),
                ("config check --json", ("config", "check", "--json")),
                ("status", ("status",)),
                ("status --json", ("status", "--json")),
            ):
                cli(name, *args)
            proxy_log = proxy.log()
        finally:
            code = gateway.stop()
        raw_rows = _mysql_rows(db_url, "SELECT ext_user, ext_pass FROM purplemap")
        yield {
            "outputs": outputs,
            "log": gateway.log.read_text(errors="replace"),
            "secrets": secrets,
            "states": states,
            "message": message,
            "code": code,
            "proxy_log": proxy_log,
            "ports": (prosody.port, ngircd_tls.tls_port),
            "raw_rows": raw_rows,
        }


def bob_of(prosody: Prosody) -> str:
    return f"secbob@{prosody.domain}"


def wait_for_log(gateway: GatewayProcess, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in gateway.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{gateway.log_text()}"
        time.sleep(0.1)


def _mysql_rows(url: str, query: str) -> list[tuple[Any, ...]]:
    rest = url.split("://", 1)[1]
    credentials, _, location = rest.partition("@")
    user, _, password = credentials.partition(":")
    hostport, _, database = location.partition("/")
    host, _, port = hostport.partition(":")
    conn = pymysql.connect(
        host=host, port=int(port), user=user, password=password, database=database
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(query)
            return list(cursor.fetchall())
    finally:
        conn.close()


def test_scenario_really_ran(run: dict[str, Any]) -> None:
    """The secrets were used: right ones logged in, wrong ones were refused, all via the proxy."""
    assert run["code"] == 0, run["log"][-4000:]
    assert run["message"][0] == 202, run["message"]  # the digest login worked
    log = run["log"]
    assert "SEND:" in log  # slixmpp's stanza log was on
    assert "RECV:" in log
    assert "irc.wire" in log or ">> NICK" in log  # the IRC wire log was on
    assert "MESSAGE sip:" in log  # the SIP wire log was on
    assert "Current state of MainThread" in log  # the SIGUSR1 stack dump
    assert "(redacted)</auth>" in log  # the wrong password's SASL PLAIN attempt, redacted
    for port in run["ports"]:
        assert f"CONNECT 127.0.0.1:{port}" in run["proxy_log"]


def test_no_secret_in_log_or_cli_output(run: dict[str, Any]) -> None:
    texts = {"daemon log": run["log"], **run["outputs"]}
    found = [
        f"{where}: {leak}" for where, text in texts.items() for leak in leaks(text, run["secrets"])
    ]
    assert not found, "\n".join(found)


def test_no_secret_in_status_errors(run: dict[str, Any]) -> None:
    # The refused logins' errors are shown, and say why without the password.
    errors = [s.get("last_error") or "" for s in run["states"].values()]
    assert sum(1 for e in errors if e) >= 2, run["states"]
    assert not leaks("\n".join(errors), run["secrets"])


def test_mariadb_holds_no_plaintext_password(run: dict[str, Any]) -> None:
    rows = run["raw_rows"]
    assert len(rows) == 4
    for ext_user, stored in rows:
        assert stored.startswith("enc:v1:"), (ext_user, stored)
        assert not leaks(stored, run["secrets"]), ext_user


def test_sqlite_holds_no_plaintext_password(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path)
    gateway.cli("db", "init")
    gateway.cli(
        "accounts",
        "add",
        "alice@sip.test",
        "a@example.org",
        "xmpp",
        "--password-stdin",
        stdin=XMPP_PASSWORD + "\n",
    )
    db = next((tmp_path / "data").glob("*.db"))
    (stored,) = sqlite3.connect(db).execute("SELECT ext_pass FROM purplemap").fetchone()
    assert stored.startswith("enc:v1:")
    assert not leaks(stored, {"xmpp": XMPP_PASSWORD})
    assert XMPP_PASSWORD.encode() not in db.read_bytes()  # no stray copy in the file either


def test_irc_nickserv_identify_is_not_logged(
    ngircd_open: Ngircd, caplog: pytest.LogCaptureFixture
) -> None:
    """auth = "nickserv" sends the password in a PRIVMSG; the wire log shows only the verb."""

    async def scenario() -> None:
        config = {
            "tls": False,
            "server": f"127.0.0.1:{ngircd_open.port}",
            "auth": "nickserv",
            "connect_timeout": 10,
        }
        credentials = AccountCredentials(
            1, "alice@sip.test", "secns@127.0.0.1", "irc", NICKSERV_PASSWORD
        )
        context = SessionContext(
            loop=asyncio.get_running_loop(), events=RecordingEvents(), config=config
        )
        session = IrcAdapter().create_session(credentials, context)
        await session.login()
        await session.logout()

    caplog.set_level(logging.DEBUG)
    asyncio.run(scenario())
    assert ">> b'PRIVMSG'" in caplog.text  # the IDENTIFY line was sent, and logged
    assert not leaks(caplog.text, {"nickserv": NICKSERV_PASSWORD})


@pytest.mark.parametrize(
    ("store", "proxy"),
    [
        # invalid value next to a secret: the error names the key, not the value
        ({"db_url": "mysqlx://dbuser:{db}@127.0.0.1:1/x"}, {"password": 1234567890123456}),
        # a well-formed URL to a database that is not there: the connect error
        ({"db_url": "mysql://dbuser:{db}@127.0.0.1:1/x"}, {"password": "{proxy}"}),
    ],
)
def test_config_and_store_errors_do_not_echo_secrets(
    tmp_path: Path, store: dict[str, Any], proxy: dict[str, Any]
) -> None:
    secrets = {"db": "Db-Secret-Url-3c9e7a", "proxy": PROXY_PASSWORD, "int": "1234567890123456"}

    def fill(values: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v.format(db=secrets["db"], proxy=PROXY_PASSWORD) if isinstance(v, str) else v
            for k, v in values.items()
        }

    gateway = GatewayProcess(tmp_path)
    set_config(
        gateway,
        store=fill(store),
        proxy={"http_host": "127.0.0.1", "http_port": 3128, "username": PROXY_USER, **fill(proxy)},
    )
    outputs = []
    for args in (
        ("config", "check"),
        ("config", "check", "--json"),
        ("-vv", "accounts", "list"),
        ("status",),
    ):
        try:
            result = gateway.cli(*args)
            outputs.append(result.stdout + result.stderr)
        except RuntimeError as exc:  # the error text is what an operator sees
            outputs.append(str(exc))
    text = "\n".join(outputs)
    assert "error" in text.lower()  # the broken part was reported
    assert not leaks(text, secrets), text


def test_stanza_log_redaction_covers_scram_and_legacy_auth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the daemon run cannot show: SCRAM proofs, XEP-0078 and XEP-0077 passwords."""
    from purplegw.protocols.xmpp import log_redaction

    log_redaction.install()
    log_redaction.install()  # idempotent: one filter
    stream_logger = logging.getLogger(log_redaction.STREAM_LOGGER)
    assert stream_logger.filters.count(log_redaction._FILTER) == 1
    proof = base64.b64encode(b"c=biws,r=abc,p=" + XMPP_PASSWORD.encode()).decode()
    stanzas = [
        f'<response xmlns="urn:ietf:params:xml:ns:xmpp-sasl">{proof}</response>',
        (
            f"<iq type='set'><query xmlns='jabber:iq:auth'><password>{XMPP_PASSWORD}</password>"
            f"<digest>{XMPP_PASSWORD}</digest></query></iq>"
        ),
        f"<iq><query xmlns='jabber:iq:register'><password>{XMPP_PASSWORD}</password></query></iq>",
    ]
    caplog.set_level(logging.DEBUG, logger=log_redaction.STREAM_LOGGER)
    for stanza in stanzas:
        stream_logger.debug("SEND: %s", stanza)
    assert caplog.text.count("(redacted)") == 4
    assert not leaks(caplog.text, {"xmpp": XMPP_PASSWORD})
    stream_logger.debug("SEND: %s", "<message><body>hello</body></message>")
    assert "<body>hello</body>" in caplog.text  # other stanzas are logged as they are


def test_without_the_key_nothing_is_stored_in_the_clear(tmp_path: Path) -> None:
    """A lost key file is an error, never a silent fall-back to plaintext rows."""
    gateway = GatewayProcess(tmp_path)
    gateway.cli("db", "init")
    (tmp_path / "data" / "purplegw.key").unlink()
    with pytest.raises(RuntimeError, match="key"):
        gateway.cli(
            "accounts",
            "add",
            "alice@sip.test",
            "a@example.org",
            "xmpp",
            "--password-stdin",
            stdin=XMPP_PASSWORD + "\n",
        )
    rows = tmp_path / "rows.csv"
    rows.write_text(
        f"sip_user,ext_user,ext_prot,ext_pass\nb@sip.test,b@example.org,xmpp,{XMPP_WRONG}\n"
    )
    with pytest.raises(RuntimeError, match="key"):
        gateway.cli("accounts", "import", str(rows))
    db = next((tmp_path / "data").glob("*.db"))
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM purplemap").fetchone() == (0,)
    content = db.read_bytes()
    assert XMPP_PASSWORD.encode() not in content
    assert XMPP_WRONG.encode() not in content
