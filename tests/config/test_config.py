"""Config loading: defaults, layering, and errors that name file, line and key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from purplegw.config import load_config
from purplegw.config.loader import DEFAULT_CONFIG, MASK
from purplegw.config.schema import SCHEMA
from purplegw.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "purplegw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_file_documents_exactly_the_schema() -> None:
    shipped = tomllib.loads((REPO / "etc" / "purplegw.toml").read_text())
    for section, keys in SCHEMA.items():
        assert set(shipped[section]) == set(keys), section
    # The packaged copy is a real file with the same text (see its header comment).
    assert not DEFAULT_CONFIG.is_symlink()
    assert DEFAULT_CONFIG.read_bytes() == (REPO / "etc" / "purplegw.toml").read_bytes()


def test_every_key_is_documented_by_a_comment() -> None:
    lines = (REPO / "etc" / "purplegw.toml").read_text().splitlines()
    for section, keys in SCHEMA.items():
        start = lines.index(f"[{section}]")
        for key in keys:
            index = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{key} ="))
            above = lines[index - 1]
            # a comment right above, or the key belongs to a documented group
            assert above.startswith("#") or lines[index - 1].split(" =")[0] in keys, key


def test_defaults_alone(tmp_path: Path) -> None:
    config = load_config(environ={})
    assert config["sip"]["listen"] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert config["store"]["db_table"] == "purplemap"
    assert config.db_url.startswith("sqlite:///")
    assert config.db_url.endswith("/var/purplegw.db")


def test_user_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[sip]\ndomain = "sip.example.net"\n[store]\ndb_table = "accounts"\n')
    config = load_config(path, environ={})
    assert config["sip"]["domain"] == "sip.example.net"
    assert config["store"]["db_table"] == "accounts"
    assert config["sip"]["t1_ms"] == 500  # untouched default


def test_all_errors_at_once_with_file_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\n".join(
            [
                "[sip]",
                'listen = ["udpx:1.2.3.4:5060"]',
                'domian = "x"',
                "[store]",
                'db_table = "purple map"',
                "[proxy]",
                "http_port = 99999",
                "[actor]",
                "workers = 2",
            ]
        ),
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={})
    errors = excinfo.value.errors
    assert (
        f"{path}:2: [sip] listen: item 0: 'udpx:1.2.3.4:5060' is not a listen address"
        in (errors[0])
    )
    assert errors[1] == f"{path}:3: [sip] domian: unknown key (did you mean 'domain'?)"
    assert errors[2].startswith(f"{path}:5: [store] db_table: 'purple map' is not a table name")
    assert errors[3] == f"{path}:7: [proxy] http_port: 99999 is above the maximum 65535"
    assert errors[4] == f"{path}:8: [actor]: unknown section (did you mean 'actors'?)"
    assert len(errors) == 5


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[sip]\ndomain = "unterminated\n')
    with pytest.raises(ConfigError, match=rf"{path}: TOML syntax error: .*line 2"):
        load_config(path, environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[sip]\ndomain = "from-env.example"\n')
    config = load_config(environ={"PURPLEGW_CONFIG": str(path)})
    assert config["sip"]["domain"] == "from-env.example"


def test_environment_overrides(tmp_path: Path) -> None:
    config = load_config(
        environ={
            "PURPLEGW_SIP__DOMAIN": "env.example",
            "PURPLEGW_ACTORS__WORKERS": "4",
            "PURPLEGW_SIP__LISTEN": '["tcp:[::1]:5070"]',
            "PURPLEGW_PROTOCOLS__XMPP__SERVER": "127.0.0.1:5222",
        },
        protocol_defaults={"xmpp": {"enabled": True, "server": ""}},
    )
    assert config["sip"]["domain"] == "env.example"
    assert config["actors"]["workers"] == 4
    assert config["sip"]["listen"] == ["tcp:[::1]:5070"]
    assert config.protocol("xmpp")["server"] == "127.0.0.1:5222"


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(environ={"PURPLEGW_ACTORS__WORKERS": "many", "PURPLEGW_SIP__NOPE": "1"})
    assert excinfo.value.errors == [
        "$PURPLEGW_ACTORS__WORKERS: [actors] workers: expected an integer, got a string",
        "$PURPLEGW_SIP__NOPE: [sip] nope: unknown key",
    ]


def test_protocol_sections_checked_against_adapter_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\n".join(
            [
                "[protocols.xmpp]",
                'server = "127.0.0.1:5222"',
                "requir_tls = false",
                "[protocols.msn]",
                "enabled = true",
                "[protocols.irc]",
                'enabled = "yes"',
            ]
        ),
    )
    defaults = {
        "xmpp": {"enabled": True, "server": "", "require_tls": True},
        "irc": {"enabled": True},
    }
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={}, protocol_defaults=defaults)
    assert excinfo.value.errors == [
        f"{path}:3: [protocols.xmpp] requir_tls: unknown key (did you mean 'require_tls'?)",
        f"{path}:4: [protocols.msn]: no such protocol adapter is installed",
        f"{path}:7: [protocols.irc] enabled: expected a boolean, got a string",
    ]


def test_tls_listener_needs_certificate(tmp_path: Path) -> None:
    path = write(tmp_path, '[sip]\nlisten = ["tls:127.0.0.1:5061"]\n')
    with pytest.raises(ConfigError, match=r":2: \[sip\] listen: a tls: listener needs"):
        load_config(path, environ={})


def test_secrets_are_masked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\n".join(
            [
                "[store]",
                'db_url = "mysql://kam:s3cr3t@127.0.0.1/openser"',
                "[proxy]",
                'http_host = "127.0.0.1"',
                "http_port = 3128",
                'password = "proxypw"',
                "[protocols.xmpp]",
                'api_token = "tok"',
            ]
        ),
    )
    config = load_config(path, environ={})
    masked = config.masked()
    assert masked["store"]["db_url"] == f"mysql://kam:{MASK}@127.0.0.1/openser"
    assert masked["proxy"]["password"] == MASK
    assert masked["protocols"]["xmpp"]["api_token"] == MASK
    assert "s3cr3t" not in repr(masked)
    assert config["store"]["db_url"] == "mysql://kam:s3cr3t@127.0.0.1/openser"
