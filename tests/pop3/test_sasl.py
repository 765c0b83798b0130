"""SASL PLAIN messages (RFC 4616) and their base64 framing."""

from __future__ import annotations

import base64

import pytest

from mailserve.pop3.sasl import SASLError, decode_base64, parse_plain


def test_plain_with_and_without_authzid():
    assert parse_plain(b"\0alice\0secret").authcid == "alice"
    creds = parse_plain("alice\0alice\0pässword".encode())
    assert (creds.authzid, creds.authcid, creds.password) == ("alice", "alice", "pässword")


@pytest.mark.parametrize("message, reason", [
    (b"alice\0secret", "malformed"),
    (b"\0alice\0secret\0more", "malformed"),
    (b"\0\0secret", "empty"),
    (b"\0alice\0", "empty"),
    (b"bob\0alice\0secret", "another user"),
    (b"\0\xff\0secret", "UTF-8"),
    (b"\0" + b"a" * 256 + b"\0secret", "too long"),
])
def test_bad_plain_messages_are_refused_with_a_reason(message, reason):
    with pytest.raises(SASLError, match=reason):
        parse_plain(message)


def test_base64_is_strict():
    assert decode_base64(base64.b64encode(b"\0a\0b").decode()) == b"\0a\0b"
    assert decode_base64("=") == b""
    for bad in ("not base64!", "YWJj\nZA==", "é", "A" * 5000):
        with pytest.raises(SASLError):
            decode_base64(bad)
