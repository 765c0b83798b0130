"""APPEND and message transfer over the wire: BINARY (RFC 3516) and literal8, APPEND UTF8
(RFC 6855 §4), APPENDLIMIT (RFC 7889), LITERAL+ (RFC 7888), QUOTA (RFC 9208) with
[OVERQUOTA], and UIDPLUS (RFC 4315) APPENDUID / COPYUID with UID ranges."""

from __future__ import annotations

import itertools
import re

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.e2e.harness import add_user
from tests.imap.imapserver import PASSWORD, IMAPTestServer, RawClient, in_thread, message

_users = itertools.count()
LIMIT = 4096

MIME = (b"From: a@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 ok=\r\n\r\n--XX\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"AAECAwD/\r\n--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-unheard-of\r\n\r\n"
        b"zz\r\n--XX--\r\n")


@pytest.fixture(scope="module")
def imap(tmp_path_factory):
    server = IMAPTestServer(tmp_path_factory.mktemp("imap-append"),
                            imap={"max_literal_size": f"{LIMIT}B", "max_line_length": 8192})
    yield server
    server.stop()


@defer.inlineCallbacks
def fresh_user(imap, quota_bytes: int = 0):
    address = f"append{next(_users)}@example.test"
    account = yield add_user(imap.server, address, PASSWORD, quota_bytes=quota_bytes)
    return address, account


def client(imap, address: str) -> RawClient:
    c = RawClient(imap.port())
    c.login(address)
    return c


def ok(c: RawClient, command: str | bytes) -> list[bytes]:
    untagged, status = c.command(command)
    assert status.startswith(b"OK"), (command, status)
    return untagged


def read_response(c: RawClient, tag: bytes) -> bytes:
    """Everything up to and including the tagged line, literals included, as raw bytes."""
    data = bytearray()
    while True:
        line = c.line()
        data += line + b"\r\n"
        match = re.search(rb"~?\{(\d+)\}$", line)
        if match:
            size = int(match.group(1))
            while len(c.buffer) < size:
                c.buffer += c.sock.recv(65536)
            data += c.buffer[:size]
            del c.buffer[:size]
            continue
        if line.startswith(tag + b" "):
            return bytes(data)


@pytest_twisted.inlineCallbacks
def test_fetch_binary_and_binary_size(imap):
    address, account = yield fresh_user(imap)
    box = imap.core.find_mailbox(account.id, "INBOX")
    yield imap.core.append(account.id, box.id, MIME)

    def scenario():
        c = client(imap, address)
        ok(c, "SELECT INBOX")
        out = {}
        c.send(b"f1 FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[2] BINARY.PEEK[2] BINARY.PEEK[1]<2.3>)\r\n")
        out["parts"] = read_response(c, b"f1")
        c.send(b"f2 FETCH 1 (BINARY.PEEK[] BINARY.SIZE[])\r\n")
        out["whole"] = read_response(c, b"f2")
        out["unknown_cte"] = c.command("FETCH 1 (BINARY.PEEK[3])")[1]
        out["not_a_part"] = c.command("FETCH 1 (BINARY.PEEK[1.MIME])")[1]
        out["size_partial"] = c.command("FETCH 1 (BINARY.SIZE[1]<0.2>)")[1]
        out["flags_peek"] = ok(c, "FETCH 1 (FLAGS)")
        c.send(b"f3 FETCH 1 (BINARY[1])\r\n")
        out["seen"] = read_response(c, b"f3")
        c.close()
        return out

    out = yield in_thread(scenario)
    # RFC 3516 §4.2: the content decoded from its transfer encoding; NUL needs literal8 (~{n})
    assert out["parts"] == (b"* 1 FETCH (BINARY.SIZE[1] 8 BINARY.SIZE[2] 6 BINARY[2] ~{6}\r\n"
                            b"\x00\x01\x02\x03\x00\xff BINARY[1]<2> {3}\r\nf\xc3\xa9)\r\nf1 OK FETCH completed\r\n")
    assert out["whole"] == (b"* 1 FETCH (BINARY[] {%d}\r\n" % len(MIME) + MIME
                            + b" BINARY.SIZE[] %d)\r\nf2 OK FETCH completed\r\n" % len(MIME))
    assert out["unknown_cte"].startswith(b"NO [UNKNOWN-CTE] ")
    assert out["not_a_part"].startswith(b"BAD ")
    assert out["size_partial"].startswith(b"BAD ")
    assert out["flags_peek"] == [b"* 1 FETCH (FLAGS (\\Recent))"]  # .PEEK did not set \Seen
    assert b"BINARY[1] {8}\r\ncaf\xc3\xa9 ok" in out["seen"] and b"\\Seen" in out["seen"]


