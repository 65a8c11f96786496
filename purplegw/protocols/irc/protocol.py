"""Sans-IO IRC lines: parse, serialize, split, CTCP, case folding.

No sockets here: ``LineBuffer.feed(bytes)`` returns parsed messages and
``serialize(msg)`` returns the bytes to send.  The session owns the I/O.

Grammar (RFC 1459 section 2.3.1, RFC 2812 section 2.3.1, IRCv3 message-tags)::

    message  = ["@" tags SPACE] [":" prefix SPACE] command [params] crlf
    tags     = tag *[";" tag];   tag = key ["=" escaped_value]
    params   = *14(SPACE middle) [SPACE ":" trailing]

Deliberate deviations, all towards leniency on input:
- Lines may end in a bare LF (many servers and bouncers send it).
- Runs of spaces between parameters are collapsed (RFC 1459 allows them).
- More than 15 parameters are accepted.
- Bytes that are not UTF-8 are decoded as Latin-1: IRC has no charset and
  older clients still send Latin-1; dropping such a line would lose the
  message.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

# RFC 1459 section 2.3: 512 bytes including CR LF.  IRCv3 message-tags adds
# up to 8191 bytes of tags in front; the receive buffer allows both.
MAX_LINE = 512
MAX_TAGS = 8191
_MAX_BUFFER = MAX_LINE + MAX_TAGS + 2


class IrcParseError(ValueError):
    """A line the peer sent is not IRC."""


_TAG_ESCAPES = {"\\": "\\\\", ";": "\\:", " ": "\\s", "\r": "\\r", "\n": "\\n"}
_TAG_UNESCAPES = {"\\": "\\", ":": ";", "s": " ", "r": "\r", "n": "\n"}


def escape_tag_value(value: str) -> str:
    return "".join(_TAG_ESCAPES.get(ch, ch) for ch in value)


def unescape_tag_value(value: str) -> str:
    """IRCv3 message-tags "Escaping values": unknown escapes drop the backslash."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            i += 1
            if i < len(value):
                out.append(_TAG_UNESCAPES.get(value[i], value[i]))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Message:
    """One IRC line.  ``command`` is upper-cased (numerics stay digits)."""

    command: str
    params: tuple[str, ...] = ()
    prefix: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def nick(self) -> str | None:
        """The nick part of ``prefix`` (``nick!user@host``), or None."""
        if self.prefix is None:
            return None
        return self.prefix.split("!", 1)[0].split("@", 1)[0]

    def param(self, index: int, default: str = "") -> str:
        return self.params[index] if -len(self.params) <= index < len(self.params) else default


def decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_line(line: str | bytes) -> Message:  # noqa: C901 - one branch per protocol case reads best in one place
    """Parse one line (with or without its line ending)."""
    text = decode(line) if isinstance(line, bytes) else line
    text = text.rstrip("\r\n")
    if "\r" in text or "\n" in text or "\0" in text:
        raise IrcParseError(f"control character inside line: {text!r}")
    rest = text.lstrip(" ")
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw_tags, _, rest = rest[1:].partition(" ")
        for item in raw_tags.split(";"):
            if not item:
                continue
            key, _, value = item.partition("=")
            tags[key] = unescape_tag_value(value)
        rest = rest.lstrip(" ")
    prefix = None
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        if not prefix:
            raise IrcParseError(f"empty prefix: {text!r}")
        rest = rest.lstrip(" ")
    head, sep, trailing = rest.partition(" :")
    if not sep and rest.startswith(":"):
        head, trailing, sep = "", rest[1:], ":"
    words = head.split()
    if not words:
        raise IrcParseError(f"no command: {text!r}")
    command = words[0].upper()
    if not (command.isalpha() or (len(command) == 3 and command.isdigit())):
        raise IrcParseError(f"bad command {words[0]!r}")
    params = words[1:]
    if sep:
        params.append(trailing)
    return Message(command, tuple(params), prefix, tags)


def serialize(msg: Message) -> bytes:
    """The wire form of ``msg`` with CR LF.

    Raises ``ValueError`` for parameters that cannot be sent (a space or a
    leading colon in a non-final parameter, a line break anywhere): they
    would let a contact's text inject IRC commands.
    """
    parts: list[str] = []
    if msg.tags:
        parts.append(
            "@"
            + ";".join(
                f"{key}={escape_tag_value(value)}" if value else key
                for key, value in msg.tags.items()
            )
        )
    if msg.prefix:
        parts.append(":" + msg.prefix)
    parts.append(msg.command)
    for i, param in enumerate(msg.params):
        if any(ch in param for ch in "\r\n\0"):
            raise ValueError(f"line break in IRC parameter {param!r}")
        last = i == len(msg.params) - 1
        if last and (not param or " " in param or param.startswith(":")):
            parts.append(":" + param)
        elif not param or " " in param or param.startswith(":"):
            raise ValueError(f"only the last IRC parameter may contain spaces: {param!r}")
        else:
            parts.append(param)
    return (" ".join(parts) + "\r\n").encode("utf-8")


def message(command: str, *params: str, tags: dict[str, str] | None = None) -> Message:
    return Message(command.upper(), tuple(params), None, dict(tags or {}))


