"""Limits and hostile input over the wire: malformed commands get BAD with a reason and
the session goes on; command line and literal limits are enforced before the bytes are
read; connections per address, sessions per user and failed logins (with a delay) are
bounded (RFC 9051 §7.1.3, RFC 7888 §4, RFC 7889)."""

from __future__ import annotations

import imaplib
import ssl
import time

import pytest
import pytest_twisted

from tests.imap.imapserver import OTHER, PASSWORD, USER, IMAPTestServer, RawClient, in_thread, message

LINE = 8192

MALFORMED = [
    (b"a1 NOOP (", b"a1 BAD unbalanced '('"),
    (b"a2 NOOP )", b"a2 BAD unbalanced ')'"),
    (b"(x) NOOP", b"* BAD expected a tag and a command name"),
    (b"a3", b"a3 BAD expected a tag and a command name"),
    (b"", b"* BAD expected a tag and a command name"),
    (b"* NOOP", b"* BAD invalid tag"),
    (b"a+ NOOP", b"* BAD invalid tag"),
    (b"a4 FROBNICATE", b"a4 BAD unknown command FROBNICATE"),
    (b"a5 LOGIN x y", b"a5 BAD LOGIN is not valid in the selected state"),
    (b"a6 FETCH 0 (FLAGS)", b"a6 BAD invalid sequence number '0'"),
    (b"a7 FETCH 1:x (FLAGS)", b"a7 BAD invalid sequence number 'x'"),
    (b"a8 FETCH 1 (FROB)", b"a8 BAD unknown FETCH item FROB"),
    (b"a9 STORE 1 +FLAGS (\\Bogus)", b"a9 BAD unknown system flag \\Bogus"),
    (b"b1 SEARCH SINCE 32-Jan-2020", b"b1 BAD '32-Jan-2020' is not a valid date"),
    (b"b2 NOOP \x00", b"b2 BAD control character in command"),
    (b"b3 FETCH 1 " + b"(" * 100 + b"FLAGS" + b")" * 100, b"b3 BAD lists nested too deeply"),
    (b"b4 STATUS INBOX (MESSAGES", b"b4 BAD unbalanced '('"),
    (b"b5  NOOP", b"b5 BAD two spaces in a row"),
    (b"b6 NOOP\xff", b"b6 BAD invalid UTF-8 in atom"),
    (b"b7 FETCH 4294967296 (FLAGS)", b"b7 BAD sequence number out of range"),
    (b'b8 SELECT "INBOX', b"b8 BAD unterminated quoted string"),
    (b'b9 CREATE "a\\x"', b"b9 BAD invalid escape in quoted string"),
    (b"c1 FETCH 1 BODY[]<10.0>", b"c1 BAD partial length 0 is out of range"),
    (b"c2 UID FROB 1", b"c2 BAD UID expects FETCH, STORE, COPY, MOVE, SEARCH, SORT, THREAD or EXPUNGE"),
    (b"c3 IDLE now", b"c3 BAD unexpected arguments"),
]


@pytest.fixture(scope="module")
def imap(tmp_path_factory):
    server = IMAPTestServer(tmp_path_factory.mktemp("imap-limits"),
                            imap={"max_literal_size": "64KiB", "max_line_length": LINE, "max_sessions_per_user": 3},
                            server={"max_connections_per_ip": 6})
    pytest_twisted.blockon(server.deliver(message(1), user=OTHER))
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_malformed_commands_get_bad_with_a_reason(imap):
    def scenario():
        c = RawClient(imap.port())
        c.login(OTHER)
        c.command("SELECT INBOX")
        answers = []
        for command, _ in MALFORMED:
            c.send(command + b"\r\nzz NOOP\r\n")
            untagged, status = c.until(b"zz")
            answers.append((untagged, status))
        # the session is intact afterwards
        fetched = c.command("FETCH 1 (UID)")
        c.close()
        return answers, fetched

    answers, fetched = yield in_thread(scenario)
    for (command, expected), (untagged, status) in zip(MALFORMED, answers, strict=True):
        assert untagged == [expected], command
        assert status == b"OK NOOP completed"
    assert fetched == ([b"* 1 FETCH (UID 1)"], b"OK FETCH completed")