@pytest_twisted.inlineCallbacks
def test_append_literal8_and_nul(imap):
    address, _ = yield fresh_user(imap)
    raw = b"Subject: nul\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" \
          b"a\x00b\xff\r\n"

    def scenario():
        c = client(imap, address)
        out = {}
        # synchronizing literal8: "+" then the bytes
        c.send(b"a1 APPEND INBOX ~{%d}\r\n" % len(raw))
        out["cont"] = c.line()
        c.send(raw + b"\r\n")
        out["sync"] = c.until(b"a1")[1]
        # non-synchronizing literal8 (RFC 7888 extends literal8 with "+")
        c.send(b"a2 APPEND INBOX ~{%d+}\r\n" % len(raw) + raw + b"\r\n")
        out["nonsync"] = c.until(b"a2")[1]
        # NUL in an ordinary literal is refused (RFC 3516 §4.4)
        c.send(b"a3 APPEND INBOX {%d+}\r\n" % len(raw) + raw + b"\r\n")
        out["nul"] = c.until(b"a3")[1]
        ok(c, "SELECT INBOX")
        c.send(b"f1 FETCH 1:* (BINARY.PEEK[TEXT]<0>)\r\n")
        out["fetch_text"] = c.until(b"f1")[1]
        c.send(b"f2 FETCH 1 (BINARY.PEEK[1] RFC822.SIZE)\r\n")
        out["fetch"] = read_response(c, b"f2")
        c.send(b"f3 FETCH 1 (BODY.PEEK[TEXT])\r\n")
        out["body"] = read_response(c, b"f3")
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["cont"].startswith(b"+ ")
    assert re.fullmatch(rb"OK \[APPENDUID \d+ 1\] APPEND completed", out["sync"])
    assert re.fullmatch(rb"OK \[APPENDUID \d+ 2\] APPEND completed", out["nonsync"])
    assert out["nul"].startswith(b"BAD ") and b"literal8" in out["nul"]
    assert out["fetch_text"].startswith(b"BAD ")  # BINARY takes part numbers only
    assert out["fetch"] == (b"* 1 FETCH (BINARY[1] ~{6}\r\na\x00b\xff\r\n RFC822.SIZE %d)\r\n" % len(raw)
                            + b"f2 OK FETCH completed\r\n")
    # BODY[] cannot carry NUL in a plain literal: it becomes 0x80, keeping the size
    assert out["body"] == b"* 1 FETCH (BODY[TEXT] {6}\r\na\x80b\xff\r\n)\r\nf3 OK FETCH completed\r\n"


@pytest_twisted.inlineCallbacks
def test_append_utf8_and_date_and_flags(imap):
    address, _ = yield fresh_user(imap)
    raw = "Subject: Grüße\r\nFrom: Jörg <jörg@example.test>\r\n\r\nHallo\r\n".encode()

    def scenario():
        c = client(imap, address)
        out = {}
        c.send(b"a1 APPEND INBOX UTF8 (~{%d+}\r\n" % len(raw) + raw + b")\r\n")
        out["before_enable"] = c.until(b"a1")[1]
        ok(c, "ENABLE UTF8=ACCEPT")
        c.send(b'a2 APPEND INBOX (\\Seen $Label) "05-Feb-2022 10:11:12 +0100" UTF8 (~{%d+}\r\n' % len(raw)
               + raw + b")\r\n")
        out["utf8"] = c.until(b"a2")[1]
        out["bad_date"] = c.command(b'APPEND INBOX "31-Foo-2022 10:11:12 +0100" {1+}\r\nx')[1]
        out["bad_flag"] = c.command(b"APPEND INBOX (\\Bogus) {1+}\r\nx")[1]
        out["missing_box"] = c.command(b"APPEND Nowhere {1+}\r\nx")[1]
        out["empty"] = c.command(b"APPEND INBOX {0+}\r\n")[1]
        ok(c, "SELECT INBOX")
        out["fetch"] = ok(c, "FETCH 1 (FLAGS INTERNALDATE ENVELOPE)")
        c.close()
        return out

    out = yield in_thread(scenario)
    assert out["before_enable"].startswith(b"BAD ") and b"UTF8=ACCEPT" in out["before_enable"]
    assert re.fullmatch(rb"OK \[APPENDUID \d+ 1\] APPEND completed", out["utf8"])
    assert out["bad_date"].startswith(b"BAD ")
    assert out["bad_flag"].startswith(b"BAD ")
    assert out["missing_box"].startswith(b"NO [TRYCREATE] ")  # RFC 9051 §6.3.12
    assert out["empty"].startswith(b"NO ")
    fetched = out["fetch"][0]
    assert b"FLAGS (\\Recent \\Seen $Label)" in fetched
    assert b'INTERNALDATE " 5-Feb-2022 09:11:12 +0000"' in fetched
    assert '"Grüße"'.encode() in fetched  # UTF-8 header text as is, after ENABLE (RFC 6855 §3)


