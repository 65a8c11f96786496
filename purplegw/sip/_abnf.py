"""RFC 3261 section 25 grammar, as regular expressions.

Each pattern sits under the ABNF it implements.  The parser unfolds header
lines (``CRLF 1*WSP`` becomes one SP) before these patterns run, so ``LWS``
reduces to ``[ \\t]*`` here.

Every repetition is possessive (``*+``/``++``), so a failed match fails in
linear time: the patterns run on attacker-supplied text.

Deliberate deviations (also listed in docs/sip-core.md):

* D1 ``qdtext`` accepts any octet except ``"``, ``\\``, CR and LF (RFC 3261
  excludes controls); RFC 4475 3.1.1.2 (intmeth) carries raw controls in
  quoted-pairs and the display name is never interpreted by us.
* D2 ``hostname`` is the loose ``[A-Za-z0-9][A-Za-z0-9.-]*`` (no per-label
  rules, trailing dot allowed); IPv4 addresses fall under it too.
* D3 a display name written as tokens may touch the ``<`` with no LWS
  (RFC 4475 3.1.1.6, lwsdisp: "elements should accept").
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

# alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
#   token = 1*(alphanum / "-" / "." / "!" / "%" / "*"
#                  / "_" / "+" / "`" / "'" / "~" )           (RFC 3261 25.1)
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"  # noqa: S105 - an RFC 3261 token, not a secret
TOKEN = rf"[{TOKEN_CHARS}]++"
TOKEN_RE = re.compile(TOKEN)

# LWS = [*WSP CRLF] 1*WSP ; SWS = [LWS]   (25.1) -- after unfolding
SWS = r"[ \t]*+"
LWS = r"[ \t]++"

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE     (25.1)
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
# Deviation D1: qdtext is any char but DQUOTE, backslash, CR, LF.
QUOTED_STRING = r'"(?:[^"\\\r\n]++|\\[^\r\n])*+"'
QUOTED_STRING_RE = re.compile(QUOTED_STRING)
QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)

# hostname = *( domainlabel "." ) toplabel [ "." ]               (25.1)
# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
# IPv6reference = "[" IPv6address "]"
# host = hostname / IPv4address / IPv6reference
# Deviation D2: hostname loosened, IPv6 checked by character class only.
IPV6_REFERENCE = r"\[[0-9A-Fa-f:.]++\]"
HOSTNAME = r"[A-Za-z0-9][A-Za-z0-9.\-]*+"
HOST = rf"(?:{IPV6_REFERENCE}|{HOSTNAME})"
HOST_RE = re.compile(HOST)

# hostport = host [ ":" port ] ; port = 1*DIGIT                   (25.1)
HOSTPORT_RE = re.compile(rf"({HOST})(?::([0-9]{{1,5}}))?")

# gen-value = token / host / quoted-string                        (25.1)
# generic-param = token [ EQUAL gen-value ]
# EQUAL = SWS "=" SWS ; SEMI = SWS ";" SWS
GEN_VALUE = rf"(?:{TOKEN}|{IPV6_REFERENCE}|{QUOTED_STRING})"
SEMI_PARAM_RE: re.Pattern[str] = re.compile(rf"{SWS};{SWS}({TOKEN})(?:{SWS}={SWS}({GEN_VALUE}))?")
# *( SEMI generic-param ) validated in one go, items then taken with findall
GENERIC_PARAMS = rf"(?:{SWS};{SWS}{TOKEN}(?:{SWS}={SWS}{GEN_VALUE})?)*+"
GENERIC_PARAMS_RE = re.compile(rf"{GENERIC_PARAMS}{SWS}")

# Request-Line = Method SP Request-URI SP SIP-Version CRLF        (25.1, 7.1)
# Method = INVITEm / ... / extension-method ; extension-method = token
METHOD_RE = re.compile(TOKEN)
# Request-URI = SIP-URI / SIPS-URI / absoluteURI ; absoluteURI = scheme ":" ...
# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )            (25.1, RFC 2396)
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*+")
ABSOLUTE_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*+:[^\s<>\"]++")

# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF  (25.1, 7.2)
# Status-Code = 3DIGIT ; Reason-Phrase = *(reserved / unreserved / escaped
#               / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
STATUS_CODE_RE = re.compile(r"[1-6][0-9][0-9]")

# SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]   (19.1.1, 25.1)
# userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
# user = 1*( unreserved / escaped / user-unreserved )
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
# unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
# escaped = "%" HEXDIG HEXDIG
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
USER_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]++|%[0-9A-Fa-f]{2})++")
PASSWORD_RE = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]++|%[0-9A-Fa-f]{2})*+")
# uri-parameter = transport-param / ... / other-param
# other-param = pname [ "=" pvalue ] ; pname = 1*paramchar ; pvalue = 1*paramchar
# paramchar = param-unreserved / unreserved / escaped
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
PARAMCHARS = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]++|%[0-9A-Fa-f]{2})++"
URI_PARAM_RE = re.compile(rf";({PARAMCHARS})(?:=({PARAMCHARS}))?")
# The whole SIP-URI after "sip:" in one pass (userinfo, hostport, params,
# headers), so the common case is a single regex call.
USER = r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]++|%[0-9A-Fa-f]{2})++"
PASSWORD = r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]++|%[0-9A-Fa-f]{2})*+"  # noqa: S105 - the RFC 3261 password rule of a URI, not a secret
URI_PARAMS = rf"(?:;{PARAMCHARS}(?:={PARAMCHARS})?)*+"
SIP_URI_REST_RE = re.compile(
    rf"(?:({USER})(?::({PASSWORD}))?@)?({HOST})(?::([0-9]{{1,5}}))?({URI_PARAMS})(?:\?(.*+))?",
    re.DOTALL,
)
# headers = "?" header *( "&" header ) ; header = hname "=" hvalue
# hname = 1*( hnv-unreserved / unreserved / escaped ) ; hvalue = *( ... )
# hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
HNV = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]++|%[0-9A-Fa-f]{2})"
URI_HEADER_RE = re.compile(rf"({HNV}++)=({HNV}*+)")

# telephone-subscriber (RFC 3966 global-number / local-number), loosened to
# the visual-separator and digit alphabet plus params
TEL_NUMBER_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()pw]++")

# Via = ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)          (20.42, 25.1)
# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport
# SLASH = SWS "/" SWS ; sent-by = host [ COLON port ]
# via-received = "received" EQUAL (IPv4address / IPv6address)         (25.1)
# IPv6address is bare there (RFC 5118 4.5: received=2001:db8::9), which the
# generic gen-value grammar does not cover, so Via params also take it.
VIA_GEN_VALUE = rf"(?:[0-9A-Fa-f]*+:[0-9A-Fa-f:.]++|{TOKEN}|{IPV6_REFERENCE}|{QUOTED_STRING})"
VIA_PARAMS = rf"(?:{SWS};{SWS}{TOKEN}(?:{SWS}={SWS}{VIA_GEN_VALUE})?)*+"
VIA_RE = re.compile(
    rf"({TOKEN}){SWS}/{SWS}({TOKEN}){SWS}/{SWS}({TOKEN}){LWS}"
    rf"({HOST})(?:{SWS}:{SWS}([0-9]{{1,5}}))?({VIA_PARAMS}){SWS}"
)

# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method                          (20.16)
CSEQ_RE = re.compile(rf"([0-9]++){LWS}({TOKEN})")

# name-addr = [ display-name ] LAQUOT addr-spec RAQUOT              (25.1)
# display-name = *(token LWS)/ quoted-string
# Deviation D3: no LWS required between the last token and "<".
DISPLAY_TOKENS_RE = re.compile(rf"(?:{TOKEN}{SWS})*+")
# The whole name-addr / addr-spec value with its parameters, one pass:
#   group 1 quoted display, 2 token display, 3 URI in <>, 4 params
NAME_ADDR_RE = re.compile(
    rf"({QUOTED_STRING})?{SWS}((?:{TOKEN}{SWS})*+)<([^<>\s]*+)>({GENERIC_PARAMS}){SWS}"
)

# delta-seconds = 1*DIGIT ; Max-Forwards = 1*DIGIT                 (25.1)
DIGITS_RE = re.compile(r"[0-9]++")

# Fast path for the everyday shape of From/To/Contact/Route: a lower-case
# sip/sips URI without headers inside <>, matched in the same pass as the
# name-addr around it.  Anything else goes through NAME_ADDR_RE + parse_uri.
#   1 quoted display, 2 token display, 3 scheme, 4 user, 5 password, 6 host,
#   7 port, 8 uri-parameters, 9 header params
NAME_ADDR_SIP_RE: re.Pattern[str] = re.compile(
    rf"({QUOTED_STRING})?{SWS}((?:{TOKEN}{SWS})*+)<(sips?):"
    rf"(?:({USER})(?::({PASSWORD}))?@)?({HOST})(?::([0-9]{{1,5}}))?({URI_PARAMS})>"
    rf"({GENERIC_PARAMS}){SWS}"
)
