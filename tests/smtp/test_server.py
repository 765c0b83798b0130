"""The ESMTP session over real sockets with smtplib: every rule, with the exact reply codes."""

from __future__ import annotations

import base64
import socket
import time

import pytest_twisted

from tests.smtp.conftest import MESSAGE, client, in_thread, inbox, insecure_tls


def run(server, script, listener="smtp"):
    """Run ``script(smtp)`` against ``listener`` in a thread; returns what it returns."""

    def go():
        smtp = client(server, listener)
        try:
            return script(smtp)
        finally:
            try:
                smtp.quit()
            except Exception:  # noqa: BLE001 - the server may have closed already
                smtp.close()

    return in_thread(go)


def raw_session(server, lines, listener="smtp", read_until=None):
    """Send raw bytes; return every reply line the server sent until it closed or went quiet."""

    def go():
        sock = socket.create_connection(server.address(listener), timeout=5)
        received = b""
        try:
            received += sock.recv(4096)
            for chunk in lines:
                try:
                    sock.sendall(chunk)
                except OSError:  # the server hung up, as some tests expect
                    break
                time.sleep(0.05)
            sock.settimeout(1.0)
            while True:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    break
                if not data:
                    break
                received += data
                if read_until and read_until in received:
                    break
        finally:
            sock.close()
        return received.decode().split("\r\n")

    return in_thread(go)


@pytest_twisted.ensureDeferred
async def test_ehlo_advertises_exactly_what_works(server):
    def script(smtp):
        code, text = smtp.ehlo("client.remote.test")
        return code, text.decode().split("\n")

    code, lines = await run(server, script)
    assert code == 250
    assert lines[0].startswith("mail.example.test Hello client.remote.test")
    assert lines[1:] == ["PIPELINING", "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS",
                         "SMTPUTF8", "CHUNKING", "DSN"]  # no AUTH before TLS on this listener


@pytest_twisted.ensureDeferred
async def test_auth_offered_after_starttls(server):
    def script(smtp):
        smtp.ehlo("client.remote.test")
        code, _ = smtp.starttls(context=insecure_tls())
        smtp.ehlo("client.remote.test")
        return code, smtp.esmtp_features

    code, features = await run(server, script)
    assert code == 220
    assert features["auth"].strip() == "PLAIN LOGIN"
    assert "starttls" not in features


@pytest_twisted.ensureDeferred
async def test_local_delivery_adds_trace_fields(server):
    def script(smtp):
        smtp.ehlo("client.remote.test")
        return smtp.sendmail("sender@remote.test", ["alice@example.test"], MESSAGE)

    refused = await run(server, script)
    assert refused == {}
    [stored] = inbox(server, "alice@example.test")
    assert stored.startswith(b"Return-Path: <sender@remote.test>\r\nReceived: from client.remote.test ([127.0.0.1])")
    assert b"by mail.example.test (mailserve) with ESMTP id " in stored
    assert b"for <alice@example.test>;" in stored
    assert stored.endswith(MESSAGE)


@pytest_twisted.ensureDeferred
async def test_received_field_records_tls(server):
    def script(smtp):
        smtp.ehlo("client.remote.test")
        smtp.starttls(context=insecure_tls())
        smtp.ehlo("client.remote.test")
        return smtp.sendmail("sender@remote.test", ["alice@example.test"], MESSAGE)

    assert await run(server, script) == {}
    [stored] = inbox(server, "alice@example.test")
    assert b"with ESMTPS id" in stored
    assert b"(using TLSv1." in stored and b" with cipher " in stored


@pytest_twisted.ensureDeferred
async def test_unknown_recipient_550_511(server):
    def script(smtp):
        smtp.ehlo("x.test")
        smtp.mail("sender@remote.test")
        return smtp.rcpt("nobody@example.test")

    code, text = await run(server, script)
    assert (code, text[:5]) == (550, b"5.1.1")


@pytest_twisted.ensureDeferred
async def test_aliases_groups_and_subaddresses_resolve(server):
    def script(smtp):
        smtp.ehlo("x.test")
        return smtp.sendmail("s@remote.test", ["info@example.test", "team@example.test", "carol+lists@example.test"],
                             MESSAGE)

    assert await run(server, script) == {}
    # info -> alice, team -> alice + carol, carol+lists -> carol: one copy per account.
    assert len(inbox(server, "alice@example.test")) == 1
    assert len(inbox(server, "carol@example.test")) == 1