class LineBuffer:
    """Stream framing: bytes in, ``Message`` list out (RFC 1459 CR LF lines).

    A line longer than tags + 512 bytes raises ``IrcParseError``: the buffer
    is capped so a peer that never sends a line ending cannot eat memory.
    Unparseable lines are logged and skipped; one bad line is no reason to
    drop the connection.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                break
            raw = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if not raw.strip(b"\r "):
                continue
            try:
                out.append(parse_line(raw))
            except IrcParseError as exc:
                logger.warning("skipping unparseable IRC line: %s", exc)
        if len(self._buf) > _MAX_BUFFER:
            self._buf.clear()
            raise IrcParseError("line too long")
        return out


# --- text helpers ---------------------------------------------------------------


def split_utf8(text: str, max_bytes: int) -> list[str]:
    """Split ``text`` into chunks of at most ``max_bytes`` UTF-8 bytes.

    Splits on whole characters only (never inside a multi-byte sequence),
    preferring the last space of a chunk so words stay whole.  Each line of
    a multi-line text becomes at least one chunk (IRC has no line breaks
    inside a message); empty lines are dropped.
    """
    if max_bytes < 4:
        raise ValueError("max_bytes must leave room for one character")
    chunks: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        while line:
            encoded = line.encode("utf-8")
            if len(encoded) <= max_bytes:
                chunks.append(line)
                break
            cut = max_bytes
            # encoded[cut] starts the next chunk: back off while it is a
            # UTF-8 continuation byte (10xxxxxx).
            while (encoded[cut] & 0xC0) == 0x80:
                cut -= 1
            # A space right at the cut counts too (it is dropped, not sent).
            space = encoded.rfind(b" ", 0, cut + 1)
            if space > max_bytes // 2:
                head, rest = encoded[:space], encoded[space + 1 :]
            else:
                head, rest = encoded[:cut], encoded[cut:]
            chunks.append(head.decode("utf-8"))
            line = rest.decode("utf-8")  # noqa: PLW2901 - the line is normalized in place
    return chunks


CTCP_DELIM = "\x01"


def ctcp_parse(text: str) -> tuple[str, str] | None:
    """``("ACTION", "waves")`` for ``"\\x01ACTION waves\\x01"``, None for plain text."""
    if len(text) < 2 or not text.startswith(CTCP_DELIM):
        return None
    body = text[1:]
    if body.endswith(CTCP_DELIM):
        body = body[:-1]
    command, _, arg = body.partition(" ")
    return command.upper(), arg


def ctcp(command: str, arg: str = "") -> str:
    return f"{CTCP_DELIM}{command}{' ' + arg if arg else ''}{CTCP_DELIM}"


# --- nicks (RFC 2812 section 2.3.1) --------------------------------------------------------

#   nickname   =  ( letter / special ) *8( letter / digit / special / "-" )  # noqa: ERA001 - a protocol example, not code
#   special    =  %x5B-60 / %x7B-7D   ; "[", "]", "\\", "`", "_", "^", "{", "|", "}"
# Deviation: the length is the server's NICKLEN (ISUPPORT) instead of 9;
# ngIRCd (Client_IsValidNick) applies the same character classes with its
# MaxNickLength.  Everything else (spaces, ",", "*", "?", "!", "@", ":",
# "#", "&", CR, LF, NUL, non-ASCII) can only break the line it is sent in
# or name something that is not a nick.
_NICK = re.compile(r"[A-Za-z\x5b-\x60\x7b-\x7d][A-Za-z0-9\x5b-\x60\x7b-\x7d-]*")
# Longest nick accepted before the server said its NICKLEN: generous (some
# networks allow 50), but a bound.
DEFAULT_MAX_NICK = 64


def is_valid_nick(nick: str, max_length: int = DEFAULT_MAX_NICK) -> bool:
    """Whether ``nick`` is an RFC 2812 nickname of at most ``max_length`` characters."""
    return 0 < len(nick) <= max_length and _NICK.fullmatch(nick) is not None


# --- case folding (RFC 2812 section 2.2; ISUPPORT CASEMAPPING) ----------------------

_RFC1459_UPPER = "[]\\~"
_RFC1459_LOWER = "{}|^"
_RFC1459 = str.maketrans(_RFC1459_UPPER, _RFC1459_LOWER)
_STRICT_RFC1459 = str.maketrans("[]\\", "{}|")


def casefold(name: str, casemapping: str = "rfc1459") -> str:
    lowered = (
        name.lower()
        if casemapping != "ascii"
        else name.translate(
            str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
        )
    )
    if casemapping == "rfc1459":
        return lowered.translate(_RFC1459)
    if casemapping == "strict-rfc1459":
        return lowered.translate(_STRICT_RFC1459)
    return lowered


def parse_isupport(params: tuple[str, ...]) -> dict[str, str]:
    """RPL_ISUPPORT (005) tokens: ``{"MONITOR": "100", "CASEMAPPING": "ascii"}``.

    Params are ``<nick> token... :are supported by this server``; a token
    ``-NAME`` removes a feature (mapped to the value None-like ``"-"``).
    """
    out: dict[str, str] = {}
    for token in params[1:-1]:
        if token.startswith("-"):
            out[token[1:].upper()] = "-"
            continue
        key, _, value = token.partition("=")
        out[key.upper()] = value
    return out
