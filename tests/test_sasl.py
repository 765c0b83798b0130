"""mailserve.sasl: SASL PLAIN and LOGIN, the base64 layer, the login guard and the line reader.

The protocols' own tests (tests/pop3, tests/sieve/test_managesieve.py) drive the same code over
sockets; these pin down the rules each piece implements, case by case.
"""

from __future__ import annotations

import base64

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from mailserve.core.mailcore import MailCore
from mailserve.directory.directory import Directory
from mailserve.directory.passwords import PasswordHashing
from mailserve.directory.throttle import AuthThrottle
from mailserve.sasl import (
    MAX_FIELD_OCTETS,
    Credentials,
    LineReader,
    LineTooLong,
    LoginGuard,
    LoginMechanism,
    PlainMechanism,
    SASLCancelled,
    SASLError,
    authzid_names_account,
    decode_response,
    encode_challenge,
    parse_plain,
    start_mechanism,
)

PASSWORD = "correct horse battery"


# -- base64 layer ------------------------------------------------------------------------------

def test_base64_round_trip_empty_response_and_cancel():
    assert decode_response(base64.b64encode(b"\0a\0b").decode()) == b"\0a\0b"
    assert decode_response(b"  AGEAYg==\r\n") == b"\0a\0b"  # surrounding whitespace is the line's
    assert decode_response("=") == b""  # RFC 5034 §4: "=" is an empty response
    with pytest.raises(SASLCancelled):
        decode_response("*")
    assert encode_challenge(b"") == ""
    assert encode_challenge(b"Username:") == "VXNlcm5hbWU6"


@pytest.mark.parametrize("bad", ["not*base64", "AGE", "AG E=", "é", "AGEAYg==x", "=="])
def test_base64_is_strict(bad):
    with pytest.raises(SASLError) as raised:
        decode_response(bad)
    assert not isinstance(raised.value, SASLCancelled)
    assert "base64" in str(raised.value)


def test_overlong_response_is_refused_before_decoding():
    with pytest.raises(SASLError, match="too long"):
        decode_response("A" * 100_000)


# -- PLAIN (RFC 4616) ----------------------------------------------------------------------------

def test_plain_fields():
    assert parse_plain(b"\0alice\0secret") == Credentials("", "alice", "secret")
    assert parse_plain("bob\0alice\0pässwörd with spaces".encode()) == Credentials(
        "bob", "alice", "pässwörd with spaces"
    )
    longest = b"a" * MAX_FIELD_OCTETS
    assert parse_plain(longest + b"\0" + longest + b"\0" + longest).password == "a" * MAX_FIELD_OCTETS


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"alice\0secret", "malformed"),
        (b"\0alice\0secret\0extra", "malformed"),
        (b"", "malformed"),
        (b"\0\0secret", "empty"),
        (b"\0alice\0", "empty"),
        (b"\0alice\0\xff\xfe", "password is not UTF-8"),
        (b"\xc3\0alice\0secret", "authorization identity is not UTF-8"),
        (b"\0" + b"a" * (MAX_FIELD_OCTETS + 1) + b"\0secret", "user name is longer than 255"),
        (b"x" * (MAX_FIELD_OCTETS + 1) + b"\0alice\0secret", "authorization identity is longer"),
    ],
)
def test_bad_plain_messages_are_refused_with_a_reason(message, reason):
    with pytest.raises(SASLError, match=reason):
        parse_plain(message)


def test_plain_mechanism_challenge_then_credentials():
    mechanism = PlainMechanism()
    assert mechanism.step(None) == b""  # the empty challenge: PLAIN's client speaks first
    assert mechanism.step(b"\0alice\0secret") == Credentials("", "alice", "secret")


# -- LOGIN -----------------------------------------------------------------------------------------

def test_login_mechanism_prompts_for_user_then_password():
    mechanism = LoginMechanism()
    assert mechanism.step(None) == b"Username:"
    assert mechanism.step("álice".encode()) == b"Password:"
    assert mechanism.step(b"secret word") == Credentials("", "álice", "secret word")


def test_login_mechanism_initial_response_is_the_user_name():
    mechanism = LoginMechanism()
    assert mechanism.step(b"alice") == b"Password:"
    assert mechanism.step(b"secret") == Credentials("", "alice", "secret")


@pytest.mark.parametrize(
    ("responses", "reason"),
    [([b""], "empty user name"), ([b"alice", b""], "empty password"),
     ([b"\xff"], "not UTF-8"), ([b"a\0b"], "NUL"), ([b"alice", b"p" * 256], "longer than 255")],
)
def test_login_mechanism_refuses_bad_fields(responses, reason):
    mechanism = LoginMechanism()
    with pytest.raises(SASLError, match=reason):
        for response in responses:
            mechanism.step(response)


def test_mechanism_names_are_case_insensitive_and_unknown_ones_refused():
    assert isinstance(start_mechanism("plain"), PlainMechanism)
    assert isinstance(start_mechanism("Login"), LoginMechanism)
    with pytest.raises(SASLError, match="unsupported"):
        start_mechanism("CRAM-MD5")


# -- authorization identity --------------------------------------------------------------------

class _AccountRecord:
    name = "alice"
    addresses = ("alice@example.test", "a.smith@example.test")


