"""Every document of the shared PIDF corpus is read as its manifest says, or refused cleanly.

The manifest (corpus/pidf/manifest.tsv) records, per file, the tuples' basic
values, the activities or other status values, every note text in document
order and whether the bytes are well-formed XML.  The RFC 3856/3903 flow
folders hold whole SIP messages whose bodies are the RFCs' placeholders.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from purplegw.sip.presence.errors import PidfError
from purplegw.sip.presence.mapping import pidf_to_presence
from purplegw.sip.presence.model import DocumentFormat, PidfDocument
from purplegw.sip.presence.pidf import parse_pidf
from tests.kit.corpus import corpus_dir

if TYPE_CHECKING:
    from pathlib import Path

PIDF_DIR = corpus_dir() / "pidf"
FUZZ_DIRS = [
    corpus_dir() / "fuzz" / name
    for name in ("pjproject-fuzz-pidf", "pjproject-fuzz-presence", "pjproject-fuzz-xml")
]


@dataclass(frozen=True)
class Row:
    file: str
    basic: str
    activities: str
    notes: str
    well_formed: str

    @property
    def path(self) -> Path:
        return PIDF_DIR / self.file

    @property
    def content_type(self) -> str:
        # The manifest says which bodies travel as application/xpidf+xml.
        return (
            "application/xpidf+xml" if self.basic.startswith("xpidf:") else "application/pidf+xml"
        )


def _manifest() -> list[Row]:
    with (PIDF_DIR / "manifest.tsv").open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [
            Row(
                file=rec["file"],
                basic=rec["basic_status"],
                activities=rec["rpid_activities/other_status"],
                notes=rec["note_text"],
                well_formed=rec["well_formed_xml"],
            )
            for rec in reader
        ]


ROWS = _manifest()
XML_ROWS = [r for r in ROWS if r.file.endswith(".xml")]
SIP_ROWS = [r for r in ROWS if r.file.endswith(".sip")]


def test_manifest_lists_every_file() -> None:
    on_disk = {
        str(p.relative_to(PIDF_DIR))
        for p in PIDF_DIR.rglob("*")
        if p.is_file() and p.name != "manifest.tsv"
    }
    assert on_disk == {r.file for r in ROWS}
    assert len(XML_ROWS) + len(SIP_ROWS) == len(ROWS)


def assert_reading(doc: PidfDocument, row: Row) -> None:
    if row.basic.startswith("xpidf:"):
        assert doc.format is DocumentFormat.XPIDF
        assert [t.xpidf_status for t in doc.tuples] == [row.basic.removeprefix("xpidf:")]
    else:
        assert doc.format is DocumentFormat.PIDF
        assert [t.basic for t in doc.tuples] == row.basic.split(",")

    if row.activities == "-":
        assert doc.activities == ()
    elif "=" in row.activities:
        # "prefix:name=value" status extensions, or XPIDF "msnsubstatus=value"
        expected = [item.split(":", 1)[-1] for item in row.activities.split(",")]
        found = [f"{e.name}={e.value}" for t in doc.tuples for e in t.status_extensions]
        assert found == expected
    else:
        assert doc.activities == tuple(row.activities.split(","))

    expected_notes = [] if row.notes == "-" else row.notes.split(" | ")
    assert [n.text for n in doc.all_notes] == expected_notes


@pytest.mark.parametrize("row", XML_ROWS, ids=lambda r: r.file)
def test_document_read_as_manifest_says(row: Row) -> None:
    body = row.path.read_bytes()
    if row.well_formed == "yes":
        doc = parse_pidf(body, row.content_type)
        assert doc.repairs == ()
        assert_reading(doc, row)
        pidf_to_presence(doc)
        return
    assert row.well_formed == "NO"
    try:
        doc = parse_pidf(body, row.content_type)
    except PidfError as exc:
        error = exc
    else:
        # Read only through a named repair, and then read correctly.
        assert doc.repairs
        assert_reading(doc, row)
        return
    assert error.status_hint == 400
    assert "not well-formed" in error.reason


def test_exosip_malformed_output_is_repaired_and_truncation_is_not() -> None:
    repaired = [r for r in XML_ROWS if r.well_formed == "NO" and "exosip2" in r.file]
    assert len(repaired) == 7
    for row in repaired:
        assert parse_pidf(row.path.read_bytes(), row.content_type).repairs, row.file
    truncated = PIDF_DIR / "robustness" / "teltel_truncated_resiprocate.xml"
    with pytest.raises(PidfError, match="unclosed token"):
        parse_pidf(truncated.read_bytes(), "application/pidf+xml")


def _split_sip(raw: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8").split("\r\n")[1:]:
        if line[:1] in {" ", "\t"}:
            continue  # folded continuation (";received=...") - not needed here
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


@pytest.mark.parametrize("row", SIP_ROWS, ids=lambda r: r.file)
def test_rfc_flow_bodies(row: Row) -> None:
    headers, body = _split_sip(row.path.read_bytes())
    content_type = headers.get("content-type")
    if content_type is None:
        # SUBSCRIBE, responses and the body-less PUBLISH refresh (RFC 3903 M09):
        # no document, and an empty body is never read as "closed".
        assert body.strip() == b""
        with pytest.raises(PidfError, match="empty presence body"):
            parse_pidf(body, "")
        return
    assert content_type == "application/pidf+xml"
    assert headers["event"] == "presence"
    # The RFCs print "[PIDF Document]" where the body goes: not XML, refused as such.
    assert body.strip().startswith(b"[")
    with pytest.raises(PidfError, match="not well-formed") as info:
        parse_pidf(body, content_type)
    assert info.value.status_hint == 400


FUZZ_SEEDS = sorted(p for d in FUZZ_DIRS for p in d.iterdir() if p.is_file())


def test_fuzz_seed_folders_present() -> None:
    assert len(FUZZ_SEEDS) == 13


@pytest.mark.parametrize("path", FUZZ_SEEDS, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("content_type", ["application/pidf+xml", "application/xpidf+xml"])
def test_fuzz_seeds_read_or_refused(path: Path, content_type: str) -> None:
    body = path.read_bytes()
    try:
        doc = parse_pidf(body, content_type)
    except PidfError as exc:
        error = exc
    else:
        pidf_to_presence(doc)
        return
    assert error.reason


@pytest.mark.parametrize(
    ("name", "root"),
    [
        ("pjproject-fuzz-pidf/seed_dlg_info.xml", "dialog-info"),
        ("pjproject-fuzz-pidf/seed_iscomposing.xml", "isComposing"),
        ("pjproject-fuzz-presence/dialog_info.xml", "dialog-info"),
    ],
)
def test_other_event_packages_are_named_in_the_error(name: str, root: str) -> None:
    body = (corpus_dir() / "fuzz" / name).read_bytes()
    with pytest.raises(PidfError, match=f"<{root}>"):
        parse_pidf(body, "application/pidf+xml")


def test_fuzz_seed_pidf_with_person_in_pidf_namespace() -> None:
    # pjproject's seed puts <person> in the PIDF namespace; pjsip matches by local name.
    body = (corpus_dir() / "fuzz" / "pjproject-fuzz-presence" / "pidf_with_rpid.xml").read_bytes()
    doc = parse_pidf(body, "application/pidf+xml")
    assert doc.persons[0].activities == ("away",)
