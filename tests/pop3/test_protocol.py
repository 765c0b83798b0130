"""The POP3 server over real sockets, driven by ``poplib`` and by raw lines where poplib is too polite."""

from __future__ import annotations

import base64
import poplib
import socket
import ssl
import time

import pytest
import pytest_twisted
from twisted.internet import threads

from mailserve.core.mailcore import FLAGS_ADD
from tests.e2e.harness import make_config, start_server
from tests.pop3.conftest import PASSWORD, sample_message

USER = "alice@example.test"

JOKE_CAPABILITIES = {"CELERITY", "AUSPEX", "POTENCE", "LOGIN-DELAY", "APOP"}


def in_thread(fn, *args):
    """Run a blocking client in a thread so the reactor keeps serving."""
    return threads.deferToThread(fn, *args)


def login(server, port=None) -> poplib.POP3:
    client = poplib.POP3(server.host, port or server.port, timeout=10)
    client.user(USER)
    client.pass_(PASSWORD)
    return client


def plain_response(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


class RawClient:
    """Line-level access for pipelining and error cases poplib cannot produce."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        return self.file.readline().rstrip(b"\r\n")

    def multiline(self) -> list[bytes]:
        lines = []
        while (line := self.readline()) != b".":
            lines.append(line)
        return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    return context


# -- greeting and capabilities --------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_greeting_and_capabilities(pop3_server):
    def client():
        c = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
        welcome, caps = c.getwelcome(), c.capa()
        c.quit()
        return welcome, caps

    welcome, caps = yield in_thread(client)
    assert welcome == b"+OK mail.example.test POP3 server ready"
    for capability in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "STLS"):
        assert capability in caps
    assert caps["SASL"] == ["PLAIN", "LOGIN"]
    assert not JOKE_CAPABILITIES & set(caps)


@pytest_twisted.inlineCallbacks
def test_capabilities_after_login_drop_authorization_ones(pop3_server):
    def client():
        c = login(pop3_server)
        caps = c.capa()
        c.quit()
        return caps

    caps = yield in_thread(client)
    assert "TOP" in caps and "UIDL" in caps
    assert "USER" not in caps and "SASL" not in caps and "STLS" not in caps


# -- TLS -------------------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_plaintext_login_refused_before_stls_then_allowed(pop3_server):
    def client():
        c = poplib.POP3(pop3_server.host, pop3_server.plain_port, timeout=10)
        before = c.capa()
        with pytest.raises(poplib.error_proto) as refused:
            c.user(USER)
        with pytest.raises(poplib.error_proto) as refused_sasl:
            c._shortcmd("AUTH PLAIN " + plain_response(USER, PASSWORD))
        c.stls(tls_context())
        after = c.capa()
        c.user(USER)
        c.pass_(PASSWORD)
        stat = c.stat()
        c.quit()
        return before, refused.value, refused_sasl.value, after, stat

    before, refused, refused_sasl, after, stat = yield in_thread(client)
    assert "STLS" in before and "USER" not in before and "SASL" not in before
    assert str(refused).startswith("b'-ERR [AUTH]")
    assert str(refused_sasl).startswith("b'-ERR [AUTH]")
    assert "STLS" not in after and "USER" in after and after["SASL"] == ["PLAIN", "LOGIN"]
    assert stat == (3, 3 * len(sample_message(1)))


@pytest_twisted.inlineCallbacks
def test_stls_discards_pipelined_cleartext(pop3_server):
    """RFC 2595 §4 / CVE-2011-0411: a command injected after STLS must not run inside TLS."""

    def client():
        raw = RawClient(pop3_server.host, pop3_server.plain_port)
        raw.send(b"STLS\r\nCAPA\r\n")
        assert raw.readline().startswith(b"+OK")
        tls = tls_context().wrap_socket(raw.sock, server_hostname="localhost")
        tls.settimeout(1.0)
        try:
            injected = tls.recv(100)
        except TimeoutError:
            injected = b""
        tls.settimeout(10)
        tls.sendall(b"NOOP\r\n")
        after = tls.recv(100)
        tls.close()
        return injected, after

    injected, after = yield in_thread(client)
    assert injected == b""
    assert after.startswith(b"-ERR")  # NOOP is not valid before login: the session works, in TLS


@pytest_twisted.inlineCallbacks
def test_implicit_tls_listener(pop3_server):
    def client():
        c = poplib.POP3_SSL(pop3_server.host, pop3_server.tls_port, context=tls_context(), timeout=10)
        caps = c.capa()
        c.user(USER)
        c.pass_(PASSWORD)
        count = c.stat()[0]
        c.quit()
        return caps, count

    caps, count = yield in_thread(client)
    assert "STLS" not in caps and "USER" in caps
    assert count == 3


# -- authentication ----------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_sasl_plain_with_initial_response_and_continuation(pop3_server):
    def client():
        c = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
        first = c._shortcmd("AUTH PLAIN " + plain_response(USER, PASSWORD))
        c.quit()
        c = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
        c._putcmd("AUTH PLAIN")
        challenge = c._getline()[0]
        second = c._shortcmd(plain_response(USER, PASSWORD))
        c.quit()
        return first, challenge, second

    first, challenge, second = yield in_thread(client)
    assert first.startswith(b"+OK Logged in, 3 messages")
    assert challenge == b"+ "
    assert second.startswith(b"+OK Logged in")


@pytest_twisted.inlineCallbacks
def test_sasl_cancel_bad_base64_and_proxy_authorization_are_refused(pop3_server):
    def client():
        c = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
        results = []
        c._putcmd("AUTH PLAIN")
        c._getline()
        results.append(c._shortcmd_error("*"))
        results.append(c._shortcmd_error("AUTH PLAIN not*base64"))
        results.append(c._shortcmd_error("AUTH PLAIN " + plain_response(USER, PASSWORD, authzid="bob@example.test")))
        results.append(c._shortcmd_error("AUTH CRAM-MD5"))
        listing = c._longcmd("AUTH")
        c.quit()
        return results, listing

    poplib.POP3._shortcmd_error = lambda self, line: _error_of(self, line)
    try:
        results, listing = yield in_thread(client)
    finally:
        del poplib.POP3._shortcmd_error
    cancelled, bad_base64, proxy, unknown = results
    assert cancelled.startswith(b"-ERR") and b"cancel" in cancelled
    assert bad_base64.startswith(b"-ERR [AUTH]")
    assert proxy.startswith(b"-ERR [AUTH]")
    assert unknown == b"-ERR Unsupported authentication mechanism"
    assert listing[1] == [b"PLAIN", b"LOGIN"]


@pytest_twisted.inlineCallbacks
def test_sasl_login_and_authzid_naming_the_same_account(pop3_server):
    """LOGIN prompts for user name then password; an authzid may name the login's own account."""

    def client():
        c = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
        c._putcmd("AUTH LOGIN")
        prompts = [c._getline()[0]]
        c._putcmd(base64.b64encode(USER.encode()).decode())
        prompts.append(c._getline()[0])
        logged_in = c._shortcmd(base64.b64encode(PASSWORD.encode()).decode())
        c.quit()
        c = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
        c._putcmd("AUTH LOGIN " + base64.b64encode(USER.encode()).decode())  # initial response
        with_initial = c._getline()[0]
        c._shortcmd(base64.b64encode(PASSWORD.encode()).decode())
        c.quit()
        c = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
        self_authzid = c._shortcmd("AUTH PLAIN " + plain_response(USER, PASSWORD, authzid=USER.upper()))
        c.quit()
        return prompts, logged_in, with_initial, self_authzid

    prompts, logged_in, with_initial, self_authzid = yield in_thread(client)
    assert prompts == [b"+ " + base64.b64encode(b"Username:"), b"+ " + base64.b64encode(b"Password:")]
    assert logged_in.startswith(b"+OK Logged in")
    assert with_initial == b"+ " + base64.b64encode(b"Password:")
    assert self_authzid.startswith(b"+OK Logged in")


def _error_of(client: poplib.POP3, line: str) -> bytes:
    try:
        client._shortcmd(line)
    except poplib.error_proto as e:
        return e.args[0]
    raise AssertionError(f"{line!r} was accepted")


@pytest_twisted.inlineCallbacks
def test_wrong_password_then_disconnect_after_too_many_failures(pop3_server):
    def client():
        c = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
        errors = []
        for _ in range(3):
            c.user(USER)
            try:
                c.pass_("wrong password")
            except poplib.error_proto as e:
                errors.append(e.args[0])
        closed = c.file.readline()
        c.close()
        return errors, closed

    errors, closed = yield in_thread(client)
    assert errors == [b"-ERR [AUTH] Invalid user name or password"] * 3
    assert closed == b""  # the server hung up after max_auth_failures


@pytest_twisted.inlineCallbacks
def test_pass_without_user_and_commands_outside_their_state(pop3_server):
    def client():
        raw = RawClient(pop3_server.host, pop3_server.port)
        replies = []
        for line in (b"PASS x", b"STAT", b"RETR 1", b"FOO", b""):
            raw.send(line + b"\r\n")
            replies.append(raw.readline())
        raw.close()
        return replies

    replies = yield in_thread(client)
    assert replies == [
        b"-ERR Send USER first",
        b"-ERR STAT is not valid in the AUTHORIZATION state",
        b"-ERR RETR is not valid in the AUTHORIZATION state",
        b"-ERR Unknown command",
        b"-ERR Empty command",
    ]


# -- TRANSACTION state ---------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_stat_list_uidl_retr_top(pop3_server):
    def client():
        c = login(pop3_server)
        out = {
            "stat": c.stat(),
            "list": c.list()[1],
            "list2": c.list(2),
            "uidl": c.uidl()[1],
            "uidl3": c.uidl(3),
            "retr": c.retr(1),
            "top0": c.top(2, 0)[1],
            "top2": c.top(2, 2)[1],
            "top_all": c.top(3, 100)[1],
        }
        for bad in ("RETR 4", "RETR 0", "RETR x", "LIST 99", "TOP 1", "TOP 1 -1", "UIDL 1 2"):
            try:
                c._shortcmd(bad)
            except poplib.error_proto as e:
                out[bad] = e.args[0]
        c.quit()
        return out

    out = yield in_thread(client)
    size = len(sample_message(1))
    assert out["stat"] == (3, 3 * size)
    assert out["list"] == [f"{n} {size}".encode() for n in (1, 2, 3)]
    assert out["list2"] == f"+OK 2 {size}".encode()
    ids = [line.split()[1] for line in out["uidl"]]
    assert len(set(ids)) == 3 and all(0 < len(i) <= 70 for i in ids)
    assert out["uidl3"] == b"+OK 3 " + ids[2]
    response, lines, octets = out["retr"]
    assert response == f"+OK {size} octets".encode()
    assert b"\r\n".join(lines) + b"\r\n" == sample_message(1)
    assert octets == size  # the octets on the wire match the size announced
    header = sample_message(2).split(b"\r\n\r\n")[0].split(b"\r\n") + [b""]
    assert out["top0"] == header
    assert out["top2"] == header + [b"line 1 of message 2", b"line 2 of message 2"]
    assert b"\r\n".join(out["top_all"]) + b"\r\n" == sample_message(3)
    assert out["RETR 4"] == b"-ERR No such message"
    assert out["RETR 0"] == b"-ERR No such message"
    assert out["RETR x"] == b"-ERR Invalid message number"
    assert out["LIST 99"] == b"-ERR No such message"
    assert out["TOP 1"] == b"-ERR Wrong number of arguments"
    assert out["TOP 1 -1"] == b"-ERR Invalid number of lines"
    assert out["UIDL 1 2"] == b"-ERR Wrong number of arguments"


@pytest_twisted.inlineCallbacks
def test_dot_stuffing_and_bare_lf_messages_arrive_intact(pop3_server):
    dotted = b"Subject: dots\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n"
    bare_lf = b"Subject: unix\n\nline one\n.dot line\nno final newline"
    yield pop3_server.append(dotted)
    yield pop3_server.append(bare_lf)

    def client():
        c = login(pop3_server)
        listing = c.list()[1]
        dotted_lines = c.retr(4)[1]
        c._putcmd("RETR 5")
        c._getresp()
        wire = b""
        while not wire.endswith(b"\r\n.\r\n"):
            wire += c.file.readline()
        c.quit()
        return listing, dotted_lines, wire

    listing, dotted_lines, wire = yield in_thread(client)
    assert b"\r\n".join(dotted_lines) + b"\r\n" == dotted  # poplib un-stuffs
    expected = b"Subject: unix\r\n\r\nline one\r\n..dot line\r\nno final newline\r\n.\r\n"
    assert wire == expected
    # LIST announces the size as transmitted, CRLF line ends and all (RFC 1939 §11).
    crlf_size = len(bare_lf.replace(b"\n", b"\r\n"))
    assert listing[4] == f"5 {crlf_size}".encode()
    assert listing[3] == f"4 {len(dotted)}".encode()


@pytest_twisted.inlineCallbacks
def test_large_message_is_streamed_whole(pop3_server):
    body = b"".join(b"%07d " % i + b"x" * 70 + b"\r\n" for i in range(40_000))  # about 3 MiB
    big = b"Subject: big\r\n\r\n" + body
    yield pop3_server.append(big)

    def client():
        c = login(pop3_server)
        size = c.list(4)
        lines = c.retr(4)[1]
        c.quit()
        return size, lines

    size, lines = yield in_thread(client)
    assert size == f"+OK 4 {len(big)}".encode()
    assert b"\r\n".join(lines) + b"\r\n" == big


@pytest_twisted.inlineCallbacks
def test_snapshot_hides_mail_arriving_during_the_session(pop3_server):
    def first_part():
        c = login(pop3_server)
        return c, c.stat()

    c, before = yield in_thread(first_part)
    yield pop3_server.core.append(pop3_server.account.id, pop3_server.inbox().id, sample_message(9))

    def second_part():
        during = c.stat()
        c.quit()
        c2 = login(pop3_server)
        after = c2.stat()
        c2.quit()
        return during, after

    during, after = yield in_thread(second_part)
    assert before[0] == during[0] == 3
    assert after[0] == 4


# -- DELE, RSET, QUIT and the UPDATE state -----------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_dele_takes_effect_only_at_quit(pop3_server):
    def client():
        c = login(pop3_server)
        c.dele(1)
        c.dele(3)
        stat = c.stat()
        listing = c.list()[1]
        with pytest.raises(poplib.error_proto, match="No such message"):
            c.retr(1)
        with pytest.raises(poplib.error_proto, match="No such message"):
            c.dele(1)
        return c, stat, listing

    c, stat, listing = yield in_thread(client)
    size = len(sample_message(1))
    assert stat == (1, size)
    assert listing == [f"2 {size}".encode()]
    assert pop3_server.inbox_uids() == [1, 2, 3]  # nothing removed before QUIT
    bye = yield in_thread(c.quit)
    assert bye.startswith(b"+OK") and b"2 messages deleted" in bye
    assert pop3_server.inbox_uids() == [2]


@pytest_twisted.inlineCallbacks
def test_rset_unmarks_deleted_messages(pop3_server):
    def client():
        c = login(pop3_server)
        c.dele(1)
        c.dele(2)
        reset = c.rset()
        stat = c.stat()
        c.quit()
        return reset, stat

    reset, stat = yield in_thread(client)
    assert reset.startswith(b"+OK Maildrop has 3 messages")
    assert stat[0] == 3
    assert pop3_server.inbox_uids() == [1, 2, 3]


@pytest_twisted.inlineCallbacks
def test_dropped_connection_deletes_nothing_and_releases_the_maildrop(pop3_server):
    def client():
        c = login(pop3_server)
        c.dele(1)
        c.dele(2)
        c.close()  # no QUIT: RFC 1939 §6 says no UPDATE state
        time.sleep(0.2)
        c2 = login(pop3_server)  # the lock went with the connection
        stat = c2.stat()
        c2.quit()
        return stat

    stat = yield in_thread(client)
    assert stat[0] == 3
    assert pop3_server.inbox_uids() == [1, 2, 3]


@pytest_twisted.inlineCallbacks
def test_one_session_per_maildrop(pop3_server):
    def client():
        first = login(pop3_server)
        second = poplib.POP3(pop3_server.host, pop3_server.port, timeout=10)
        second.user(USER)
        with pytest.raises(poplib.error_proto) as in_use:
            second.pass_(PASSWORD)
        first.dele(1)
        first.quit()
        second.user(USER)
        second.pass_(PASSWORD)  # free again once the first session has finished its UPDATE
        stat = second.stat()
        second.quit()
        return in_use.value.args[0], stat

    in_use, stat = yield in_thread(client)
    assert in_use == b"-ERR [IN-USE] Mailbox is locked by another POP3 session"
    assert stat[0] == 2


@pytest_twisted.inlineCallbacks
def test_maildrop_lock_is_shared_between_pop3_and_pop3s(pop3_server):
    def client():
        first = login(pop3_server)
        second = poplib.POP3_SSL(pop3_server.host, pop3_server.tls_port, context=tls_context(), timeout=10)
        second.user(USER)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            second.pass_(PASSWORD)
        second.quit()
        first.quit()

    yield in_thread(client)


@pytest_twisted.inlineCallbacks
def test_retrieved_messages_are_marked_seen_at_quit(pop3_server):
    def client():
        c = login(pop3_server)
        c.retr(2)
        c.top(3, 1)  # TOP is not a retrieval
        c.quit()

    yield in_thread(client)
    core, account = pop3_server.core, pop3_server.account.id
    messages = core.get_messages(account, [m for _, m in core.mailbox_uids(account, pop3_server.inbox().id)])
    assert [m.seen for m in messages] == [False, True, False]


@pytest_twisted.inlineCallbacks
def test_message_removed_elsewhere_during_session(pop3_server):
    """An IMAP client may expunge what a POP3 session has listed; QUIT still succeeds."""

    def first_part():
        c = login(pop3_server)
        c.dele(1)
        return c

    c = yield in_thread(first_part)
    account, inbox = pop3_server.account.id, pop3_server.inbox().id
    yield pop3_server.core.store_flags(account, inbox, [1, 2], FLAGS_ADD, ["\\Deleted"])
    yield pop3_server.core.expunge(account, inbox)
    bye = yield in_thread(c.quit)
    assert bye.startswith(b"+OK")
    assert pop3_server.inbox_uids() == [3]


# -- UIDL stability -----------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_uidl_stable_across_sessions_deletions_and_restart(tmp_path, pop3_server):
    def uidl():
        c = login(pop3_server)
        ids = [line.split()[1] for line in c.uidl()[1]]
        c.quit()
        return ids

    first = yield in_thread(uidl)
    second = yield in_thread(uidl)
    assert first == second

    def delete_first():
        c = login(pop3_server)
        c.dele(1)
        c.quit()

    yield in_thread(delete_first)
    after_delete = yield in_thread(uidl)
    assert after_delete == first[1:]

    # A restart on the same data directory keeps every unique-id.
    config = pop3_server.server.config
    yield pop3_server.server.stopService()
    restarted = start_server(tmp_path, config=config)
    pop3_server.server = restarted
    pop3_server.host, pop3_server.port = restarted.address("pop3")
    after_restart = yield in_thread(uidl)
    assert after_restart == first[1:]
    # New mail gets a new unique-id, never a reused one.
    yield pop3_server.append(sample_message(7))
    with_new = yield in_thread(uidl)
    assert with_new[:2] == first[1:] and with_new[2] not in first


# -- pipelining and limits ----------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_pipelined_commands_are_answered_in_order(pop3_server):
    def client():
        raw = RawClient(pop3_server.host, pop3_server.port)
        raw.send(
            f"USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 1\r\nLIST 2\r\nDELE 3\r\nUIDL 3\r\nQUIT\r\n".encode()
        )
        replies = [raw.readline(), raw.readline(), raw.readline()]
        retr_status = raw.readline()
        retr = raw.multiline()
        replies += [retr_status, raw.readline(), raw.readline(), raw.readline(), raw.readline()]
        raw.close()
        return replies, retr

    replies, retr = yield in_thread(client)
    user, password, stat, retr_status, list2, dele, uidl3, quit_ = replies
    assert user.startswith(b"+OK") and password.startswith(b"+OK Logged in")
    assert stat.startswith(b"+OK 3 ")
    assert retr_status.startswith(b"+OK") and b"\r\n".join(retr) + b"\r\n" == sample_message(1)
    assert list2.startswith(b"+OK 2 ")
    assert dele == b"+OK Message 3 deleted"
    assert uidl3 == b"-ERR No such message"
    assert quit_.startswith(b"+OK") and b"1 messages deleted" in quit_
    assert pop3_server.inbox_uids() == [1, 2]


@pytest_twisted.inlineCallbacks
def test_overlong_line_closes_the_connection(pop3_server):
    def client():
        raw = RawClient(pop3_server.host, pop3_server.port)
        raw.send(b"USER " + b"a" * 10_000 + b"\r\n")
        reply = raw.readline()
        closed = raw.file.readline()
        raw.close()
        return reply, closed

    reply, closed = yield in_thread(client)
    assert reply == b"-ERR Line too long"
    assert closed == b""


@pytest_twisted.inlineCallbacks
def test_too_many_bad_commands_close_the_connection(pop3_server):
    def client():
        raw = RawClient(pop3_server.host, pop3_server.port)
        raw.send(b"BOGUS\r\n" * 25)
        replies = []
        while line := raw.file.readline():
            replies.append(line.rstrip(b"\r\n"))
        raw.close()
        return replies

    replies = yield in_thread(client)
    assert replies[:20] == [b"-ERR Unknown command"] * 20
    assert replies[20:] == [b"-ERR Too many invalid commands, closing connection"]


@pytest_twisted.inlineCallbacks
def test_idle_timeout_ends_the_session_without_update(tmp_path):
    from tests.e2e.harness import add_user

    listeners = {"pop3": {"protocol": "pop3", "bind": "127.0.0.1:0", "allow_plaintext_auth": True}}
    server = start_server(tmp_path, config=make_config(
        tmp_path, (), server={"listener": listeners}, pop3={"idle_timeout": 1}))
    try:
        account = yield add_user(server, USER, PASSWORD)
        inbox = server.core.find_mailbox(account.id, "INBOX")
        yield server.core.append(account.id, inbox.id, sample_message(1))
        host, port = server.address("pop3")

        def client():
            c = poplib.POP3(host, port, timeout=10)
            c.user(USER)
            c.pass_(PASSWORD)
            c.dele(1)
            started = time.monotonic()
            line = c.file.readline()
            waited = time.monotonic() - started
            closed = c.file.readline()
            c.close()
            return line, waited, closed

        line, waited, closed = yield in_thread(client)
        assert line == b"-ERR Disconnected for inactivity\r\n"
        assert 0.5 < waited < 5
        assert closed == b""
        assert [uid for uid, _ in server.core.mailbox_uids(account.id, inbox.id)] == [1]
    finally:
        yield server.stopService()
