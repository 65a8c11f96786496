"""PIDF read/write cost per document: purplegw vs the bare standard-library XML parser.

    .venv/bin/python bench/pidf.py [--repeat 5] [--number 2000]

Reading: ``parse_pidf`` (defusedxml + limits + model) and ``parse_pidf`` +
``pidf_to_presence`` over every well-formed document of the shared corpus,
against ``xml.etree.ElementTree.fromstring`` on the same bytes (the unsafe
floor: no entity guard, no interpretation).  Writing: ``presence_to_pidf``
for a one-resource contact against ``ElementTree.tostring`` of the same
document built as a tree.  Best of ``--repeat`` runs; microseconds per document.
"""

from __future__ import annotations

import argparse
import sys
import timeit
import xml.etree.ElementTree as ET  # the reference, on our own trusted bytes
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from purplegw.presence import ContactPresence, Presence, Status  # noqa: E402
from purplegw.sip.presence import parse_pidf, pidf_to_presence, presence_to_pidf  # noqa: E402
from tests.kit.corpus import corpus_dir  # noqa: E402

PIDF = "application/pidf+xml"

if TYPE_CHECKING:
    from collections.abc import Callable


def corpus_documents() -> list[bytes]:
    docs = []
    for path in sorted((corpus_dir() / "pidf").rglob("*.xml")):
        body = path.read_bytes()
        try:
            ET.fromstring(body)  # noqa: S314 - corpus bytes, reference run only
        except ET.ParseError:
            continue
        docs.append(body)
    return docs


def per_doc(fn: Callable[[], object], count: int, repeat: int, number: int) -> float:
    best = min(timeit.repeat(fn, repeat=repeat, number=number))
    return best / number / count * 1e6


def reference_tree() -> ET.Element:
    ns, dm, rpid = (
        "urn:ietf:params:xml:ns:pidf",
        "urn:ietf:params:xml:ns:pidf:data-model",
        "urn:ietf:params:xml:ns:pidf:rpid",
    )
    root = ET.Element(f"{{{ns}}}presence", entity="sip:bob@example.com")
    tup = ET.SubElement(root, f"{{{ns}}}tuple", id="t1")
    ET.SubElement(ET.SubElement(tup, f"{{{ns}}}status"), f"{{{ns}}}basic").text = "open"
    ET.SubElement(tup, f"{{{ns}}}note").text = "In a meeting"
    person = ET.SubElement(root, f"{{{dm}}}person", id="p1")
    ET.SubElement(ET.SubElement(person, f"{{{rpid}}}activities"), f"{{{rpid}}}busy")
    ET.SubElement(person, f"{{{dm}}}note").text = "In a meeting"
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()

    docs = corpus_documents()
    n = len(docs)
    number = max(1, args.number // n)

    def ref_read() -> None:
        for body in docs:
            ET.fromstring(body)  # noqa: S314 - reference run on corpus bytes

    def our_read() -> None:
        for body in docs:
            parse_pidf(body, PIDF)

    def our_read_map() -> None:
        for body in docs:
            pidf_to_presence(parse_pidf(body, PIDF))

    contact = ContactPresence("bob@example.com", {"desk": Presence(Status.BUSY, "In a meeting")})
    tree = reference_tree()

    rows = [
        (
            "read (corpus docs)",
            per_doc(our_read, n, args.repeat, number),
            per_doc(ref_read, n, args.repeat, number),
        ),
        (
            "read + map",
            per_doc(our_read_map, n, args.repeat, number),
            per_doc(ref_read, n, args.repeat, number),
        ),
        (
            "write (1 resource)",
            per_doc(
                lambda: presence_to_pidf("sip:bob@example.com", contact),
                1,
                args.repeat,
                args.number,
            ),
            per_doc(lambda: ET.tostring(tree, encoding="utf-8"), 1, args.repeat, args.number),
        ),
    ]
    print(f"{n} corpus documents, best of {args.repeat}; microseconds per document")
    print(f"{'operation':<22}{'purplegw':>12}{'stdlib ET':>12}{'ratio':>8}")
    for name, ours, ref in rows:
        print(f"{name:<22}{ours:>12.1f}{ref:>12.1f}{ours / ref:>8.2f}")


if __name__ == "__main__":
    main()
