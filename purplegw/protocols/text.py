"""What text may reach a phone's screen, and what a phone may send on (pure functions).

Text from an IM network ends up on a SIP phone's screen, and what a user
quotes back goes out again; neither side should carry terminal or layout
controls.  Each adapter passes text through here in both directions:

``for_phone(text)``
    Text an XMPP contact sent, before it becomes a SIP MESSAGE.
``irc_for_phone(text)``
    Text an IRC contact sent: ``strip_irc_formatting`` first, then ``for_phone``.
``from_phone(text)``
    Text a phone sends towards a network (the same cleaning as ``for_phone``:
    a phone that quotes a line must not send controls back).

What is removed, and why:

- IRC formatting codes (bold ``\\x02``, colour ``\\x03[NN[,NN]]``, hex colour
  ``\\x04[RRGGBB[,RRGGBB]]``, reset ``\\x0f``, reverse ``\\x16``, italic
  ``\\x1d``, strikethrough ``\\x1e``, underline ``\\x1f``, monospace ``\\x11``)
  are *stripped*, not mapped: a SIP MESSAGE is text/plain, and no phone
  renders a markup we could map them to.  A colour code takes its digits
  with it (``\\x0304red`` -> ``red``); digits after a code with no colour
  (``\\x03`` alone) are text.
- ANSI/ECMA-48 escape sequences: CSI (``ESC [`` ... final byte, and the
  8-bit ``\\x9b``), OSC/DCS/PM/APC/SOS strings up to BEL or ST, and
  two-byte ``ESC x`` sequences, whole: removing only the ESC would leave
  ``[31m`` on the screen.
- C0 controls other than TAB and LF (BEL, NUL, backspace, a lone CR...),
  DEL, and the C1 controls U+0080-U+009F.  CR LF and a lone CR become LF
  first, so line breaks survive.
- Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069)
  are *removed*, not made visible: they let a sender reorder what the
  reader sees (the "Trojan source" trick, CVE-2021-42574), and a phone
  has no way to show them.  The implicit marks LRM/RLM/ALM (U+200E,
  U+200F, U+061C) stay: they only nudge neutral characters and right-to-left
  text needs them.

Everything else (any printable character, emoji, combining marks, TAB, LF)
passes unchanged; the functions are idempotent.
"""

from __future__ import annotations

import re

__all__ = [
    "BIDI_CONTROLS",
    "for_phone",
    "from_phone",
    "irc_for_phone",
    "strip_controls",
    "strip_irc_formatting",
]

# Explicit directional formatting characters (Unicode UAX #9, section 2):
# LRE RLE PDF LRO RLO and LRI RLI FSI PDI.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# mIRC colour: \x03 then up to two digits, optionally ",NN" (only when a
# foreground was given).  Hex colour (\x04) likewise with six hex digits.
_IRC_FORMAT = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?"
    r"|\x04(?:[0-9A-Fa-f]{6}(?:,[0-9A-Fa-f]{6})?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)

# ECMA-48 section 5: CSI = ESC [ (or 8-bit 0x9b), parameter bytes 0x30-0x3f,
# intermediate bytes 0x20-0x2f, one final byte 0x40-0x7e.  Control strings
# (OSC ESC ], DCS ESC P, SOS ESC X, PM ESC ^, APC ESC _, and their 8-bit
# forms) run to ST (ESC \\ or 0x9c) or, for OSC as xterm allows, BEL.
# Then any other two-byte escape ESC + 0x20-0x7e.  An unterminated CSI or
# control string is removed to the end of the text: its end would have
# eaten what follows on a terminal too.
_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])(?:[^\x07\x1b\x9c]|\x1b(?!\\))*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x7e]?"
)

# C0 except TAB (0x09) and LF (0x0a), DEL, C1, bidi controls.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + "".join(sorted(BIDI_CONTROLS)) + "]")


def strip_irc_formatting(text: str) -> str:
    """``text`` without mIRC/IRCv3 formatting codes (colour codes with their digits)."""
    return _IRC_FORMAT.sub("", text)


def strip_controls(text: str) -> str:
    """``text`` without escape sequences, control characters or bidi controls.

    Line breaks are normalized to LF.
    """
    if text.isprintable():
        # Nothing to strip (every control, escape introducer and bidi control
        # is unprintable) and no CR: most messages, at one C-level scan.
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", _ANSI.sub("", text))


def for_phone(text: str) -> str:
    """Text from a network contact, as a phone may show it."""
    return strip_controls(text)


def irc_for_phone(text: str) -> str:
    """Text from an IRC contact, as a phone may show it (formatting stripped first)."""
    return strip_controls(strip_irc_formatting(text))


def from_phone(text: str) -> str:
    """Text a phone sends towards a network."""
    return strip_controls(text)
