"""Byte mutations for the seeded random engine (a small libFuzzer-style set).

Besides blind bit flips and splices, the mutations aim at what hostile SIP
input looks like: boundary numbers in place of digit runs (Content-Length and
CSeq lies, 2**32 wraparound), header lines repeated until they are huge,
folding inserted at line starts, NULs, bare CR/LF and invalid UTF-8.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

__all__ = ["SIP_DICTIONARY", "mutate"]

SIP_DICTIONARY: tuple[bytes, ...] = (
    b"\r\n",
    b"\r\n\r\n",
    b"\r\n ",
    b"\r\n\t",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%00",
    b"%",
    b"@",
    b"=",
    b" ",
    b"\t",
    b"sip:",
    b"sips:",
    b"tel:",
    b";tag=",
    b";branch=z9hG4bK",
    b";lr",
    b";received=",
    b";rport",
    b";expires=",
    b"SIP/2.0",
    b"SIP/2.0/UDP ",
    b"SIP/2.0/TCP ",
    b"Via: ",
    b"v: ",
    b"CSeq: ",
    b"Call-ID: ",
    b"i: ",
    b"From: ",
    b"f: ",
    b"To: ",
    b"t: ",
    b"Contact: ",
    b"m: ",
    b"Content-Length: ",
    b"l: ",
    b"Content-Type: ",
    b"c: ",
    b"Expires: ",
    b"Event: ",
    b"o: ",
    b"Subscription-State: ",
    b"Max-Forwards: ",
    b"Record-Route: ",
    b"Route: ",
    b"Require: ",
    b"SIP-If-Match: ",
    b"Min-Expires: ",
    b"Authorization: Digest ",
    b"[::1]",
    b"[2001:db8::1]",
    b"127.0.0.1",
    b"*",
    b"SUBSCRIBE",
    b"NOTIFY",
    b"PUBLISH",
    b"MESSAGE",
    b"REGISTER",
    b"INVITE",
    b"ACK",
)

_NUMBERS: tuple[bytes, ...] = (
    b"0",
    b"1",
    b"-1",
    b"00000000000000000001",
    b"2147483647",
    b"2147483648",
    b"4294967295",
    b"4294967296",
    b"18446744073709551616",
    b"99999999999999999999999999",
    b"1e3",
    b"0x10",
    b"\xd9\xa3",  # ARABIC-INDIC DIGIT THREE: str.isdigit() says yes, the grammar says no
)
_INTERESTING = b' \t\r\n:;,<>"\\@%=0aZ\x00\x7f\x80\xff'
_DIGITS_RE = re.compile(rb"\d+")
_LINE_RE = re.compile(rb"[^\r\n]*\r\n")


def _span(rng: random.Random, n: int, most: int = 64) -> tuple[int, int]:
    start = rng.randrange(n)
    return start, min(n, start + rng.randint(1, most))


def mutate(  # noqa: C901, PLR0912, PLR0915 - one branch per mutation keeps the set readable
    rng: random.Random,
    data: bytes,
    pool: Sequence[bytes],
    *,
    dictionary: Sequence[bytes] = SIP_DICTIONARY,
    max_len: int = 8192,
) -> bytes:
    """Apply 1..6 random mutations to ``data`` (``pool`` feeds splicing)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(13)
        n = len(buf)
        if n == 0 or op == 0:  # insert random bytes
            pos = rng.randint(0, n)
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 1:  # flip one bit
            pos = rng.randrange(n)
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 2:  # an interesting byte
            buf[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif op == 3:  # delete a span
            start, end = _span(rng, n)
            del buf[start:end]
        elif op == 4:  # duplicate a span
            start, end = _span(rng, n)
            pos = rng.randint(0, n)
            buf[pos:pos] = buf[start:end]
        elif op in (5, 6):  # a dictionary token
            pos = rng.randint(0, n)
            buf[pos:pos] = rng.choice(dictionary)
        elif op == 7:  # a boundary number in place of a digit run
            runs = list(_DIGITS_RE.finditer(buf))
            if runs:
                m = rng.choice(runs)
                buf[m.start() : m.end()] = rng.choice(_NUMBERS)
        elif op == 8:  # a header line repeated (huge headers, duplicate fields)
            lines = list(_LINE_RE.finditer(buf))
            if lines:
                m = rng.choice(lines)
                buf[m.end() : m.end()] = m.group() * rng.choice((2, 3, 50, 400))
        elif op == 9:  # fold a line, or stretch a value with whitespace
            lines = list(_LINE_RE.finditer(buf))
            if lines:
                m = rng.choice(lines)
                pos = rng.randint(m.start(), m.end())
                buf[pos:pos] = rng.choice((b"\r\n ", b"\r\n\t", b" " * 200, b"\r\n  \r\n "))
        elif op == 10:  # splice with another input
            other = rng.choice(pool) if pool else b""
            if other:
                cut = rng.randint(0, n)
                start = rng.randrange(len(other))
                buf[cut:] = other[start : start + rng.randint(1, len(other))]
        elif op == 11:  # truncate
            del buf[rng.randint(0, n) :]
        else:  # break line endings: bare LF / bare CR / CRLF doubled
            ends = [m.end() - 2 for m in _LINE_RE.finditer(buf)]
            if ends:
                pos = rng.choice(ends)
                buf[pos : pos + 2] = rng.choice((b"\n", b"\r", b"\r\n\r\n", b"\n\r"))
    del buf[max_len:]
    return bytes(buf)