@pytest_twisted.inlineCallbacks
def test_line_and_literal_limits_before_reading(imap):
    def scenario():
        c = RawClient(imap.port())
        out = {}
        # before login no command may carry a message-sized literal
        c.send(b"p1 APPEND INBOX {%d}\r\n" % (LINE + 1))
        out["pre_auth_append"] = c.line()
        c.send(b"p2 LOGIN {%d}\r\n" % 100_000)
        out["pre_auth_login"] = c.line()
        out["still_fine"] = c.command("NOOP")
        # short synchronizing literals are fine before login (a password with odd characters)
        c.send(b"p3 LOGIN {%d}\r\n" % len(OTHER))
        out["login_cont"] = c.line()
        c.send(OTHER.encode() + b" {%d+}\r\n" % len(PASSWORD) + PASSWORD.encode() + b"\r\n")
        out["login"] = c.until(b"p3")[1]
        # an authenticated APPEND over APPENDLIMIT is refused before its bytes (RFC 7889)
        c.send(b"a1 APPEND INBOX {%d}\r\n" % (64 * 1024 + 1))
        out["append"] = c.line()
        # anything else may not carry more than the line limit
        c.send(b"a2 SELECT {%d}\r\n" % (LINE + 1))
        out["select"] = c.line()
        # a line over the limit is skipped to its end, then the session goes on
        c.send(b"a3 NOOP " + b"x" * (LINE * 3) + b"\r\n")
        out["long_line"] = c.line()
        # the limit counts the line and its literals together
        c.send(b"a4 LIST {4000+}\r\n" + b"r" * 4000 + b" {5000}\r\n")
        out["sum"] = c.line()
        out["after"] = c.command("NOOP")
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["pre_auth_append"].startswith(b"p1 BAD [TOOBIG] ")
    assert out["pre_auth_login"].startswith(b"p2 BAD [TOOBIG] ")
    assert out["still_fine"] == ([], b"OK NOOP completed")
    assert out["login_cont"].startswith(b"+ ") and out["login"].startswith(b"OK [CAPABILITY ")
    assert out["append"] == b"a1 NO [TOOBIG] Message is larger than APPENDLIMIT=65536"
    assert out["select"].startswith(b"a2 BAD [TOOBIG] ")
    assert out["long_line"] == b"a3 BAD [TOOBIG] command line too long"
    assert out["sum"].startswith(b"a4 BAD [TOOBIG] ")
    assert out["after"] == ([], b"OK NOOP completed")


@pytest_twisted.inlineCallbacks
def test_connections_per_address(imap):
    def scenario():
        open_ = [RawClient(imap.port()) for _ in range(6)]
        extra = RawClient(imap.port())  # the greeting is the refusal
        refused = extra.greeting
        try:
            closed = extra.line() is None
        except ConnectionError:
            closed = True
        extra.close()
        first = open_.pop(0)
        first.command("LOGOUT")
        try:
            while True:
                first.line()
        except ConnectionError:
            pass
        first.close()
        again = RawClient(imap.port())  # a slot was freed
        greeting = again.greeting
        for c in [*open_, again]:
            c.close()
        return refused, closed, greeting

    refused, closed, greeting = yield in_thread(scenario)
    assert refused == b"* BYE [UNAVAILABLE] Too many connections from your address; try again later"
    assert closed
    assert greeting.startswith(b"* OK [CAPABILITY ")