@pytest_twisted.ensureDeferred
async def test_catch_all(server):
    await server.directory.set_catch_all("example.test", "carol@example.test")

    def script(smtp):
        smtp.ehlo("x.test")
        smtp.mail("s@remote.test")
        return smtp.rcpt("whoever@example.test")

    assert (await run(server, script))[0] == 250


@pytest_twisted.ensureDeferred
async def test_no_open_relay(server):
    def script(smtp):
        smtp.ehlo("x.test")
        smtp.mail("s@remote.test")
        return smtp.rcpt("victim@elsewhere.test")

    code, text = await run(server, script)
    assert (code, text[:5]) == (554, b"5.7.1")
    assert b"Relay access denied" in text


@pytest_twisted.ensureDeferred
async def test_relay_after_auth_is_queued(server):
    def script(smtp):
        smtp.ehlo("x.test")
        smtp.starttls(context=insecure_tls())
        smtp.ehlo("x.test")
        smtp.login("alice@example.test", "alice-password")
        return smtp.sendmail("alice@example.test", ["friend@elsewhere.test"], MESSAGE)

    assert await run(server, script) == {}
    [entry] = server.outbound_queue.entries()
    assert entry.mail_from == "alice@example.test"
    assert [r.address for r in entry.recipients] == ["friend@elsewhere.test"]


@pytest_twisted.ensureDeferred
async def test_quota_full_452_422(server):
    big = MESSAGE + b"x" * 3000 + b"\r\n"

    def script(smtp):
        smtp.ehlo("x.test")
        smtp.mail("s@remote.test")
        smtp.rcpt("bob@example.test")
        return smtp.data(big)

    code, text = await run(server, script)
    assert (code, text[:5]) == (452, b"4.2.2")
    assert inbox(server, "bob@example.test") == []


@pytest_twisted.ensureDeferred
async def test_quota_full_at_rcpt_with_declared_size(server):
    def script(smtp):
        smtp.ehlo("x.test")
        smtp.mail("s@remote.test", ["SIZE=5000"])
        return smtp.rcpt("bob@example.test")

    code, text = await run(server, script)
    assert (code, text[:5]) == (452, b"4.2.2")


@pytest_twisted.ensureDeferred
async def test_message_too_big_552_534(tmp_path):
    from tests.smtp.conftest import populate, start

    server = start(tmp_path, smtp={"max_message_size": "64KiB"})
    try:
        await populate(server)

        def script(smtp):
            smtp.ehlo("x.test")
            declared = smtp.mail("s@remote.test", ["SIZE=100000"])
            smtp.rset()
            smtp.mail("s@remote.test")
            smtp.rcpt("alice@example.test")
            actual = smtp.data(MESSAGE + (b"y" * 998 + b"\r\n") * 70)
            return declared, actual

        declared, actual = await run(server, script)
        assert (declared[0], declared[1][:5]) == (552, b"5.3.4")
        assert (actual[0], actual[1][:5]) == (552, b"5.3.4")
        assert inbox(server, "alice@example.test") == []
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_too_many_recipients_452_453(tmp_path):
    from tests.smtp.conftest import populate, start

    server = start(tmp_path, smtp={"max_recipients": 2})
    try:
        await populate(server)

        def script(smtp):
            smtp.ehlo("x.test")
            smtp.mail("s@remote.test")
            return [smtp.rcpt(a) for a in ("alice@example.test", "carol@example.test", "info@example.test")]

        replies = await run(server, script)
        assert [r[0] for r in replies] == [250, 250, 452]
        assert replies[2][1][:5] == b"4.5.3"
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_syntax_errors_and_sequence_errors(server):
    def script(smtp):
        smtp.ehlo("x.test")
        return [
            smtp.docmd("MAIL", "FROM:sender@remote.test"),  # no angle brackets
            smtp.docmd("RCPT", "TO:<alice@example.test>"),  # no MAIL yet
            smtp.docmd("DATA"),
            smtp.docmd("MAIL", "FROM:<s@remote.test> FROB=1"),  # unknown parameter
            smtp.docmd("MAIL", "FROM:<s@remote.test> BODY=BINARYMIME"),
            smtp.docmd("MAIL", "FROM:<a b@remote.test>"),
            smtp.docmd("MAIL", "FROM:<s@remote.test>"),
            smtp.docmd("MAIL", "FROM:<s@remote.test>"),  # nested
            smtp.docmd("RCPT", "TO:<alice@example.test> NOTIFY=NEVER,SUCCESS"),
            smtp.docmd("RCPT", "TO:<bad@@example.test>"),
            smtp.docmd("DATA"),  # no valid recipients
        ]

    replies = await run(server, script)
    assert [(code, text[:5]) for code, text in replies] == [
        (501, b"5.5.4"), (503, b"5.5.1"), (503, b"5.5.1"), (555, b"5.5.4"), (555, b"5.5.4"),
        (501, b"5.1.7"), (250, b"2.1.0"), (503, b"5.5.1"), (501, b"5.5.4"),
        (501, b"5.1.3"), (554, b"5.5.1"),
    ]