@pytest_twisted.inlineCallbacks
def test_appendlimit_and_literal_limits(imap):
    address, _ = yield fresh_user(imap)

    def scenario():
        c = client(imap, address)
        out = {"caps": ok(c, "CAPABILITY")[0], "status": ok(c, "STATUS INBOX (APPENDLIMIT)")}
        # RFC 7889 §4: over APPENDLIMIT is NO [TOOBIG] before a byte of the literal is read
        c.send(b"a1 APPEND INBOX {%d}\r\n" % (LIMIT + 1))
        out["sync_over"] = c.line()
        out["noop"] = c.command("NOOP")[1]
        # exactly the limit is fine
        body = b"Subject: x\r\n\r\n" + b"y" * (LIMIT - 14)
        c.send(b"a2 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
        out["at_limit"] = c.until(b"a2")[1]
        # a short string command may use LITERAL+ within the line limit ...
        c.send(b"a3 CREATE {5+}\r\nLit+1\r\n")
        out["small_nonsync"] = c.until(b"a3")[1]
        # ... but a synchronizing literal larger than the line limit is refused, the session goes on
        c.send(b"a4 CREATE {9000}\r\n")
        out["big_sync"] = c.line()
        out["after"] = c.command("LIST \"\" Lit*")
        # a non-synchronizing literal over the limit cannot be skipped: BAD, then BYE (RFC 7888 §4)
        c.send(b"a5 APPEND INBOX {%d+}\r\n" % (LIMIT * 2))
        lines = []
        try:
            while True:
                lines.append(c.line())
        except (ConnectionError, OSError):
            pass
        out["nonsync_over"] = lines
        c.close()
        return out

    out = yield in_thread(scenario)
    assert f"APPENDLIMIT={LIMIT}".encode() in out["caps"].split()
    assert b"LITERAL+" in out["caps"].split()
    assert out["status"] == [b'* STATUS "INBOX" (APPENDLIMIT %d)' % LIMIT]
    assert out["sync_over"] == b"a1 NO [TOOBIG] Message is larger than APPENDLIMIT=%d" % LIMIT
    assert out["noop"] == b"OK NOOP completed"
    assert out["at_limit"].startswith(b"OK [APPENDUID ")
    assert out["small_nonsync"] == b"OK CREATE completed"
    assert out["big_sync"].startswith(b"a4 BAD [TOOBIG] ")
    assert out["after"] == ([b'* LIST (\\HasNoChildren) "/" "Lit+1"'], b"OK LIST completed")
    assert out["nonsync_over"][0].startswith(b"a5 BAD [TOOBIG] ")
    assert out["nonsync_over"][-1].startswith(b"* BYE [TOOBIG] ")


@pytest_twisted.inlineCallbacks
def test_quota_resources_and_overquota(imap):
    address, account = yield fresh_user(imap, quota_bytes=3 * 1024)
    unlimited, _ = yield fresh_user(imap)
    yield imap.core.set_quota(account.id, 3 * 1024, 3)
    box = imap.core.find_mailbox(account.id, "INBOX")
    first = message(1)
    yield imap.core.append(account.id, box.id, first)

    def scenario():
        c = client(imap, address)
        out = {"root": ok(c, "GETQUOTAROOT INBOX"), "quota": ok(c, 'GETQUOTA ""')}
        out["no_root"] = c.command("GETQUOTA user")[1]
        out["no_box"] = c.command("GETQUOTAROOT Nowhere")[1]
        out["set"] = c.command('SETQUOTA "" (STORAGE 100000)')[1]
        out["set_bad"] = c.command('SETQUOTA "" STORAGE')[1]
        big = b"Subject: big\r\n\r\n" + b"z" * 3000 + b"\r\n"
        c.send(b"a1 APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
        out["over_bytes"] = c.until(b"a1")[1]
        small = b"Subject: small\r\n\r\nhi\r\n"
        for tag in (b"a2", b"a3"):
            c.send(tag + b" APPEND INBOX {%d+}\r\n" % len(small) + small + b"\r\n")
            out[tag] = c.until(tag)[1]
        c.send(b"a4 APPEND INBOX {%d+}\r\n" % len(small) + small + b"\r\n")
        out["over_messages"] = c.until(b"a4")[1]
        ok(c, "SELECT INBOX")
        out["copy"] = c.command("COPY 1 Archive")[1]
        out["after"] = ok(c, 'GETQUOTA ""')
        c.close()
        u = client(imap, unlimited)
        out["unlimited"] = (ok(u, "GETQUOTAROOT INBOX"), u.command('GETQUOTA ""')[1])
        u.close()
        return out

    out = yield in_thread(scenario)
    used_kib = (len(first) + 1023) // 1024
    assert out["root"] == [b'* QUOTAROOT "INBOX" ""', b'* QUOTA "" (STORAGE %d 3 MESSAGE 1 3)' % used_kib]
    assert out["quota"] == [b'* QUOTA "" (STORAGE %d 3 MESSAGE 1 3)' % used_kib]
    assert out["no_root"].startswith(b"NO [NONEXISTENT] ")
    assert out["no_box"].startswith(b"NO [NONEXISTENT] ")
    assert out["set"].startswith(b"NO [NOPERM] ")  # users cannot raise their own quota
    assert out["set_bad"].startswith(b"BAD ")
    assert out["over_bytes"].startswith(b"NO [OVERQUOTA] ")  # RFC 9208 §4.1.4 / RFC 5530
    assert out[b"a2"].startswith(b"OK [APPENDUID ") and out[b"a3"].startswith(b"OK [APPENDUID ")
    assert out["over_messages"].startswith(b"NO [OVERQUOTA] ")
    assert out["copy"].startswith(b"NO [OVERQUOTA] ")
    assert out["after"][0].endswith(b"MESSAGE 3 3)")
    # an account without limits has no quota root (RFC 9208 §4.3)
    assert out["unlimited"] == ([b'* QUOTAROOT "INBOX"'], out["unlimited"][1])
    assert out["unlimited"][1].startswith(b"NO [NONEXISTENT] ")


@pytest_twisted.inlineCallbacks
def test_uidplus_appenduid_copyuid_ranges_and_uid_expunge(imap):
    address, account = yield fresh_user(imap)
    box = imap.core.find_mailbox(account.id, "INBOX")
    for n in range(1, 9):
        yield imap.core.append(account.id, box.id, message(n))
    yield imap.core.create_mailbox(account.id, "Target")

    def scenario():
        c = client(imap, address)
        out = {"select": ok(c, "SELECT INBOX")}
        out["copy"] = c.command("COPY 1,3:5,8 Target")[1]
        ok(c, "UID STORE 6 +FLAGS.SILENT (\\Deleted)")
        out["uid_copy"] = c.command("UID COPY 2,6:7,100:200 Target")[1]
        out["copy_nothing"] = c.command("UID COPY 500:600 Target")[1]
        out["copy_missing"] = c.command("COPY 1 Nowhere")[1]
        out["move"] = c.command("UID MOVE 7:8 Target")
        out["uid_expunge"] = c.command("UID EXPUNGE 1:5")  # only \Deleted ones within 1:5: none
        ok(c, "STORE 1,3 +FLAGS.SILENT (\\Deleted)")
        out["uid_expunge2"] = c.command("UID EXPUNGE 3")
        out["target"] = ok(c, "STATUS Target (MESSAGES UIDNEXT UIDVALIDITY)")
        c.close()
        return out

    out = yield in_thread(scenario)
    target_uv = re.search(rb"UIDVALIDITY (\d+)", out["target"][0]).group(1)
    assert out["copy"] == b"OK [COPYUID %s 1,3:5,8 1:5] COPY completed" % target_uv
    assert out["uid_copy"] == b"OK [COPYUID %s 2,6:7 6:8] COPY completed" % target_uv
    assert out["copy_nothing"] == b"OK UID COPY completed"  # no message, no COPYUID (RFC 4315 §3)
    assert out["copy_missing"].startswith(b"NO [TRYCREATE] ")
    move_untagged, move_status = out["move"]
    assert move_untagged == [b"* OK [COPYUID %s 7:8 9:10] Moved" % target_uv, b"* 8 EXPUNGE", b"* 7 EXPUNGE"]
    assert move_status == b"OK UID MOVE completed"
    assert out["uid_expunge"] == ([], b"OK UID EXPUNGE completed")
    # UID EXPUNGE removes only the named \Deleted message (RFC 4315 §2.1): 6 stays, 1 stays
    assert out["uid_expunge2"] == ([b"* 3 EXPUNGE"], b"OK UID EXPUNGE completed")
    assert out["target"][0].startswith(b'* STATUS "Target" (MESSAGES 10 UIDNEXT 11 ')
