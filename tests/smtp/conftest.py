"""A real mail server with the SMTP listeners and the outbound queue, on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import smtplib
import ssl

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread

from tests import dnsfixture
from tests.e2e.harness import TestServer, add_user, make_config

dns_server = dnsfixture.dns_server


class SMTPTestServer(TestServer):
    """The server as ``service.py`` assembles it, with DNS from the test's fixture and the
    queue delivering to the port the far side of a test listens on."""

    dns: dnsfixture.DNSFixtureServer | None = None
    queue_port = 25

    @property
    def resolver(self):
        from mailserve.dns import Resolver

        def build():
            if self.dns is not None:
                return self.dns.resolver(timeout=2.0)
            return Resolver(servers=[("127.0.0.1", 9)], timeout=0.5, reactor=self.reactor)

        return self._part("resolver", build)

    @property
    def outbound_queue(self):
        from mailserve.smtp.queue import OutboundQueue

        return self._part("outbound_queue", lambda: OutboundQueue.from_server(self, port=self.queue_port, timeout=10))


def start(tmp_path, listeners=("smtp", "submission"), dns=None, queue_port=25, config=None, **sections):
    # Failed AUTH is answered at once unless a test asks for the delay (tests/smtp/test_auth.py).
    sections["auth"] = {"failure_delay": "0s", **sections.get("auth", {})}
    config = config or make_config(tmp_path, listeners, **sections)
    server = SMTPTestServer(config)
    server.dns = dns
    server.queue_port = queue_port
    server.startService()
    return server


@defer.inlineCallbacks
def populate(server):
    """example.test with alice, bob (quota 2000 bytes), a group, an alias, and a forward."""
    yield add_user(server, "alice@example.test", "alice-password")
    yield add_user(server, "bob@example.test", "bob-password", quota_bytes=2000)
    yield add_user(server, "carol@example.test", "carol-password")
    yield server.directory.add_group("team", "team@example.test", ["alice@example.test", "carol@example.test"])
    yield server.directory.add_alias("info@example.test", ["alice@example.test"])


@pytest.fixture
def server(tmp_path):
    server = start(tmp_path)
    pytest_twisted.blockon(populate(server))
    yield server
    pytest_twisted.blockon(server.stopService())


def in_thread(fn, *args, **kwargs):
    """Run a blocking client (smtplib) off the reactor thread so the server keeps serving."""
    return deferToThread(fn, *args, **kwargs)


def client(server, listener="smtp", timeout=10) -> smtplib.SMTP:
    host, port = server.address(listener)
    return smtplib.SMTP(host, port, timeout=timeout)


def insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def inbox(server, address):
    """The raw bytes of every message in the INBOX of ``address``'s account, oldest first."""
    account = server.directory.get_account(address)
    core = server.core
    mailbox = core.find_mailbox(account.id, "INBOX")
    messages = core.get_messages(account.id, [msgid for _, msgid in core.mailbox_uids(account.id, mailbox.id)])
    return [core.blobs.get(m.blob_id) for m in messages]


MESSAGE = (b"From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\nSubject: hello\r\n"
           b"Message-ID: <1@remote.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nHello there.\r\n")