@pytest.mark.parametrize(
    ("authzid", "authcid", "allowed"),
    [
        ("", "alice", True),
        ("alice", "alice", True),
        ("ALICE", "alice", True),
        ("A.Smith@Example.TEST", "alice", True),  # one of the account's own addresses
        ("alice", "alice@example.test", True),  # the account name while logging in by address
        ("bob", "alice", False),
        ("bob@example.test", "alice@example.test", False),
    ],
)
def test_authzid_must_name_the_authenticated_account(authzid, authcid, allowed):
    assert authzid_names_account(authzid, authcid, _AccountRecord()) is allowed


# -- the login guard over a real directory ----------------------------------------------------------

@pytest.fixture
def directory(metadata, blobs):
    directory = Directory(
        metadata, MailCore(metadata, blobs),
        hashing=PasswordHashing(time_cost=1, memory_cost=1024), throttle=AuthThrottle(max_failures=5),
    )
    pytest_twisted.blockon(defer.maybeDeferred(directory.add_domain, "example.test"))
    pytest_twisted.blockon(defer.maybeDeferred(
        directory.add_account, "alice", password=PASSWORD, addresses=["alice@example.test"]))
    pytest_twisted.blockon(defer.maybeDeferred(
        directory.add_account, "bob", password=PASSWORD, addresses=["bob@example.test"]))
    return directory


@pytest_twisted.ensureDeferred
async def test_login_guard_success_wrong_password_and_foreign_authzid(directory):
    guard = LoginGuard(directory, reactor, failure_delay=0, max_failures=3)
    ok = await guard.login(Credentials("alice@example.test", "alice", PASSWORD), "192.0.2.1")
    assert ok.succeeded and ok.account.name == "alice" and guard.failures == 0

    wrong = await guard.login(Credentials("", "alice", "nope"), "192.0.2.1")
    assert (wrong.succeeded, wrong.reason, wrong.disconnect) == (False, "invalid", False)

    # bob's password is right, but he may not act as alice: a failure like any other.
    foreign = await guard.login(Credentials("alice", "bob", PASSWORD), "192.0.2.1")
    assert (foreign.reason, foreign.account, foreign.disconnect) == ("authorization", None, False)

    last = await guard.login(Credentials("", "alice", "nope"), "192.0.2.1")
    assert (last.reason, last.disconnect) == ("invalid", True)  # the third failure ends the session
    assert guard.failures == 3


@pytest_twisted.ensureDeferred
async def test_login_guard_reports_a_throttled_address(directory):
    guard = LoginGuard(directory, reactor, failure_delay=0, max_failures=100)
    for _ in range(5):
        assert (await guard.login(Credentials("", "alice", "nope"), "192.0.2.9")).reason == "invalid"
    blocked = await guard.login(Credentials("", "alice", PASSWORD), "192.0.2.9")
    assert (blocked.reason, blocked.disconnect) == ("throttled", True)
    # Another address is not affected.
    assert (await guard.login(Credentials("", "alice", PASSWORD), "192.0.2.10")).succeeded


@pytest_twisted.ensureDeferred
async def test_failures_are_answered_only_after_the_delay(directory):
    clock = task.Clock()
    guard = LoginGuard(directory, clock, failure_delay=2.0, max_failures=3)
    attempt = guard.login_deferred(Credentials("", "alice", "nope"), None)
    while not clock.getDelayedCalls():  # the password check runs in a thread first
        await task.deferLater(reactor, 0.01, lambda: None)
    assert not attempt.called
    clock.advance(1.9)
    assert not attempt.called
    clock.advance(0.1)
    assert attempt.called
    assert (await attempt).reason == "invalid"
    # Success is never delayed.
    assert (await guard.login(Credentials("", "alice", PASSWORD), None)).succeeded
    assert not clock.getDelayedCalls()


# -- line reader --------------------------------------------------------------------------------

def test_lines_crlf_bare_lf_and_partial_input():
    reader = LineReader(10)
    reader.feed(b"USER a\r\nNOOP\nPA")
    assert reader.next_line() == b"USER a"
    assert reader.next_line() == b"NOOP"
    assert reader.next_line() is None
    reader.feed(b"SS x\r\n")
    assert reader.next_line() == b"PASS x"
    assert reader.pending_bytes == 0


def test_line_limit_applies_to_complete_and_unterminated_lines():
    reader = LineReader(4)
    reader.feed(b"abcd\r\nabcd\nabcde\r\n")
    assert reader.next_line() == b"abcd"  # exactly the limit, CRLF-terminated
    assert reader.next_line() == b"abcd"  # exactly the limit, LF-terminated
    with pytest.raises(LineTooLong):
        reader.next_line()
    assert reader.pending_bytes == 0  # the input is forgotten, not kept
    reader.feed(b"abcde")
    assert reader.next_line() is None  # could still be "abcd" + CR: wait
    reader.feed(b"f")
    with pytest.raises(LineTooLong):
        reader.next_line()  # never buffers more than the limit without a line end
    assert reader.pending_bytes == 0


def test_take_and_clear():
    reader = LineReader(100)
    reader.feed(b"12345rest\r\n")
    assert reader.take(5) == b"12345"
    assert reader.take(0) == b""
    assert reader.next_line() == b"rest"
    reader.feed(b"injected\r\n")
    reader.clear()
    assert reader.next_line() is None
