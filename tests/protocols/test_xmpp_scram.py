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
    assert sslproto.SSLProtocol.max_size == TLS_READ_BUFFER == 2 * 1024


def test_scram_login_against_stored_keys_answers_the_challenge_off_the_loop(hashed_prosody):
    """Login works against hashed accounts; the salted password is derived once.

    The challenge handler is the coroutine that runs the derivation in an
    executor (slixmpp's own would run it on the loop); the second login of the
    same account finds the key in the cache.
    """
    from slixmpp.xmlstream.handler import CoroutineCallback

    from purplegw.protocols.xmpp.session import salted_password

    from .xmpp_harness import LoopThread, make_session

    user = hashed_prosody.create_user("hashed1")
    wrong = hashed_prosody.create_user("hashed2")
    config = {"server": hashed_prosody.address, "ca_file": hashed_prosody.ca_file, "keepalive": 0}
    loop = LoopThread()
    try:
        salted_password.cache_clear()
        for attempt in (1, 2):
            session, _ = make_session(loop, user.jid, user.password, config)
            loop.run(session.login())
            # Set aside once logged in (negotiation only), not replaced.
            client = session.client
            handlers = [
                h
                for h in client._handler_list() + client._shed_handlers
                if h.name == "SASL Challenge"
            ]
            assert len(handlers) == 1
            assert isinstance(handlers[0], CoroutineCallback)
            loop.run(session.logout())
            info = salted_password.cache_info()
            assert (info.misses, info.hits) == (1, attempt - 1)
        # A wrong password still fails cleanly through the executor path.
        from purplegw.protocols.base import BadCredentialsError

        session, _ = make_session(loop, wrong.jid, "not-" + wrong.password, config)
        with pytest.raises(BadCredentialsError):
            loop.run(session.login())
    finally:
        loop.close()


def test_stored_scram_key_is_used_only_for_the_inputs_it_was_made_for():
    from purplegw.protocols.xmpp.session import salted_from_record, scram_key_record

    salted = bytes(range(20))
    record = scram_key_record("sha1", b"pw", b"salt", 4096, salted)
    assert salted_from_record(record, "sha1", b"pw", b"salt", 4096) == salted
    # Another password, salt, count or hash: a miss, never a wrong proof.
    assert salted_from_record(record, "sha1", b"pw2", b"salt", 4096) is None
    assert salted_from_record(record, "sha1", b"pw", b"salt2", 4096) is None
    assert salted_from_record(record, "sha1", b"pw", b"salt", 10000) is None
    assert salted_from_record(record, "sha256", b"pw", b"salt", 4096) is None
    for broken in (
        "",
        "{}",
        "not json",
        '{"hash": "sha1"}',
        record.replace('"salted": "', '"salted": "!'),
    ):
        assert salted_from_record(broken, "sha1", b"pw", b"salt", 4096) is None
    assert "pw" not in record.replace('"salted"', "")  # the password itself is not in it


def test_a_stored_key_logs_in_without_deriving_and_a_stale_one_is_replaced(hashed_prosody):
    """First login reports the key it derived; handed back, the next derives nothing."""
    from purplegw.protocols.xmpp.session import SCRAM_KEY_KIND, salted_password, scram_key_record

    from .xmpp_harness import LoopThread, make_session

    user = hashed_prosody.create_user("keyed1")
    config = {"server": hashed_prosody.address, "ca_file": hashed_prosody.ca_file, "keepalive": 0}
    loop = LoopThread()
    try:
        salted_password.cache_clear()
        session, events = make_session(loop, user.jid, user.password, config)
        loop.run(session.login())
        loop.run(session.logout())
        [(kind, record)] = events.of("key")
        assert kind == SCRAM_KEY_KIND
        assert salted_password.cache_info().misses == 1

        salted_password.cache_clear()  # as in a new process: only the stored key is left
        session, events = make_session(
            loop, user.jid, user.password, config, derived_keys={SCRAM_KEY_KIND: record}
        )
        loop.run(session.login())
        loop.run(session.logout())
        assert salted_password.cache_info().misses == 0
        assert events.of("key") == []

        # A key stored for an older password: derived again, reported, login works.
        stale = scram_key_record("sha1", b"old password", b"salt", 4096, b"x" * 20)
        session, events = make_session(
            loop, user.jid, user.password, config, derived_keys={SCRAM_KEY_KIND: stale}
        )
        loop.run(session.login())
        loop.run(session.logout())
        assert salted_password.cache_info().misses == 1
        assert events.of("key") == [(SCRAM_KEY_KIND, record)]
    finally:
        loop.close()
