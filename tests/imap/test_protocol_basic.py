"""IMAP protocol basics over a real socket: greeting, capabilities, login, errors."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.imap.imapserver import PASSWORD, USER, IMAPTestServer, in_thread, raw_session


@pytest.fixture
def imap(tmp_path):
    server = IMAPTestServer(tmp_path)
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_greeting_capabilities_and_login(imap):
    def client():
        c = imap.connect()
        pre = c.capabilities
        typ, data = c.login(USER, PASSWORD)
        _typ2, caps = c.capability()
        c.logout()
        return pre, typ, data, caps

    pre, typ, _data, caps = yield in_thread(client)
    assert "IMAP4REV2" in pre and "AUTH=PLAIN" in pre and "SASL-IR" in pre
    assert "IDLE" not in pre
    assert typ == "OK"
    post = caps[0].decode().split()
    for cap in ("IDLE", "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "ESEARCH", "SORT", "LIST-STATUS"):
        assert cap in post


@pytest_twisted.inlineCallbacks
def test_exact_responses_for_select(imap):
    out = yield in_thread(raw_session, imap.port(), [
        b"a1 LOGIN alice@example.test \"correct horse battery staple\"\r\n",
        b"a2 SELECT INBOX\r\n",
        b"a3 LOGOUT\r\n",
    ])
    text = out.decode()
    assert "a1 OK [CAPABILITY" in text
    assert "* 0 EXISTS\r\n" in text
    assert "* OK [UIDNEXT 1]" in text
    assert "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]" in text
    assert "a2 OK [READ-WRITE] SELECT completed\r\n" in text
    assert "* BYE" in text and "a3 OK LOGOUT completed" in text


@pytest_twisted.inlineCallbacks
def test_bad_input_gets_bad_and_session_goes_on(imap):
    out = yield in_thread(raw_session, imap.port(), [
        b"x1 FROBNICATE\r\n",
        b"x2 LOGIN \"unterminated\r\n",
        b"x3 SELECT INBOX\r\n",
        b"x4 NOOP\r\n",
    ])
    lines = out.decode().split("\r\n")
    assert any(line.startswith("x1 BAD unknown command FROBNICATE") for line in lines)
    assert any(line.startswith("x2 BAD unterminated quoted string") for line in lines)
    assert any(line.startswith("x3 BAD SELECT is not valid in the not-authenticated state") for line in lines)
    assert "x4 OK NOOP completed" in lines


@pytest_twisted.inlineCallbacks
def test_failed_login_and_disconnect_after_limit(imap):
    out = yield in_thread(raw_session, imap.port(), [
        b"a LOGIN alice@example.test wrong1\r\n",
        b"b LOGIN alice@example.test wrong2\r\n",
        b"c LOGIN alice@example.test wrong3\r\n",
    ])
    text = out.decode()
    assert "a NO [AUTHENTICATIONFAILED]" in text
    assert "b NO [AUTHENTICATIONFAILED]" in text
    assert "* BYE Too many failed authentication attempts" in text


@pytest_twisted.inlineCallbacks
def test_authenticate_plain_with_and_without_initial_response(imap):
    import base64

    token = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode())
    out = yield in_thread(raw_session, imap.port(), [b"a AUTHENTICATE PLAIN " + token + b"\r\n"])
    assert b"a OK [CAPABILITY" in out
    out = yield in_thread(raw_session, imap.port(), [b"a AUTHENTICATE PLAIN\r\n", (token + b"\r\n", b"a")])
    assert b"+ \r\n" in out and b"a OK [CAPABILITY" in out
    out = yield in_thread(raw_session, imap.port(), [b"a AUTHENTICATE PLAIN\r\n", (b"*\r\n", b"a")])
    assert b"a BAD authentication cancelled" in out


@pytest_twisted.inlineCallbacks
def test_imaplib_append_fetch_store_expunge(imap):
    def client():
        c = imap.connect()
        c.login(USER, PASSWORD)
        msg = b"From: a@example.test\r\nSubject: hello\r\n\r\nbody text\r\n"
        typ, data = c.append("INBOX", "(\\Flagged)", None, msg)
        assert typ == "OK", data
        c.select("INBOX")
        _, fetched = c.fetch("1", "(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY[TEXT])")
        _, stored = c.store("1", "+FLAGS", "(\\Deleted)")
        _, expunged = c.expunge()
        c.logout()
        return data, fetched, stored, expunged

    appended, fetched, stored, expunged = yield in_thread(client)
    assert appended[0].startswith(b"[APPENDUID ")
    head = fetched[0][0]
    assert b"RFC822.SIZE 51" in head and b"\\Flagged" in head
    assert fetched[0][1] == b"Subject: hello\r\n\r\n"
    assert fetched[1][1] == b"body text\r\n"
    assert b"\\Deleted" in stored[0]
    assert expunged == [b"1"]