@pytest_twisted.inlineCallbacks
def test_sessions_per_user(imap):
    def scenario():
        sessions = [RawClient(imap.port()) for _ in range(4)]
        answers = [c.command(f'LOGIN {USER} "{PASSWORD}"')[1] for c in sessions]
        # another user is not affected by alice's sessions
        bob = RawClient(imap.port())
        bob_answer = bob.command(f'LOGIN {OTHER} "{PASSWORD}"')[1]
        for c in [*sessions, bob]:
            c.close()
        # dropped connections (no LOGOUT) give their slots back once the server sees them go
        for _ in range(200):
            again = RawClient(imap.port())
            answer = again.command(f'LOGIN {USER} "{PASSWORD}"')[1]
            again.close()
            if not answer.startswith(b"NO [LIMIT]"):
                break
            time.sleep(0.01)
        return answers, bob_answer, answer

    answers, bob_answer, again = yield in_thread(scenario)
    assert again.startswith(b"OK ")
    assert [a.split(b" ", 2)[:2] for a in answers[:3]] == [[b"OK", b"[CAPABILITY"]] * 3
    assert answers[3].startswith(b"NO [LIMIT] ")
    assert bob_answer.startswith(b"OK ")


@pytest.fixture
def strict(tmp_path):
    server = IMAPTestServer(tmp_path, imap={"auth_failure_delay": "400ms", "max_auth_failures": 2},
                            auth={"max_failures_per_ip": 2})
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_failed_logins_are_delayed_and_limited(strict):
    def scenario():
        c = RawClient(strict.port())
        started = time.monotonic()
        first = c.command(f"LOGIN {USER} wrong")[1]
        delayed = time.monotonic() - started
        c.send(b"t9 LOGIN " + USER.encode() + b" wrong-again\r\n")
        second = until_closed(c)
        # the address is now over its failure budget: even the right password is refused
        d = RawClient(strict.port())
        d.send(b"d1 LOGIN " + USER.encode() + b' "' + PASSWORD.encode() + b'"\r\n')
        blocked = [d.line()]
        d.close()
        return first, delayed, second, blocked

    def until_closed(c: RawClient) -> list[bytes]:
        lines = []
        try:
            while True:
                lines.append(c.line())
        except ConnectionError:
            pass
        c.close()
        return lines

    first, delayed, second, blocked = yield in_thread(scenario)
    assert first.startswith(b"NO [AUTHENTICATIONFAILED] ")
    assert delayed >= 0.4  # the configured delay before the answer
    # the client hears why, then the session ends (max_auth_failures = 2)
    assert second[0].startswith(b"t9 NO [AUTHENTICATIONFAILED] ")
    assert second[1:] == [b"* BYE Too many failed authentication attempts"]
    assert blocked[0].startswith(b"d1 NO [UNAVAILABLE] ")


@pytest.fixture
def two_listeners(tmp_path):
    server = IMAPTestServer(tmp_path, listeners=("imap", "imaps"), imap={"max_sessions_per_user": 2})
    pytest_twisted.blockon(server.deliver(message(1)))
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_session_limit_and_recent_span_listeners(two_listeners):
    """Port 143 and 993 sessions of one user count together and share \\Recent claims."""
    server = two_listeners

    def scenario():
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        plain = RawClient(server.port("imap"))
        plain.login(USER)
        first = plain.command("SELECT INBOX")[0]
        secure = imaplib.IMAP4_SSL("127.0.0.1", server.port("imaps"), ssl_context=context, timeout=30)
        secure.login(USER, PASSWORD)
        secure.select("INBOX")
        recent = secure.untagged_responses.get("RECENT")
        third = RawClient(server.port("imap"))
        refused = third.command(f'LOGIN {USER} "{PASSWORD}"')[1]
        for c in (plain, third):
            c.close()
        secure.logout()
        return first, recent, refused

    first, recent, refused = yield in_thread(scenario)
    assert b"* 1 RECENT" in first
    assert recent == [b"0"]  # the 143 session already saw message 1 (RFC 3501 §2.3.2)
    assert refused.startswith(b"NO [LIMIT] ")
