"""Micro-benchmark: parse a typical MESSAGE and build + serialize its 200.

Run: .venv/bin/python bench/sip_parse.py

The reference is the bare minimum any parser must do (split at the empty
line, split lines, partition each at ':' into a dict, format a 200 from four
copied lines): a lower bound, not a competitor.  The ratio says how far above
that floor purplegw's validated, lazily typed parse is.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from typing import TYPE_CHECKING

from purplegw.sip.message import make_response, serialize
from purplegw.sip.parser import parse_datagram

if TYPE_CHECKING:
    from collections.abc import Callable

MESSAGE = (
    b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 1 MESSAGE\r\n"
    b"User-Agent: bench/1.0\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 18\r\n"
    b"\r\n"
    b"Watson, come here."
)


def reference_parse() -> dict[str, str]:
    head, _, _body = MESSAGE.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    fields[""] = lines[0]
    return fields


def reference_respond() -> bytes:
    f = reference_parse()
    out = ["SIP/2.0 200 OK"]
    out += [f"{k}: {f[k.lower()]}" for k in ("Via", "From", "Call-ID", "CSeq")]
    out.append(f"To: {f['to']};tag=abc")
    out.append("Content-Length: 0\r\n\r\n")
    return "\r\n".join(out).encode()


def ours_parse() -> object:
    return parse_datagram(MESSAGE)


def ours_respond() -> bytes:
    msg = parse_datagram(MESSAGE)
    return serialize(make_response(msg, 200, to_tag="abc"))  # type: ignore[arg-type]


def per_op_us(
    ref: Callable[[], object], ours: Callable[[], object], number: int
) -> tuple[float, float]:
    """Best-of-N for both, interleaved so a noisy neighbour hits both alike."""
    best_ref = best_ours = float("inf")
    for _ in range(15):
        best_ref = min(best_ref, timeit.timeit(ref, number=number))
        best_ours = min(best_ours, timeit.timeit(ours, number=number))
    return best_ref / number * 1e6, best_ours / number * 1e6


def main() -> None:
    number = 2000
    assert ours_respond().startswith(b"SIP/2.0 200 OK\r\n")
    rows = [
        ("parse", *per_op_us(reference_parse, ours_parse, number)),
        ("parse + 200 response", *per_op_us(reference_respond, ours_respond, number)),
    ]
    print(
        f"{'operation (typical MESSAGE)':<28} {'reference us':>13} {'purplegw us':>12} "
        f"{'ratio':>6} {'purplegw op/s':>14}"
    )
    for name, ref, ours in rows:
        print(f"{name:<28} {ref:>13.2f} {ours:>12.2f} {ours / ref:>6.1f} {1e6 / ours:>14,.0f}")
    print("reference = split lines + dict + format, no validation: a lower bound")


if __name__ == "__main__":
    main()
