"""Process-level tuning done by the XMPP session module.

slixmpp's SCRAM key derivation, replaced by hashlib's PBKDF2, gives the same
keys; asyncio's TLS read buffer is shrunk (every TLS test in this directory
runs with it).
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_fast_scram_derivation_equals_slixmpps(hash_name):
    """The C PBKDF2 put in place of slixmpp's Python loop derives the same key."""
    import hashlib

    from slixmpp.util.sasl.mechanisms import SCRAM

    from purplegw.protocols.xmpp.session import client_class

    client_class()  # installs it
    fast = SCRAM.Hi
    assert fast.purplegw_fast
    original = fast.slixmpp_original

    class Mech:
        hash = getattr(hashlib, hash_name)

        def HMAC(self, key, msg):  # noqa: N802 - slixmpp's name, used by the original Hi
            import hmac

            return hmac.HMAC(key=key, msg=msg, digestmod=self.hash).digest()

    for password, salt, iterations in [
        (b"pencil", b"salt-1", 4096),
        ("pässword".encode(), b"\x00\xff", 1),
    ]:
        assert fast(Mech(), password, salt, iterations) == original(
            Mech(), password, salt, iterations
        )
    # RFC 6070 PBKDF2-HMAC-SHA1 test vector 3
    if hash_name == "sha1":
        assert (
            fast(Mech(), b"password", b"salt", 4096).hex()
            == "4b007901b765489abead49d926f721d065a429c1"
        )


def test_asyncio_tls_read_buffer_is_limited():
    from asyncio import sslproto

    from purplegw.protocols.xmpp.session import TLS_READ_BUFFER, client_class

    client_class()
    assert sslproto.SSLProtocol.max_size == TLS_READ_BUFFER == 16 * 1024
