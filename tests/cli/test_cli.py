"""The purplegw command, run as an operator runs it (a real process), on SQLite and MariaDB."""

from __future__ import annotations

import json
import os
import pty
import sys
from typing import TYPE_CHECKING

import pytest

from tests.kit.cli_fork import run_cli

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from tests.kit.mariadb import MariaDB


def purplegw(
    config: Path | None, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m purplegw ARGS`` in a process of its own, forked from one that imported it.

    The start of a real interpreter is covered by the daemon the end-to-end
    tests run and by tests/test_packaging.py; here each command would spend
    most of its time importing.
    """
    command = ["--config", str(config)] if config is not None else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PURPLEGW_")}
    return run_cli([*command, *args], env=env, stdin=stdin or "", timeout=60, cwd=cwd)


@pytest.fixture(params=["sqlite", "mysql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "purplegw.toml"
    lines = ["[store]", f'data_dir = "{tmp_path / "data"}"']
    if request.param == "mysql":
        mariadb: MariaDB = request.getfixturevalue("mariadb")
        lines.append(f'db_url = "{mariadb.create_database("cli_" + tmp_path.name[-12:])}"')
    path.write_text("\n".join(lines) + "\n")
    assert purplegw(path, "db", "init").returncode == 0
    return path


def test_accounts_add_list_remove(config: Path) -> None:
    added = purplegw(
        config,
        "accounts",
        "add",
        "sip:alice@example.org",
        "alice@jabber.example",
        "prpl-jabber",
        "--password-stdin",
        stdin="hunter2\n",
    )
    assert added.returncode == 0, added.stderr
    assert "added account 1" in added.stdout
    # Piped stdin without the flag is read too (scripts), the alias is kept as written.
    piped = purplegw(config, "accounts", "add", "bob@example.org", "bob", "irc", stdin="pw\n")
    assert piped.returncode == 0, piped.stderr

    listed = purplegw(config, "accounts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert rows == [
        {
            "id": 1,
            "sip_user": "sip:alice@example.org",
            "ext_user": "alice@jabber.example",
            "protocol": "prpl-jabber",
            "password": "encrypted",
        },
        {
            "id": 2,
            "sip_user": "bob@example.org",
            "ext_user": "bob",
            "protocol": "irc",
            "password": "encrypted",
        },
    ]
    table = purplegw(config, "accounts", "list")
    assert "alice@jabber.example" in table.stdout
    assert "hunter2" not in table.stdout + listed.stdout + table.stderr

    assert purplegw(config, "accounts", "remove", "1").returncode == 0
    gone = purplegw(config, "accounts", "remove", "1")
    assert gone.returncode == 1
    assert "no account with id 1" in gone.stderr
    assert [r["id"] for r in json.loads(purplegw(config, "accounts", "list", "--json").stdout)] == [
        2
    ]


def test_password_prompt_on_a_terminal(tmp_path: Path) -> None:
    config = tmp_path / "purplegw.toml"
    config.write_text(f'[store]\ndata_dir = "{tmp_path / "data"}"\n')
    assert purplegw(config, "db", "init").returncode == 0
    pid, fd = pty.fork()
    if pid == 0:  # child: stdin is the terminal
        os.execv(  # noqa: S606 - the pty child becomes the CLI under test
            sys.executable,
            [
                sys.executable,
                "-m",
                "purplegw",
                "--config",
                str(config),
                "accounts",
                "add",
                "c@example.org",
                "c@x.example",
                "xmpp",
            ],
        )
    output = b""
    for answer in (b"s3cret\n", b"s3cret\n"):
        while b":" not in output.rsplit(b"\n", 1)[-1]:
            output += os.read(fd, 1024)
        os.write(fd, answer)
        output += os.read(fd, 1024)
    _, status = os.waitpid(pid, 0)
    try:
        while chunk := os.read(fd, 1024):
            output += chunk
    except OSError:
        pass
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"s3cret" not in output  # hidden input is not echoed
    assert json.loads(purplegw(config, "accounts", "list", "--json").stdout)[0]["password"] == (
        "encrypted"
    )


def test_unknown_protocol_is_refused_with_known_ids(config: Path) -> None:
    result = purplegw(config, "accounts", "add", "a@example.org", "a", "msn", stdin="pw\n")
    assert result.returncode == 1
    assert "unknown protocol 'msn'" in result.stderr
    for known in ("xmpp", "irc", "prpl-jabber", "gtalk", "prpl-irc"):
        assert known in result.stderr
    assert json.loads(purplegw(config, "accounts", "list", "--json").stdout) == []


def test_import_csv_all_or_nothing(config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "sip_user,ext_user,ext_prot,ext_pass\n"
        "a@example.org,a@x.example,xmpp,pa\n"
        "b@example.org,b@x.example,icq,pb\n"
        "c@example.org,c,irc\n"
    )
    result = purplegw(config, "accounts", "import", str(bad))
    assert result.returncode == 1
    assert f"{bad}:3: ext_prot: unknown protocol 'icq'" in result.stderr
    assert f"{bad}:4: expected 4 columns" in result.stderr
    assert json.loads(purplegw(config, "accounts", "list", "--json").stdout) == []

    good = tmp_path / "good.csv"
    good.write_text(
        "sip_user,ext_user,ext_prot,ext_pass\n"
        + "".join(f"u{i}@example.org,u{i}@x.example,gtalk,p{i}\n" for i in range(50))
    )
    result = purplegw(config, "accounts", "import", str(good))
    assert result.returncode == 0, result.stderr
    assert "imported 50 account(s)" in result.stdout
    assert "importing" in result.stderr  # the progress bar
    assert len(json.loads(purplegw(config, "accounts", "list", "--json").stdout)) == 50

    # A duplicate of an existing row aborts the whole batch.
    again = tmp_path / "again.csv"
    again.write_text(
        "sip_user,ext_user,ext_prot,ext_pass\nnew@example.org,n,irc,p\n"
        "u3@example.org,u3@x.example,gtalk,p\n"
    )
    result = purplegw(config, "accounts", "import", str(again))
    assert result.returncode == 1
    assert "nothing imported" in result.stderr
    assert len(json.loads(purplegw(config, "accounts", "list", "--json").stdout)) == 50


def test_bad_config_exits_78_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "bad.toml"
    config.write_text(f'[store]\ndata_dir = "{data}"\ndb_tabel = "x"\n[sip]\nt1_ms = -1\n')
    for args in (("db", "init"), ("accounts", "list"), ("config", "check")):
        result = purplegw(config, *args)
        assert result.returncode == 78, args
        assert f"{config}:3: [store] db_tabel: unknown key (did you mean 'db_table'?)" in (
            result.stderr
        )
        assert f"{config}:5: [sip] t1_ms: -1 is below the minimum 1" in result.stderr
    assert not data.exists()


def test_bad_cli_input_is_one_clear_message(config: Path) -> None:
    result = purplegw(config, "accounts", "remove", "abc")
    assert result.returncode == 2
    assert "'abc' is not a valid integer" in result.stderr
    result = purplegw(config, "accounts", "add", "not-a-sip-user", "x", "xmpp", stdin="p\n")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "purplegw: error: sip_user 'not-a-sip-user' is not user@domain (or sip:user@domain)"
    )


def test_config_check_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[store]\ndb_url = "mysql://kam:dbs3cret@127.0.0.1/openser"\n'
        '[proxy]\nhttp_host = "127.0.0.1"\nhttp_port = 3128\npassword = "pxs3cret"\n'
    )
    result = purplegw(config, "config", "check")
    assert result.returncode == 0, result.stderr
    assert "dbs3cret" not in result.stdout
    assert "pxs3cret" not in result.stdout
    assert 'db_url = "mysql://kam:********@127.0.0.1/openser"' in result.stdout
    assert "configuration OK" in result.stderr


def test_help_everywhere() -> None:
    for args in (
        (),
        ("run",),
        ("db",),
        ("db", "init"),
        ("db", "upgrade"),
        ("accounts",),
        ("accounts", "add"),
        ("accounts", "list"),
        ("accounts", "remove"),
        ("accounts", "import"),
        ("config", "check"),
        ("reload",),
        ("status",),
    ):
        result = purplegw(None, *args, "--help")
        assert result.returncode == 0, args
        assert "Usage:" in result.stdout


def test_db_upgrade_encrypts_a_legacy_table(tmp_path: Path) -> None:
    import sqlite3

    db_path = tmp_path / "legacy.db"
    conn = sqlite3.connect(db_path)
    conn.executescript(
        "CREATE TABLE purplemap (id INTEGER PRIMARY KEY AUTOINCREMENT, sip_user VARCHAR(128) "
        "NOT NULL, ext_user VARCHAR(128) NOT NULL, ext_prot VARCHAR(16) NOT NULL, "
        "ext_pass VARCHAR(64));"
        "INSERT INTO purplemap (sip_user, ext_user, ext_prot, ext_pass) "
        "VALUES ('sip:a@example.org', 'a@gmail.example', 'gtalk', 'plainpw');"
    )
    conn.commit()
    conn.close()
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\ndata_dir = "{tmp_path}"\ndb_url = "sqlite://{db_path}"\n')
    listed = json.loads(purplegw(config, "accounts", "list", "--json").stdout)
    assert listed[0]["password"] == "plaintext"  # readable as it is
    assert purplegw(config, "db", "init").returncode == 0  # creates the key, keeps the rows
    result = purplegw(config, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "encrypted 1 plaintext password(s)" in result.stdout
    listed = json.loads(purplegw(config, "accounts", "list", "--json").stdout)
    assert listed[0]["password"] == "encrypted"
    raw = sqlite3.connect(db_path).execute("SELECT ext_pass FROM purplemap").fetchone()[0]
    assert "plainpw" not in raw


def test_users_add_list_remove(config: Path) -> None:
    added = purplegw(config, "users", "add", "alice@example.org", stdin="pw\n")
    assert added.returncode == 0, added.stderr
    assert purplegw(config, "users", "add", "bob", stdin="pw\n").returncode == 0  # [sip] domain
    dup = purplegw(config, "users", "add", "sip:alice@example.org", stdin="x\n")
    assert dup.returncode == 1
    assert "already exists" in dup.stderr
    rows = json.loads(purplegw(config, "users", "list", "--json").stdout)
    assert [(r["username"], r["domain"]) for r in rows] == [
        ("alice", "example.org"),
        ("bob", "localhost"),
    ]
    assert purplegw(config, "users", "remove", "alice@example.org").returncode == 0
    assert purplegw(config, "users", "remove", "alice@example.org").returncode == 1
