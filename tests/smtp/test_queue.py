"""The outbound queue end to end: our queue delivering to another mailserve over real sockets,
with MX records from an authoritative DNS fixture; restart, retry, DSNs, smarthost."""

from __future__ import annotations

import socket
import time

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.e2e.harness import add_user, make_config
from tests.smtp.conftest import client, in_thread, inbox, populate, start

OUTBOUND = (b"From: Alice <alice@example.test>\r\nTo: dest@elsewhere.test\r\nSubject: outbound\r\n"
            b"Message-ID: <out-1@example.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHi far side.\r\n")


async def sleep(seconds):
    await deferLater(reactor, seconds, lambda: None)


async def eventually(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await sleep(0.05)
    raise AssertionError("condition not reached in time")


def submit(server, rcpts, message=OUTBOUND, mail_from="alice@example.test", options=(), rcpt_options=()):
    def go():
        smtp = client(server, "submission")
        try:
            smtp.ehlo("laptop.test")
            smtp.login("alice@example.test", "alice-password")
            smtp.mail(mail_from, list(options))
            for rcpt in rcpts:
                code, text = smtp.rcpt(rcpt, list(rcpt_options))
                assert code == 250, text
            return smtp.data(message)
        finally:
            smtp.quit()

    return in_thread(go)


def far_side(tmp_path, port=0):
    """Another mailserve, MX for elsewhere.test, listening on ``port``."""
    config = make_config(tmp_path / "far", ("smtp",))
    if port:
        from dataclasses import replace

        from mailserve.config import BindAddress

        listener = config.listeners[0]
        listener = replace(listener, bind=(BindAddress("127.0.0.1", port),))
        config = replace(config, server=replace(config.server, listeners=(listener,)))
    return start(tmp_path / "far", config=config)


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def dsns(server, address):
    return [m for m in inbox(server, address) if b"report-type=delivery-status" in m]


@pytest_twisted.ensureDeferred
async def test_delivers_to_the_mx_host(tmp_path, dns_server):
    far = far_side(tmp_path)
    await add_user(far, "dest@elsewhere.test", "pw-dest-1")
    dns_server.add("elsewhere.test", "MX", (10, "mx.elsewhere.test"))
    dns_server.add("mx.elsewhere.test", "A", "127.0.0.1")
    here = start(tmp_path, dns=dns_server, queue_port=far.port("smtp"))
    try:
        await populate(here)
        assert (await submit(here, ["dest@elsewhere.test"]))[0] == 250
        [received] = await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        assert b"Received: from mail.example.test ([127.0.0.1])" in received
        assert b"with ESMTPS id" in received  # opportunistic STARTTLS was used
        assert b"with ESMTPA id" in received  # the submission hop's trace field travelled along
        assert received.endswith(OUTBOUND)
        await eventually(lambda: here.outbound_queue.entries() == [])
    finally:
        await here.stopService()
        await far.stopService()


@pytest_twisted.ensureDeferred
async def test_permanent_failure_gives_exactly_one_dsn(tmp_path, dns_server):
    far = far_side(tmp_path)
    await add_user(far, "dest@elsewhere.test", "pw-dest-1")
    dns_server.add("elsewhere.test", "MX", (10, "mx.elsewhere.test"))
    dns_server.add("mx.elsewhere.test", "A", "127.0.0.1")
    here = start(tmp_path, dns=dns_server, queue_port=far.port("smtp"))
    try:
        await populate(here)
        code, _ = await submit(here, ["nobody@elsewhere.test", "dest@elsewhere.test"],
                               options=["ENVID=env-42", "RET=HDRS"])
        assert code == 250
        [report] = await eventually(lambda: dsns(here, "alice@example.test"))
        await eventually(lambda: here.outbound_queue.entries() == [])
        assert len(inbox(far, "dest@elsewhere.test")) == 1
        assert b"Final-Recipient: rfc822; nobody@elsewhere.test" in report
        assert b"Action: failed" in report and b"Status: 5.1.1" in report
        assert b"Diagnostic-Code: smtp; 550 5.1.1" in report
        assert b"Remote-MTA: dns; mx.elsewhere.test" in report
        assert b"Original-Envelope-Id: env-42" in report
        assert b"Content-Type: text/rfc822-headers" in report and b"Hi far side." not in report
        assert b"dest@elsewhere.test" not in report.split(b"message/delivery-status")[1].split(b"text/rfc822")[0]
        await sleep(0.5)
        here.outbound_queue.wake()
        await sleep(0.5)
        assert len(dsns(here, "alice@example.test")) == 1
        # mailserve_deliveries_total: one recipient bounced; the other and the DSN were delivered.
        delivered = here.metrics.deliveries.labels(result="delivered")._value.get()
        assert here.metrics.deliveries.labels(result="bounced")._value.get() == 1
        assert delivered == 2
    finally:
        await here.stopService()
        await far.stopService()


@pytest_twisted.ensureDeferred
async def test_destination_down_then_up_delivers_after_restart(tmp_path, dns_server):
    port = free_port()
    dns_server.add("elsewhere.test", "MX", (10, "mx.elsewhere.test"))
    dns_server.add("mx.elsewhere.test", "A", "127.0.0.1")
    settings = {"retry_initial": "1s", "retry_max": "2s"}
    here = start(tmp_path, dns=dns_server, queue_port=port, smtp=settings)
    await populate(here)
    assert (await submit(here, ["dest@elsewhere.test"]))[0] == 250
    assert (await submit(here, ["dest@elsewhere.test"]))[0] == 250
    entries = await eventually(lambda: [e for e in here.outbound_queue.entries() if e.attempts >= 1])
    entry = entries[0]
    assert entry.recipients[0].status == "pending"
    assert "4.4.1" in entry.last_error
    await eventually(lambda: len([e for e in here.outbound_queue.entries() if e.attempts >= 1]) == 2)
    await here.stopService()
    await sleep(2.1)  # both entries are due when the server comes back

    far = far_side(tmp_path, port)
    await add_user(far, "dest@elsewhere.test", "pw-dest-1")
    connections = []
    factory = next(s.factory for s in far if getattr(s, "listener", None) is not None)
    build = factory.buildProtocol
    factory.buildProtocol = lambda addr: (connections.append(addr), build(addr))[1]
    here = start(tmp_path, dns=dns_server, queue_port=port, smtp=settings)
    try:
        received = await eventually(lambda: (m := inbox(far, "dest@elsewhere.test")) and len(m) == 2 and m)
        assert all(m.endswith(OUTBOUND) for m in received)
        assert len(connections) == 1  # both messages over one connection to the destination
        await eventually(lambda: here.outbound_queue.entries() == [])
        assert dsns(here, "alice@example.test") == []
    finally:
        await here.stopService()
        await far.stopService()


@pytest_twisted.ensureDeferred
async def test_null_mx_fails_at_once(tmp_path, dns_server):
    dns_server.add("elsewhere.test", "MX", (0, "."))
    here = start(tmp_path, dns=dns_server, queue_port=free_port())
    try:
        await populate(here)
        await submit(here, ["dest@elsewhere.test"])
        [report] = await eventually(lambda: dsns(here, "alice@example.test"))
        assert b"Status: 5.1.10" in report and b"null MX" in report
    finally:
        await here.stopService()


@pytest_twisted.ensureDeferred
async def test_without_mx_the_address_record_is_used(tmp_path, dns_server):
    far = far_side(tmp_path)
    await add_user(far, "dest@elsewhere.test", "pw-dest-1")
    dns_server.add("elsewhere.test", "A", "127.0.0.1")
    here = start(tmp_path, dns=dns_server, queue_port=far.port("smtp"))
    try:
        await populate(here)
        await submit(here, ["dest@elsewhere.test"])
        await eventually(lambda: inbox(far, "dest@elsewhere.test"))
    finally:
        await here.stopService()
        await far.stopService()


@pytest_twisted.ensureDeferred
async def test_delay_notice_then_expiry(tmp_path, dns_server):
    dns_server.add("elsewhere.test", "MX", (10, "mx.elsewhere.test"))
    dns_server.add("mx.elsewhere.test", "A", "127.0.0.1")
    here = start(tmp_path, dns=dns_server, queue_port=free_port(),
                 smtp={"retry_initial": "1s", "retry_max": "1s", "delay_notice_after": "1s", "queue_lifetime": "2m"})
    queue = here.outbound_queue
    try:
        await populate(here)
        await submit(here, ["dest@elsewhere.test"])
        [delayed] = await eventually(lambda: dsns(here, "alice@example.test"))
        assert b"Action: delayed" in delayed and b"Will-Retry-Until: " in delayed
        [entry] = [e for e in queue.entries() if e.mail_from]
        assert entry.delay_notified
        # Three minutes later the lifetime (2 minutes) is over: one failure report, no more retries.
        queue.clock = lambda: time.time() + 180
        queue.wake()
        reports = await eventually(lambda: (r := dsns(here, "alice@example.test")) and len(r) == 2 and r)
        assert b"Action: failed" in reports[1] and b"Status: 4.4.7" in reports[1]  # RFC 3463: time expired
        await eventually(lambda: queue.entries() == [])
    finally:
        await here.stopService()


@pytest_twisted.ensureDeferred
async def test_success_dsn_relayed_and_dsn_passed_on(tmp_path, dns_server):
    far = far_side(tmp_path)
    await add_user(far, "dest@elsewhere.test", "pw-dest-1")
    dns_server.add("elsewhere.test", "MX", (10, "mx.elsewhere.test"))
    dns_server.add("mx.elsewhere.test", "A", "127.0.0.1")
    here = start(tmp_path, dns=dns_server, queue_port=far.port("smtp"))
    try:
        await populate(here)
        await submit(here, ["dest@elsewhere.test"], rcpt_options=["NOTIFY=SUCCESS"])
        await eventually(lambda: inbox(far, "dest@elsewhere.test"))
        # The far side speaks DSN, so it reports delivery itself (RFC 3461 §5.2.2) -- to
        # alice@example.test, which it routes back through its own queue: no report from us.
        await eventually(lambda: here.outbound_queue.entries() == [])
        assert dsns(here, "alice@example.test") == []
        assert [r.address for e in far.outbound_queue.entries() for r in e.recipients] == ["alice@example.test"]
    finally:
        await here.stopService()
        await far.stopService()


@pytest_twisted.ensureDeferred
async def test_smarthost_with_starttls_and_auth(tmp_path, dns_server):
    far = far_side(tmp_path)
    await add_user(far, "relay@elsewhere.test", "relay-secret")
    here = start(tmp_path, dns=dns_server, smtp={
        "relay_host": "127.0.0.1", "relay_port": far.port("smtp"), "relay_tls": "starttls",
        "relay_username": "relay@elsewhere.test", "relay_password": "relay-secret"})
    try:
        await populate(here)
        await submit(here, ["someone@third.test"])
        # The smarthost accepted it for relaying (it needs AUTH for that): it is in its queue now.
        entries = await eventually(lambda: far.outbound_queue.entries())
        assert [r.address for r in entries[0].recipients] == ["someone@third.test"]
        queued = far.blobs.get(entries[0].blob_id)
        assert b"with ESMTPSA id" in queued and b"(authenticated as relay@elsewhere.test)" in queued
        await eventually(lambda: here.outbound_queue.entries() == [])
    finally:
        await here.stopService()
        await far.stopService()


@pytest_twisted.ensureDeferred
async def test_queue_survives_restart_with_status(tmp_path):
    here = start(tmp_path)
    await populate(here)
    queue_id = await here.outbound_queue.enqueue("alice@example.test", [("x@nowhere.test", ("FAILURE",), None)],
                                                 OUTBOUND)
    await here.stopService()
    here = start(tmp_path)
    try:
        entry = here.outbound_queue.get(queue_id)
        assert entry is not None and entry.recipients[0].notify == ("FAILURE",)
        assert here.blobs.get(entry.blob_id) == OUTBOUND
    finally:
        await here.stopService()


# -- queued mail for local recipients passes their Sieve script --------------------------------------------------
async def set_script(server, address, text):
    from mailserve.sieve.scripts import SieveScripts

    account = server.directory.get_account(address)
    scripts = SieveScripts(server.metadata)
    await scripts.put_script(account.id, "main", text, 100, 1 << 20)
    await scripts.set_active(account.id, "main")


def mailbox(server, address, name):
    """The raw bytes of every message in mailbox ``name`` of ``address``'s account (none if it is missing)."""
    from mailserve.core.errors import NoSuchMailbox

    account = server.directory.get_account(address)
    core = server.core
    try:
        box = core.find_mailbox(account.id, name)
    except NoSuchMailbox:
        return []
    messages = core.get_messages(account.id, [msgid for _, msgid in core.mailbox_uids(account.id, box.id)])
    return [core.blobs.get(m.blob_id) for m in messages]


AWAY = 'require "vacation";\nvacation :days 1 :subject "Away" "I am away this week.";\n'


@pytest_twisted.ensureDeferred
async def test_vacation_reply_to_a_local_user_is_filed_by_that_users_script(tmp_path):
    server = start(tmp_path)
    try:
        await populate(server)
        await set_script(server, "alice@example.test", AWAY)
        # bob files mail from alice into a folder, and is away too: his vacation must not answer
        # alice's auto-reply (RFC 5230 §4.5, RFC 3834 §2), or the two would reply to each other.
        await set_script(server, "bob@example.test",
                         'require ["fileinto", "mailbox", "vacation"];\n'
                         'if address :is "from" "alice@example.test" { fileinto :create "From Alice"; stop; }\n'
                         'vacation :days 1 "Bob is away.";\n')
        original = (b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: lunch?\r\n"
                    b"Message-ID: <lunch-1@example.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nLunch?\r\n")

        def go():
            smtp = client(server, "submission")
            try:
                smtp.ehlo("laptop.test")
                smtp.login("bob@example.test", "bob-password")
                return smtp.sendmail("bob@example.test", ["alice@example.test"], original)
            finally:
                smtp.quit()

        assert await in_thread(go) == {}
        [reply] = await eventually(lambda: mailbox(server, "bob@example.test", "From Alice"))
        assert b"Auto-Submitted: auto-replied" in reply and b"I am away this week." in reply
        assert b"Return-Path: <>" in reply and b"In-Reply-To: <lunch-1@example.test>" in reply
        assert inbox(server, "bob@example.test") == []  # filed, not kept in INBOX
        await eventually(lambda: not server.outbound_queue.entries())
        # bob's script ran (it filed the reply) yet sent nothing back: alice has only the original
        assert [m.count(b"Subject: lunch?") for m in inbox(server, "alice@example.test")] == [1]
    finally:
        await server.stopService()


@pytest_twisted.ensureDeferred
async def test_queued_auto_submitted_mail_gets_no_vacation_reply(tmp_path):
    server = start(tmp_path)
    try:
        await populate(server)
        await set_script(server, "alice@example.test", AWAY)
        notice = (b"From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
                  b"Message-ID: <{subject}@example.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n{extra}"
                  b"\r\nText.\r\n")
        auto = notice.replace(b"{subject}", b"auto").replace(b"{extra}", b"Auto-Submitted: auto-generated\r\n")
        await server.outbound_queue.enqueue("carol@example.test", [("alice@example.test", (), None)], auto)
        await eventually(lambda: len(inbox(server, "alice@example.test")) == 1)
        await eventually(lambda: not server.outbound_queue.entries())
        assert inbox(server, "carol@example.test") == []  # Auto-Submitted: the vacation action refused
        # the same mail from a person is answered, so the refusal above is the header's doing
        personal = notice.replace(b"{subject}", b"personal").replace(b"{extra}", b"")
        await server.outbound_queue.enqueue("carol@example.test", [("alice@example.test", (), None)], personal)
        [reply] = await eventually(lambda: inbox(server, "carol@example.test"))
        assert b"Subject: Away" in reply and b"Auto-Submitted: auto-replied" in reply
    finally:
        await server.stopService()