@pytest_twisted.ensureDeferred
async def test_command_line_too_long_500_552(server):
    lines = await raw_session(server, [b"EHLO x.test\r\n", b"NOOP " + b"a" * 5000 + b"\r\n", b"NOOP\r\n"])
    assert "500 5.5.2 Error: line too long" in lines
    assert lines[-2] == "250 2.0.0 Ok"  # the session goes on after the long line


@pytest_twisted.ensureDeferred
async def test_data_line_too_long(server):
    def script(smtp):
        smtp.ehlo("x.test")
        smtp.mail("s@remote.test")
        smtp.rcpt("alice@example.test")
        return smtp.data(b"Subject: x\r\n\r\n" + b"z" * 5000 + b"\r\n")

    code, text = await run(server, script)
    assert (code, text[:5]) == (500, b"5.5.2")


@pytest_twisted.ensureDeferred
async def test_noop_vrfy_help_rset(server):
    def script(smtp):
        smtp.ehlo("x.test")
        return [smtp.noop(), smtp.verify("alice@example.test"), smtp.docmd("HELP"), smtp.rset(),
                smtp.docmd("EXPN", "team")]

    replies = await run(server, script)
    assert [r[0] for r in replies] == [250, 252, 214, 250, 502]


@pytest_twisted.ensureDeferred
async def test_helo_session_and_parameters_need_ehlo(server):
    def script(smtp):
        smtp.helo("x.test")
        return [smtp.docmd("MAIL", "FROM:<s@remote.test> SIZE=10"), smtp.docmd("MAIL", "FROM:<s@remote.test>")]

    replies = await run(server, script)
    assert [r[0] for r in replies] == [555, 250]


@pytest_twisted.ensureDeferred
async def test_too_many_errors_disconnects(server):
    lines = await raw_session(server, [b"BOGUS\r\n"] * 12)
    # max_errors (10) failed commands are answered; the next one ends the session.
    assert lines.count("500 5.5.2 Error: command not recognized") == 11
    assert "421 4.7.0 mail.example.test Error: too many errors" in lines


