"""Limits and transport security: literals, line length, pipelining, TLS, LOGINDISABLED."""

from __future__ import annotations

import imaplib
import ssl

import pytest
import pytest_twisted

from tests.imap.imapserver import PASSWORD, USER, IMAPTestServer, RawClient, in_thread, raw_session


@pytest.fixture
def imap(tmp_path):
    server = IMAPTestServer(tmp_path, listeners=("imap", "imaps"),
                            imap={"max_literal_size": "2KiB", "max_line_length": 8192})
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_literal_over_limit_refused_before_bytes(imap):
    def scenario():
        c = RawClient(imap.port())
        c.login()
        c.send(b"a1 APPEND INBOX {999999}\r\n")
        refused = c.line()
        # the session goes on: no literal bytes were expected
        _, status = c.command("NOOP")
        c.send(b"a2 SELECT {100000}\r\n")
        bad = c.line()
        c.close()
        return refused, status, bad

    refused, status, bad = yield in_thread(scenario)
    assert refused == b"a1 NO [TOOBIG] Message is larger than APPENDLIMIT=2048"
    assert status == b"OK NOOP completed"
    assert bad.startswith(b"a2 BAD [TOOBIG]")


@pytest_twisted.inlineCallbacks
def test_non_synchronizing_literal_over_limit_ends_session(imap):
    out = yield in_thread(raw_session, imap.port(), [
        b"a LOGIN alice@example.test \"correct horse battery staple\"\r\n",
        b"b APPEND INBOX {5000+}\r\n",
    ])
    assert b"* BYE [TOOBIG] literal of 5000 octets is larger than the limit of 2048" in out


@pytest_twisted.inlineCallbacks
def test_literal_plus_and_synchronizing_literal_append(imap):
    def scenario():
        c = RawClient(imap.port())
        c.login()
        msg = b"Subject: lit\r\n\r\nhello\r\n"
        c.send(b"a1 APPEND INBOX (\\Seen) {%d+}\r\n" % len(msg) + msg + b"\r\n")
        first = c.until(b"a1")
        c.send(b"a2 APPEND INBOX {%d}\r\n" % len(msg))
        cont = c.line()
        c.send(msg + b"\r\n")
        second = c.until(b"a2")
        c.close()
        return first, cont, second

    first, cont, second = yield in_thread(scenario)
    assert first[1].startswith(b"OK [APPENDUID ") and first[1].endswith(b" 1] APPEND completed")
    assert cont == b"+ Ready for literal data"
    assert second[1].endswith(b" 2] APPEND completed")


@pytest_twisted.inlineCallbacks
def test_line_too_long_is_bad_and_session_continues(imap):
    def scenario():
        c = RawClient(imap.port())
        c.send(b"a1 NOOP " + b"x" * 20000 + b"\r\n")
        bad = c.line()
        _, status = c.command("NOOP")
        c.close()
        return bad, status

    bad, status = yield in_thread(scenario)
    assert bad == b"a1 BAD [TOOBIG] command line too long"
    assert status == b"OK NOOP completed"


@pytest_twisted.inlineCallbacks
def test_pipelined_commands_answer_in_order(imap):
    def scenario():
        c = RawClient(imap.port())
        c.send(b"p1 LOGIN alice@example.test \"correct horse battery staple\"\r\np2 SELECT INBOX\r\n"
               b"p3 NOOP\r\np4 STATUS INBOX (MESSAGES UIDNEXT)\r\np5 LOGOUT\r\n")
        lines = []
        while True:
            try:
                lines.append(c.line())
            except ConnectionError:
                break
        c.close()
        return lines

    lines = yield in_thread(scenario)
    tagged = [line.split(b" ", 2)[:2] for line in lines if line[:1] == b"p"]
    assert tagged == [[b"p1", b"OK"], [b"p2", b"OK"], [b"p3", b"OK"], [b"p4", b"OK"], [b"p5", b"OK"]]
    assert b'* STATUS "INBOX" (MESSAGES 0 UIDNEXT 1)' in lines


@pytest.fixture
def tls_imap(tmp_path):
    """STARTTLS on the plain listener with no plaintext authentication, and implicit TLS."""
    server = IMAPTestServer(tmp_path, listeners=(), server={"listener": {
        "imap": {"bind": "127.0.0.1:0", "protocol": "imap"},
        "imaps": {"bind": "127.0.0.1:0", "protocol": "imap", "tls": {"implicit": True}}}})
    yield server
    server.stop()


@pytest.fixture
def limited_imap(tmp_path):
    server = IMAPTestServer(tmp_path, imap={"max_sessions_per_user": 2})
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_implicit_tls_and_starttls(tls_imap):
    def scenario():
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        secure = imaplib.IMAP4_SSL("127.0.0.1", tls_imap.port("imaps"), ssl_context=context)
        secure_caps = secure.capabilities
        secure.login(USER, PASSWORD)
        secure.logout()
        c = imaplib.IMAP4("127.0.0.1", tls_imap.port("imap"))
        before = c.capabilities
        try:
            c.login(USER, PASSWORD)
            refused = None
        except imaplib.IMAP4.error as e:
            refused = str(e)
        c.starttls(ssl_context=context)
        after = c.capabilities
        c.login(USER, PASSWORD)
        c.logout()
        return secure_caps, before, refused, after

    secure_caps, before, refused, after = yield in_thread(scenario)
    assert "AUTH=PLAIN" in secure_caps and "STARTTLS" not in secure_caps
    assert "LOGINDISABLED" in before and "STARTTLS" in before and "AUTH=PLAIN" not in before
    assert refused is not None and "PRIVACYREQUIRED" in refused
    assert "AUTH=PLAIN" in after and "STARTTLS" not in after


@pytest_twisted.inlineCallbacks
def test_sessions_per_user_limit(limited_imap):
    server = limited_imap

    def scenario():
        first, second = server.login(), server.login()
        third = server.connect()
        try:
            third.login(USER, PASSWORD)
            refused = None
        except imaplib.IMAP4.error as e:
            refused = str(e)
        first.logout()
        fourth = server.login()  # a slot was freed
        for c in (second, fourth):
            c.logout()
        return refused

    refused = yield in_thread(scenario)
    assert refused is not None and "[LIMIT]" in refused
