"""A real Postfix as the far side: our queue delivers into it, and it relays into us."""

from __future__ import annotations

import smtplib
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.smtp.conftest import client, in_thread, inbox, populate, start
from tests.smtp.postfix import PrivatePostfix, available
from tests.smtp.test_queue import free_port


@pytest.fixture(autouse=True)
def postfix_installed():
    assert available(), "these tests need Debian's postfix and root: run scripts/install-test-peers"


async def eventually(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await in_thread(predicate)
        if value:
            return value
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError("condition not reached in time")


@pytest_twisted.ensureDeferred
async def test_our_queue_delivers_into_postfix(tmp_path, dns_server):
    # Postfix without 8BITMIME in its EHLO reply, as an older MTA: we must convert to 7 bits.
    postfix = await in_thread(lambda: PrivatePostfix(
        free_port(), settings={"smtpd_discard_ehlo_keywords": "8bitmime, smtputf8"}).start())
    dns_server.add("pf.test", "MX", (10, "mx.pf.test"))
    dns_server.add("mx.pf.test", "A", "127.0.0.1")
    here = start(tmp_path, dns=dns_server, queue_port=postfix.port)
    try:
        await populate(here)

        def submit():
            smtp = client(here, "submission")
            smtp.ehlo("laptop.test")
            smtp.login("alice@example.test", "alice-password")
            refused = smtp.sendmail("alice@example.test", ["user@pf.test"],
                                    "From: alice@example.test\r\nTo: user@pf.test\r\nSubject: to postfix\r\n"
                                    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                    "Content-Transfer-Encoding: 8bit\r\n\r\nHello Postfix, schöne Grüße.\r\n".encode(),
                                    mail_options=["BODY=8BITMIME"])
            smtp.quit()
            return refused

        assert await in_thread(submit) == {}
        [delivered] = await eventually(postfix.mailbox)
        assert b"Subject: to postfix" in delivered
        assert b"by mail.example.test (mailserve) with ESMTPA id" in delivered
        assert b"Return-Path: <alice@example.test>" in delivered  # added by Postfix's virtual(8)
        assert "status=sent (delivered to maildir)" in postfix.log()
        # RFC 6152 §3: converted to quoted-printable on the way, nothing 8-bit crossed.
        assert delivered.isascii()
        assert b"Content-Transfer-Encoding: quoted-printable" in delivered
        assert delivered.replace(b"\n", b"\r\n").endswith(b"\r\n\r\nHello Postfix, sch=C3=B6ne Gr=C3=BC=C3=9Fe.\r\n")
        await eventually(lambda: here.outbound_queue.entries() == [])
    finally:
        await here.stopService()
        await in_thread(postfix.stop)


@pytest_twisted.ensureDeferred
async def test_postfix_relays_into_us(tmp_path):
    here = start(tmp_path)
    await populate(here)
    port = here.port("smtp")
    postfix = await in_thread(lambda: PrivatePostfix(free_port(), relayhost=f"[127.0.0.1]:{port}").start())
    try:
        def send():
            smtp = smtplib.SMTP("127.0.0.1", postfix.port, timeout=10)
            refused = smtp.sendmail("someone@remote.test", ["alice@example.test", "nobody@example.test"],
                                    b"From: someone@remote.test\r\nSubject: via postfix\r\n\r\nRelayed.\r\n")
            smtp.quit()
            return refused

        assert await in_thread(send) == {}  # Postfix accepts both; we refuse nobody@ to it
        [stored] = await eventually(lambda: inbox(here, "alice@example.test"))
        assert stored.startswith(b"Return-Path: <someone@remote.test>\r\nReceived: from postfix.test ([127.0.0.1])")
        assert b"Subject: via postfix" in stored
        # Postfix got our 550 5.1.1 for the unknown user and bounced it itself.
        await eventually(lambda: "said: 550 5.1.1 <nobody@example.test>" in postfix.log())
    finally:
        await in_thread(postfix.stop)
        await here.stopService()