@pytest_twisted.ensureDeferred
async def test_idle_timeout_421(tmp_path):
    from tests.smtp.conftest import start

    server = start(tmp_path, smtp={"command_timeout": "1s"})
    try:
        lines = await raw_session(server, [b"EHLO x.test\r\n"], read_until=b"421")
        assert "421 4.4.2 mail.example.test Error: timeout exceeded" in lines
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_connections_per_ip_limit(tmp_path):
    from tests.smtp.conftest import start

    server = start(tmp_path, server={"max_connections": 10, "max_connections_per_ip": 2})
    try:
        def go():
            socks = [socket.create_connection(server.address("smtp"), timeout=5) for _ in range(3)]
            greetings = [s.recv(200).decode() for s in socks]
            for s in socks:
                s.close()
            return greetings

        greetings = await in_thread(go)
        assert greetings[0].startswith("220 ") and greetings[1].startswith("220 ")
        assert greetings[2].startswith("421 4.7.0")
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_rate_limit_per_ip(tmp_path):
    from tests.smtp.conftest import populate, start

    server = start(tmp_path, smtp={"rate_per_ip": 2})
    try:
        await populate(server)

        def script(smtp):
            smtp.ehlo("x.test")
            replies = []
            for _ in range(3):
                replies.append(smtp.mail("s@remote.test"))
                smtp.rset()
            return replies

        replies = await run(server, script)
        assert [r[0] for r in replies] == [250, 250, 450]
        assert replies[2][1][:5] == b"4.7.1"
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_loop_detection_by_received_count(server):
    hops = b"".join(b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" for _ in range(50))

    def script(smtp):
        smtp.ehlo("x.test")
        smtp.mail("s@remote.test")
        smtp.rcpt("alice@example.test")
        return smtp.data(hops + MESSAGE)

    code, text = await run(server, script)
    assert (code, text[:5]) == (554, b"5.4.6")


@pytest_twisted.ensureDeferred
async def test_pipelined_transaction(server):
    lines = await raw_session(server, [
        (b"EHLO x.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<no@example.test>\r\n"
         b"DATA\r\n"),
        b"Subject: pipelined\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n",
    ])
    codes = [line[:3] for line in lines if line[:3].isdigit() and line[3:4] == " "]
    assert codes == ["220", "250", "250", "250", "550", "354", "250", "221"]
    [stored] = inbox(server, "alice@example.test")
    assert stored.endswith(b"\r\n.leading dot\r\n")  # dot-unstuffed (RFC 5321 §4.5.2)


@pytest_twisted.ensureDeferred
async def test_bdat_chunks(server):
    body = b"Subject: chunked\r\n\r\nline one\r\n.not stuffed\r\n"
    lines = await raw_session(server, [
        b"EHLO x.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\n",
        b"BDAT 20\r\n" + body[:20],
        b"BDAT %d LAST\r\n" % (len(body) - 20) + body[20:],
        b"BDAT 5 LAST\r\nhello",  # no transaction any more: 503, the octets are skipped
        b"DATA\r\n",
        b"QUIT\r\n",
    ])
    finals = [line for line in lines if line[:3].isdigit() and line[3:4] == " "]
    assert finals[4] == "250 2.0.0 20 octets received"
    assert finals[5].startswith("250 2.0.0 Ok: queued as ")
    assert finals[6].startswith("503 5.5.1")
    assert finals[7].startswith("503 5.5.1")
    [stored] = inbox(server, "alice@example.test")
    assert stored.endswith(body)


@pytest_twisted.ensureDeferred
async def test_smtputf8(server):
    await server.directory.add_address("alice@example.test", "jöran@example.test")

    def script(smtp):
        smtp.ehlo("x.test")
        smtp.command_encoding = "utf-8"
        without = smtp.docmd("MAIL", "FROM:<sénder@remote.test>")
        smtp.rset()  # resets smtplib's command encoding to ASCII
        smtp.command_encoding = "utf-8"
        smtp.docmd("MAIL", "FROM:<sénder@remote.test> SMTPUTF8")
        rcpt = smtp.docmd("RCPT", "TO:<jöran@example.test>")
        data = smtp.data("Subject: ünïcode\r\n\r\nhej\r\n".encode())
        return without, rcpt, data

    without, rcpt, data = await run(server, script)
    assert (without[0], without[1][:5]) == (553, b"5.6.7")
    assert rcpt[0] == 250 and data[0] == 250
    [stored] = inbox(server, "alice@example.test")
    assert "Return-Path: <sénder@remote.test>".encode() in stored
    assert b"with UTF8SMTP id" in stored


@pytest_twisted.ensureDeferred
async def test_dsn_parameters_accepted_and_checked(server):
    def script(smtp):
        smtp.ehlo("x.test")
        return [
            smtp.docmd("MAIL", "FROM:<s@remote.test> RET=HDRS ENVID=abc+2Bdef"),
            smtp.docmd("RCPT", "TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+40example.test"),
            smtp.docmd("RCPT", "TO:<carol@example.test> NOTIFY=BOGUS"),
            smtp.docmd("RCPT", "TO:<carol@example.test> ORCPT=nosemicolon"),
        ]

    replies = await run(server, script)
    assert [r[0] for r in replies] == [250, 250, 501, 501]


@pytest_twisted.ensureDeferred
async def test_success_dsn_for_local_delivery(server):
    def script(smtp):
        smtp.ehlo("x.test")
        smtp.mail("carol@example.test", ["ENVID=track-1", "RET=HDRS"])
        smtp.rcpt("alice@example.test", ["NOTIFY=SUCCESS", "ORCPT=rfc822;Alice+2Bold@example.test"])
        return smtp.data(MESSAGE)

    assert (await run(server, script))[0] == 250
    # The report is queued and delivered locally to the sender.
    for _ in range(100):
        reports = inbox(server, "carol@example.test")
        if reports:
            break
        await _sleep(0.05)
    [report] = reports
    assert b"Return-Path: <>" in report
    assert b"report-type=delivery-status" in report
    assert b"Action: delivered" in report and b"Original-Envelope-Id: track-1" in report
    # RFC 3461 §4.2: ORCPT comes back as Original-Recipient; §4.3: RET=HDRS returns the header only.
    assert b"Original-Recipient: rfc822;Alice+old@example.test" in report
    assert b"Content-Type: text/rfc822-headers" in report and b"Hello there." not in report


async def _sleep(seconds):
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


# -- submission -----------------------------------------------------------------------------------------
def submit(server, login, password, mail_from, rcpts, message, listener="submission"):
    def script(smtp):
        smtp.ehlo("laptop.test")
        smtp.login(login, password)
        smtp.mail(mail_from)
        for rcpt in rcpts:
            smtp.rcpt(rcpt)
        return smtp.data(message)

    return run(server, script, listener)


@pytest_twisted.ensureDeferred
async def test_submission_requires_auth(server):
    def script(smtp):
        smtp.ehlo("laptop.test")
        return smtp.docmd("MAIL", "FROM:<alice@example.test>")

    code, text = await run(server, script, "submission")
    assert (code, text[:5]) == (530, b"5.7.0")


@pytest_twisted.ensureDeferred
async def test_submission_bad_password_535(server):
    def script(smtp):
        smtp.ehlo("laptop.test")
        return smtp.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice@example.test\0wrong").decode())

    code, text = await run(server, script, "submission")
    assert (code, text[:5]) == (535, b"5.7.8")


@pytest_twisted.ensureDeferred
async def test_auth_needs_tls_on_mx_listener(server):
    def script(smtp):
        smtp.ehlo("laptop.test")
        return smtp.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice@example.test\0alice-password").decode())

    code, text = await run(server, script, "smtp")
    assert (code, text[:6]) == (538, b"5.7.11")


@pytest_twisted.ensureDeferred
async def test_submission_sender_must_be_own_address(server):
    def script(smtp):
        smtp.ehlo("laptop.test")
        smtp.login("alice@example.test", "alice-password")
        return [smtp.docmd("MAIL", "FROM:<carol@example.test>"), smtp.docmd("MAIL", "FROM:<info@example.test>")]

    replies = await run(server, script, "submission")
    assert (replies[0][0], replies[0][1][:5]) == (553, b"5.7.1")
    assert replies[1][0] == 250  # an alias that reaches only alice


@pytest_twisted.ensureDeferred
async def test_submission_from_header_checked(server):
    forged = b"From: carol@example.test\r\nTo: bob@example.test\r\nSubject: x\r\n\r\nhi\r\n"
    code, text = await submit(server, "alice@example.test", "alice-password", "alice@example.test",
                              ["carol@example.test"], forged)
    assert (code, text[:5]) == (553, b"5.7.1")
    assert inbox(server, "carol@example.test") == []


@pytest_twisted.ensureDeferred
async def test_submission_adds_date_and_message_id_and_queues_remote(server):
    bare = b"From: Alice <alice@example.test>\r\nTo: carol@example.test, x@elsewhere.test\r\nSubject: x\r\n\r\nhi\r\n"
    code, _ = await submit(server, "alice@example.test", "alice-password", "alice@example.test",
                           ["carol@example.test", "x@elsewhere.test"], bare)
    assert code == 250
    [stored] = inbox(server, "carol@example.test")
    assert b"\r\nDate: " in stored and b"\r\nMessage-ID: <" in stored
    assert b"with ESMTPA id" in stored and b"(authenticated as alice@example.test)" in stored
    [entry] = server.outbound_queue.entries()
    assert [r.address for r in entry.recipients] == ["x@elsewhere.test"]
    queued = server.blobs.get(entry.blob_id)
    assert b"\r\nMessage-ID: <" in queued and b"Return-Path" not in queued


@pytest_twisted.ensureDeferred
async def test_submission_auth_login_mechanism(server):
    def script(smtp):
        smtp.ehlo("laptop.test")
        first = smtp.docmd("AUTH", "LOGIN")
        second = smtp.docmd(base64.b64encode(b"alice@example.test").decode())
        third = smtp.docmd(base64.b64encode(b"alice-password").decode())
        return first, second, third

    first, second, third = await run(server, script, "submission")
    assert (first[0], second[0], third[0]) == (334, 334, 235)


@pytest_twisted.ensureDeferred
async def test_implicit_tls_submission(tmp_path):
    from tests.smtp.conftest import populate, start

    server = start(tmp_path, listeners=("submissions",), tls={"self_signed": True})
    try:
        await populate(server)

        def go():
            import smtplib

            smtp = smtplib.SMTP_SSL(*server.address("submissions"), context=insecure_tls(), timeout=10)
            smtp.ehlo("laptop.test")
            features = dict(smtp.esmtp_features)
            smtp.login("alice@example.test", "alice-password")
            refused = smtp.sendmail("alice@example.test", ["carol@example.test"],
                                    b"From: alice@example.test\r\nSubject: tls\r\n\r\nhi\r\n")
            smtp.quit()
            return features, refused

        features, refused = await in_thread(go)
        assert "starttls" not in features and features["auth"].strip() == "PLAIN LOGIN"
        assert refused == {}
        assert len(inbox(server, "carol@example.test")) == 1
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_quota_full_permanent_by_config(tmp_path):
    from tests.smtp.conftest import populate, start

    server = start(tmp_path, smtp={"quota_full_permanent": True})
    try:
        await populate(server)

        def script(smtp):
            smtp.ehlo("x.test")
            smtp.mail("s@remote.test", ["SIZE=5000"])
            return smtp.rcpt("bob@example.test")

        code, text = await run(server, script)
        assert (code, text[:5]) == (552, b"5.2.2")
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_partial_failure_gives_250_and_a_dsn(server):
    big = MESSAGE + b"x" * 3000 + b"\r\n"

    def script(smtp):
        smtp.ehlo("x.test")
        smtp.mail("carol@example.test")
        smtp.rcpt("alice@example.test")
        smtp.rcpt("bob@example.test")  # bob's quota (2000 bytes) cannot take it
        return smtp.data(big)

    assert (await run(server, script))[0] == 250
    assert len(inbox(server, "alice@example.test")) == 1
    assert inbox(server, "bob@example.test") == []
    for _ in range(100):
        reports = inbox(server, "carol@example.test")
        if reports:
            break
        await _sleep(0.05)
    [report] = reports
    assert b"Final-Recipient: rfc822; bob@example.test" in report
    assert b"Action: failed" in report and b"Status: 4.2.2" in report


@pytest_twisted.ensureDeferred
async def test_rate_limit_per_sender(tmp_path):
    from tests.smtp.conftest import populate, start

    server = start(tmp_path, smtp={"rate_per_sender": 1})
    try:
        await populate(server)

        def script(smtp):
            smtp.ehlo("laptop.test")
            smtp.login("alice@example.test", "alice-password")
            first = smtp.mail("alice@example.test")
            smtp.rset()
            return first, smtp.mail("alice@example.test")

        first, second = await run(server, script, "submission")
        assert first[0] == 250 and (second[0], second[1][:5]) == (450, b"4.7.1")
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_starttls_discards_pipelined_plaintext(server):
    """RFC 3207 §4.2 / CVE-2011-0411: commands sent with STARTTLS must not run after the upgrade."""

    def go():
        import ssl

        sock = socket.create_connection(server.address("smtp"), timeout=5)
        sock.recv(1024)
        sock.sendall(b"EHLO x.test\r\n")
        time.sleep(0.2)
        sock.recv(4096)
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\n")
        reply = b""
        while b"\r\n" not in reply:
            reply += sock.recv(1024)
        tls = insecure_tls().wrap_socket(sock, server_hostname="mail.example.test")
        tls.sendall(b"EHLO x.test\r\n")
        time.sleep(0.2)
        ehlo = tls.recv(4096)
        tls.sendall(b"RCPT TO:<alice@example.test>\r\n")
        rcpt = tls.recv(4096)
        tls.close()
        assert isinstance(tls, ssl.SSLSocket)
        return reply, ehlo, rcpt

    reply, ehlo, rcpt = await in_thread(go)
    assert reply.startswith(b"220 2.0.0")
    assert ehlo.startswith(b"250-mail.example.test")
    assert rcpt.startswith(b"503 5.5.1")  # the injected MAIL never ran


@pytest_twisted.ensureDeferred
async def test_auth_cancel_and_bad_base64(server):
    def script(smtp):
        smtp.ehlo("laptop.test")
        smtp.docmd("AUTH", "PLAIN")
        cancelled = smtp.docmd("*")
        garbage = smtp.docmd("AUTH", "PLAIN !!!notbase64")
        unknown = smtp.docmd("AUTH", "CRAM-MD5")
        return cancelled, garbage, unknown

    cancelled, garbage, unknown = await run(server, script, "submission")
    assert (cancelled[0], garbage[0], unknown[0]) == (501, 501, 504)
