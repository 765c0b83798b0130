"""AUTHENTICATE (RFC 9051 §6.2.2, SASL-IR RFC 4959) over real sockets: the shared SASL rules
(RFC 4616) with IMAP's answers (tagged BAD for cancelled or malformed exchanges, NO with RFC
5530 response codes for refused credentials)."""

from __future__ import annotations

import base64

import pytest
import pytest_twisted

from tests.imap.imapserver import OTHER, PASSWORD, USER, IMAPTestServer, RawClient, in_thread

OWN_SECOND_ADDRESS = "a.smith@example.test"


def plain(authzid: str | bytes, authcid: str | bytes, password: str | bytes) -> bytes:
    def octets(value: str | bytes) -> bytes:
        return value.encode("utf-8") if isinstance(value, str) else value

    return base64.b64encode(octets(authzid) + b"\0" + octets(authcid) + b"\0" + octets(password))


@pytest.fixture(scope="module")
def imap(tmp_path_factory):
    server = IMAPTestServer(tmp_path_factory.mktemp("imap-auth"))
    pytest_twisted.blockon(server.server.directory.add_address(USER, OWN_SECOND_ADDRESS))
    yield server
    server.stop()


def initial_response(port: int, response: bytes) -> tuple[bytes, bytes]:
    """``AUTHENTICATE PLAIN <response>`` (SASL-IR), then NOOP: both tagged answers."""
    c = RawClient(port)
    try:
        answer = c.command(b"AUTHENTICATE PLAIN " + response)[1]
        after = c.command("NOOP")[1]
    finally:
        c.close()
    return answer, after


def continued(port: int, responses: list[bytes]) -> list[bytes]:
    """``AUTHENTICATE PLAIN`` answered line by line; every line the server sent back."""
    c = RawClient(port)
    lines = []
    try:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        for response in responses:
            lines.append(c.line())
            c.send(response + b"\r\n")
        while not lines or not lines[-1].startswith(b"a "):
            lines.append(c.line())
    finally:
        c.close()
    return lines


@pytest_twisted.inlineCallbacks
def test_bad_utf8_in_plain_is_refused(imap):
    def scenario():
        return {
            "password": initial_response(imap.port(), plain("", USER, b"correct \xff\xfe horse")),
            "user": initial_response(imap.port(), plain("", b"alice\xc3@example.test", PASSWORD)),
            "authzid": initial_response(imap.port(), plain(b"\xe9", USER, PASSWORD)),
            "continued": continued(imap.port(), [plain("", USER, b"\xc0\xaf")]),
        }

    out = yield in_thread(scenario)
    for name in ("password", "user", "authzid"):
        answer, after = out[name]
        assert answer.startswith(b"BAD ") and b"not UTF-8" in answer, (name, answer)
        assert after == b"OK NOOP completed"  # the session goes on, still not logged in
    assert out["continued"][0] == b"+ "
    assert out["continued"][1].startswith(b"a BAD ") and b"not UTF-8" in out["continued"][1]


@pytest_twisted.inlineCallbacks
def test_plain_field_limits(imap):
    def scenario():
        return {
            "long_password": initial_response(imap.port(), plain("", USER, "p" * 256)),
            "long_authzid": initial_response(imap.port(), plain("a" * 256, USER, PASSWORD)),
            "empty_password": initial_response(imap.port(), plain("", USER, "")),
            "four_fields": initial_response(imap.port(), base64.b64encode(b"\0" + USER.encode() + b"\0x\0y")),
        }

    out = yield in_thread(scenario)
    assert out["long_password"][0].startswith(b"BAD ") and b"255" in out["long_password"][0]
    assert out["long_authzid"][0].startswith(b"BAD ") and b"255" in out["long_authzid"][0]
    assert out["empty_password"][0].startswith(b"BAD ")
    assert out["four_fields"][0].startswith(b"BAD ")


@pytest_twisted.inlineCallbacks
def test_authzid_of_another_account_is_refused(imap):
    def scenario():
        c = RawClient(imap.port())
        refused = c.command(b"AUTHENTICATE PLAIN " + plain(OTHER, USER, PASSWORD))[1]
        still_out = c.command("SELECT INBOX")[1]
        c.close()
        return refused, still_out

    refused, still_out = yield in_thread(scenario)
    assert refused.startswith(b"NO [AUTHORIZATIONFAILED] ")
    assert still_out.startswith(b"BAD SELECT is not valid in the not-authenticated state")


@pytest_twisted.inlineCallbacks
def test_authzid_naming_the_own_account_is_accepted(imap):
    def scenario():
        results = {}
        for authzid in (OWN_SECOND_ADDRESS, USER.upper(), USER):
            c = RawClient(imap.port())
            answer = c.command(b"AUTHENTICATE PLAIN " + plain(authzid, USER, PASSWORD))[1]
            selected = c.command("SELECT INBOX")[1]
            c.close()
            results[authzid] = (answer, selected)
        return results

    out = yield in_thread(scenario)
    for authzid, (answer, selected) in out.items():
        assert answer.startswith(b"OK [CAPABILITY "), authzid
        assert selected.startswith(b"OK [READ-WRITE]"), authzid


@pytest_twisted.inlineCallbacks
def test_star_cancels_with_a_tagged_bad(imap):
    def scenario():
        return {
            "continued": continued(imap.port(), [b"*"]),
            "initial": initial_response(imap.port(), b"*"),
        }

    out = yield in_thread(scenario)
    # RFC 9051 §6.2.2: "*" cancels, and the server MUST reject AUTHENTICATE with a tagged BAD
    assert out["continued"] == [b"+ ", b"a BAD authentication cancelled"]
    assert out["initial"] == (b"BAD authentication cancelled", b"OK NOOP completed")


@pytest_twisted.inlineCallbacks
def test_strict_base64(imap):
    token = plain("", USER, PASSWORD)

    def scenario():
        return {
            "space_inside": continued(imap.port(), [token[:8] + b" " + token[8:]]),
            "no_padding": initial_response(imap.port(), token.rstrip(b"=") if token.endswith(b"=") else token[:-1]),
            "good_continued": continued(imap.port(), [token]),
        }

    out = yield in_thread(scenario)
    assert out["space_inside"][1].startswith(b"a BAD ") and b"base64" in out["space_inside"][1]
    assert out["no_padding"][0].startswith(b"BAD ")
    assert out["good_continued"][0] == b"+ " and out["good_continued"][1].startswith(b"a OK [CAPABILITY ")


@pytest.fixture
def two_tries(tmp_path):
    server = IMAPTestServer(tmp_path, imap={"max_auth_failures": 2})
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_authenticate_failures_count_towards_the_session_limit(two_tries):
    def scenario():
        c = RawClient(two_tries.port())
        first = c.command(b"AUTHENTICATE PLAIN " + plain("", USER, "wrong"))[1]
        # a LOGIN failure counts against the same budget as AUTHENTICATE's
        c.send(b"t9 LOGIN " + USER.encode() + b" wrong-again\r\n")
        lines = []
        try:
            while True:
                lines.append(c.line())
        except ConnectionError:
            pass
        c.close()
        return first, lines

    first, lines = yield in_thread(scenario)
    assert first.startswith(b"NO [AUTHENTICATIONFAILED] ")
    assert lines[0].startswith(b"t9 NO [AUTHENTICATIONFAILED] ")
    assert lines[1:] == [b"* BYE Too many failed authentication attempts"]
