"""Unit tests of the sans-IO IRC line protocol and the account id form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from purplegw.protocols.irc import Adapter
from purplegw.protocols.irc.account import InvalidAccountError, parse_account
from purplegw.protocols.irc.protocol import (
    IrcParseError,
    LineBuffer,
    Message,
    casefold,
    ctcp,
    ctcp_parse,
    message,
    parse_isupport,
    parse_line,
    serialize,
    split_utf8,
)


def test_parse_full_line() -> None:
    msg = parse_line(b":nick!user@host PRIVMSG me :hello there :)\r\n")
    assert msg == Message("PRIVMSG", ("me", "hello there :)"), "nick!user@host")
    assert msg.nick == "nick"


def test_parse_numeric_and_middle_params() -> None:
    msg = parse_line(":irc.test 005 me MONITOR=100 CASEMAPPING=ascii :are supported")
    assert msg.command == "005"
    assert msg.params == ("me", "MONITOR=100", "CASEMAPPING=ascii", "are supported")
    assert parse_isupport(msg.params) == {"MONITOR": "100", "CASEMAPPING": "ascii"}
    assert msg.nick == "irc.test"


def test_parse_without_prefix_or_trailing() -> None:
    assert parse_line("PING irc.test") == Message("PING", ("irc.test",))
    assert parse_line("ping :x y") == Message("PING", ("x y",))
    assert parse_line("AWAY") == Message("AWAY", ())
    assert parse_line("PRIVMSG me :") == Message("PRIVMSG", ("me", ""))


def test_parse_tags_with_escapes() -> None:
    msg = parse_line(r"@+typing=active;msgid=a\sb\:c\\d;flag :dave!u@h TAGMSG me")
    assert msg.tags == {"+typing": "active", "msgid": "a b;c\\d", "flag": ""}
    assert msg.command == "TAGMSG"
    assert msg.nick == "dave"


def test_tag_round_trip() -> None:
    original = message("TAGMSG", "bob", tags={"+x": "semi;colon space\\back"})
    assert parse_line(serialize(original)).tags == original.tags


def test_parse_latin1_fallback_and_bare_lf() -> None:
    msg = parse_line(b":a!b@c PRIVMSG me :caf\xe9\n")
    assert msg.params[-1] == "café"


@pytest.mark.parametrize("bad", ["", "   ", ":prefixonly", ": PRIVMSG x", "PRIV-MSG x", "12 x"])
def test_parse_rejects_garbage(bad: str) -> None:
    with pytest.raises(IrcParseError):
        parse_line(bad)


def test_serialize_places_colon_only_where_needed() -> None:
    assert serialize(message("NICK", "bob")) == b"NICK bob\r\n"
    assert serialize(message("PRIVMSG", "bob", "hi there")) == b"PRIVMSG bob :hi there\r\n"
    assert serialize(message("PRIVMSG", "bob", ":)")) == b"PRIVMSG bob ::)\r\n"
    assert serialize(message("AWAY", "")) == b"AWAY :\r\n"


@pytest.mark.parametrize(
    "params", [("bob", "line\r\nQUIT :injected"), ("two words", "x"), ("bob\n", "x")]
)
def test_serialize_refuses_injection(params: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError is the refusal
        serialize(message("PRIVMSG", *params))


def test_line_buffer_frames_partial_lines() -> None:
    buf = LineBuffer()
    assert buf.feed(b"PING :a\r\nPRIVMSG me :hel") == [Message("PING", ("a",))]
    assert buf.feed(b"lo\r\n\r\nbad-command!\r\n") == [Message("PRIVMSG", ("me", "hello"))]


def test_line_buffer_caps_unterminated_lines() -> None:
    buf = LineBuffer()
    with pytest.raises(IrcParseError):
        buf.feed(b"x" * 10000)
    assert buf.feed(b"PING :ok\r\n") == [Message("PING", ("ok",))]


def test_split_prefers_spaces_and_keeps_lines() -> None:
    assert split_utf8("hello world foo", 11) == ["hello world", "foo"]
    assert split_utf8("one\ntwo\r\n\r\nthree", 100) == ["one", "two", "three"]
    assert split_utf8("", 10) == []


@given(
    st.text(min_size=1, max_size=600).filter(lambda t: "\r" not in t and "\n" not in t),
    st.integers(min_value=4, max_value=120),
)
def test_split_never_breaks_utf8(text: str, limit: int) -> None:
    chunks = split_utf8(text, limit)
    assert all(len(c.encode()) <= limit for c in chunks)
    # Only split-point spaces may disappear; the characters are all there.
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")


def test_ctcp() -> None:
    assert ctcp_parse("\x01ACTION waves hello\x01") == ("ACTION", "waves hello")
    assert ctcp_parse("\x01VERSION") == ("VERSION", "")
    assert ctcp_parse("plain") is None
    assert ctcp("ACTION", "x") == "\x01ACTION x\x01"


def test_casefold() -> None:
    assert casefold("Nick[A]") == "nick{a}"
    assert casefold("Nick[A]", "ascii") == "nick[a]"
    assert casefold("A~", "strict-rfc1459") == "a~"
    assert Adapter().normalize_contact(" Bob^ ") == "bob^"


@pytest.mark.parametrize(
    ("ext_user", "tls", "expected"),
    [
        ("alice@irc.example.net", True, ("alice", "irc.example.net", 6697)),
        ("alice@irc.example.net", False, ("alice", "irc.example.net", 6667)),
        ("alice@irc.example.net:7000", True, ("alice", "irc.example.net", 7000)),
        ("al[i]ce@[2001:db8::1]:6697", True, ("al[i]ce", "2001:db8::1", 6697)),
        ("alice@[2001:db8::1]", False, ("alice", "2001:db8::1", 6667)),
    ],
)
def test_account_id(ext_user: str, tls: bool, expected: tuple[str, str, int]) -> None:
    acc = parse_account(ext_user, tls=tls)
    assert (acc.nick, acc.host, acc.port) == expected


def test_account_server_override() -> None:
    acc = parse_account("alice@libera", server="127.0.0.1:6667")
    assert (acc.host, acc.port, acc.server_label) == ("127.0.0.1", 6667, "127.0.0.1:6667")


@pytest.mark.parametrize("bad", ["alice", "@host", "alice@", "a b@host", "alice@host:0", "a@h:x"])
def test_account_id_rejects(bad: str) -> None:
    with pytest.raises(InvalidAccountError):
        parse_account(bad)


def test_adapter_descriptor_and_config_validation() -> None:
    adapter = Adapter()
    assert adapter.name == "irc"
    assert adapter.aliases == ("prpl-irc",)
    assert adapter.addresses_user_at_host is False
    defaults = adapter.get_default_config()
    assert defaults["enabled"] is True
    assert defaults["tls"] is True
    assert adapter.validate_config(defaults) == []
    problems = adapter.validate_config(
        {
            "presence_method": "psychic",
            "ison_interval": 0,
            "tls": "yes",
            "server": "h:99999",
            "sever": "x",
            "ca_file": "/nonexistent.pem",
        }
    )
    assert len(problems) == 6, problems


def test_loaded_through_entry_point_with_alias() -> None:
    from purplegw.protocols.loader import AdapterStatus, load_adapters

    registry = load_adapters()
    assert registry.infos["irc"].status is AdapterStatus.ENABLED
    assert isinstance(registry.get("prpl-irc"), Adapter)
    assert registry.canonical("prpl-irc") == "irc"
